#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine (run as root).
# Idempotent: skips apt when every tool is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  openvswitch-switch openvswitch-common   # ovsdb-server, ovs-vswitchd, ovs-vsctl (test oracle)
  iproute2 ethtool iperf3 sudo            # namespaces, veth, tc -j oracle, traffic
  libvirt-daemon libvirt-daemon-system libvirt-clients qemu-system-x86  # real libvirtd + TCG guest
  libxml2-utils                           # xmllint: virt-xml-validate needs it
  libvirt-dev pkg-config                  # to build libvirt-python from PyPI
  rpm rpmlint cpio                        # rpmbuild, rpm -qlp, rpm2cpio
  python3-lxml                            # /usr/bin/python3 runs the unpacked RPM hooks (test_rpm)
  python3-venv python3-dev gcc            # .venv/ from /usr/bin/python3; libvirt-python builds against it
  systemd                                 # systemd-analyze verify on the resync unit
  man-db groff-base                       # man --warnings renders the generated man page
  prometheus tmux                         # a real Prometheus scrapes the metrics; top runs in a real terminal
  make
  strace                                  # SIGKILL injected between the steps of an atomic write (test_hostile_hookfile)
)
TOOLS=(gcc ovsdb-server ovs-vswitchd ovs-vsctl ip ethtool iperf3 sudo libvirtd virsh
       virt-xml-validate xmllint qemu-system-x86_64 pkg-config rpmbuild rpmlint cpio make
       systemd-analyze man groff strace prometheus promtool tmux)

missing=()
for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ ! -e /usr/include/libvirt/libvirt.h ]; then missing+=(libvirt-dev); fi
if ! /usr/bin/python3 -c 'import lxml.etree' >/dev/null 2>&1; then missing+=(python3-lxml); fi
if ! /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ ! -e "$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)/Python.h" ]; then
  missing+=(python3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: missing ${missing[*]}; installing Debian packages" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to apt-get install ${APT_PACKAGES[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

# The Python side goes into the checkout's virtual environment (never into the
# system interpreter: PEP 668).
bash tools/mkvenv.sh "${PYTHON:-/usr/bin/python3}" "${VENV:-.venv}" ovs,libvirt,test
