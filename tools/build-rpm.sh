#!/usr/bin/env bash
# Build the qos-hooks RPMs (and the SRPM) from a fresh sdist.
#
#   tools/build-rpm.sh [--outdir DIR] [--workdir DIR]
#
# defaults: --outdir dist, --workdir build/rpm.  Prints the paths of the built
# packages, one a line, on stdout; rpmbuild's chatter goes to stderr.
# On a machine without an RPM database of its own (Debian: Debian's `rpm`
# package provides rpmbuild) BuildRequires cannot be checked: --nodeps.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
outdir=dist
workdir=build/rpm
while [ $# -gt 0 ]; do
  case $1 in
    --outdir) outdir=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    *) echo "usage: $0 [--outdir DIR] [--workdir DIR]" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
for tool in rpmbuild "$PYTHON"; do
  command -v "$tool" >/dev/null || { echo "build-rpm: $tool not found (apt-get install rpm)" >&2; exit 1; }
done
mkdir -p "$outdir" "$workdir"
outdir=$(cd "$outdir" && pwd)
workdir=$(cd "$workdir" && pwd)
rm -rf "$workdir"/{SOURCES,BUILD,BUILDROOT,SPECS,egg}
mkdir -p "$workdir"/{SOURCES,egg}

version=$("$PYTHON" -c 'import qos_hooks; print(qos_hooks.__version__)')
# egg-info goes to the work dir, not the source tree (concurrent builds).
"$PYTHON" setup.py -q egg_info --egg-base "$workdir/egg" sdist -d "$workdir/SOURCES" >&2 2>/dev/null \
  || "$PYTHON" setup.py egg_info --egg-base "$workdir/egg" sdist -d "$workdir/SOURCES" >&2
sdists=("$workdir"/SOURCES/*.tar.gz)       # SOURCES was emptied above: exactly one
sdist=${sdists[0]}
sdist_name=$(basename "$sdist" .tar.gz)

nodeps=()
if ! rpm -q rpm >/dev/null 2>&1; then nodeps=(--nodeps); fi

# The SRPM must rebuild on its own (rpmbuild --rebuild): record the version and
# the sdist's name in the spec it carries instead of relying on --define.
mkdir -p "$workdir/SPECS"
sed -e "s|^%{!?qos_version: %global qos_version .*}\$|%global qos_version $version|" \
    -e "s|^%{!?sdist_name: %global sdist_name .*}\$|%global sdist_name $sdist_name|" \
    rpm/qos-hooks.spec > "$workdir/SPECS/qos-hooks.spec"
grep -q "^%global qos_version $version\$" "$workdir/SPECS/qos-hooks.spec" \
  && grep -q "^%global sdist_name $sdist_name\$" "$workdir/SPECS/qos-hooks.spec" \
  || { echo "build-rpm: could not set qos_version/sdist_name in the spec" >&2; exit 1; }

rpmbuild -ba "${nodeps[@]}" \
  --define "_topdir $workdir" \
  --define "_sourcedir $workdir/SOURCES" \
  --define "_rpmdir $outdir" \
  --define "_srcrpmdir $outdir" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  "$workdir/SPECS/qos-hooks.spec" >&2

# (no `| head`: with pipefail, rpm's SIGPIPE would fail the script)
rel=$(rpm -q --qf '%{RELEASE}\n' --specfile "$workdir/SPECS/qos-hooks.spec" 2>/dev/null | sed -n 1p)
ls -1 "$outdir"/*-"$version"-"$rel".*.rpm
