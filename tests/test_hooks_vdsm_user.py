"""The production privilege path, for real: a VDSM hook running as user
``vdsm`` (uid 36) reaches OVSDB only through ``sudo -n`` and the sudoers
drop-in this project ships.

Nothing on the host changes: the hook runs in a private mount namespace
where ``/etc`` and ``/usr/libexec`` are overlays adding exactly what the
packages install -- a ``vdsm`` user, ``/etc/sudoers.d/50_vdsm_hook_qos_hooks``,
``/etc/qos-hooks/qos-hooks.conf`` (naming the test switch) and
``/usr/libexec/qos-hooks/qos-hooks-helper`` (its shebang set to this
interpreter, as rpmbuild sets it to the system python).  The hook itself
gets no test knobs: helper path, sudo and config are the defaults.
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests.ovs_sandbox import ovs_sandbox, require  # noqa: F401
from tests.test_hooks_vdsm import (GOLD, MAC0, UUID, assert_ovs_has, domain_xml, iface_xml,
                                   _ovs_rows)
from tests.vdsm_runner import run_hook_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VDSM_UID = VDSM_GID = 36   # oVirt's vdsm user
SUDOERS = os.path.join(REPO, "sudoers", "50_vdsm_hook_qos_hooks")
HELPER_SRC = os.path.join(REPO, "libexec", "qos-hooks-helper")


def _requirements():
    if os.geteuid() != 0:
        return "needs root (mount namespaces, overlays, setpriv)"
    probe = subprocess.run(["setpriv", "--reuid=%d" % VDSM_UID, "--regid=%d" % VDSM_GID,
                            "--clear-groups", "env", "PYTHONPATH=" + REPO, "/usr/bin/python3",
                            "-c", "import lxml.etree, qos_hooks.hooks"], cwd="/",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode != 0:
        return ("needs /usr/bin/python3 with lxml usable by an unprivileged user "
                "(Debian: python3-lxml): %s" % probe.stdout.decode(errors="replace")[-200:])
    if os.geteuid() != 0:
        return "needs root (mount namespaces, overlays, setpriv)"
    for tool in ("sudo", "setpriv", "unshare", "mount"):
        if shutil.which(tool) is None:
            return "needs %s (tests/install-deps.sh installs sudo; util-linux)" % tool
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            return "needs overlayfs to add the vdsm user and sudoers drop-in privately"
    try:
        import pwd
        pwd.getpwuid(VDSM_UID)
        return "uid %d already exists on this host" % VDSM_UID
    except KeyError:
        return None


@pytest.fixture
def vdsm_root(tmp_path, ovs_sandbox):
    """Overlay upper directories for /etc and /usr/libexec, and the argv prefix
    that runs a hook as vdsm inside them (and in the switch's namespace)."""
    require(_requirements())
    base = tmp_path / "vdsm-root"
    etc_up, lib_up = base / "etc-up", base / "libexec-up"
    for d in (etc_up, lib_up, base / "etc-work", base / "libexec-work"):
        d.mkdir(parents=True)
    base.chmod(0o755)
    tmp_path.chmod(0o755)
    with open("/etc/passwd") as f:
        passwd = f.read()
    (etc_up / "passwd").write_text(passwd + "vdsm:x:%d:%d:qos-hooks test vdsm:/:/bin/sh\n"
                                   % (VDSM_UID, VDSM_GID))
    # sudo's PAM account check needs a shadow entry ('*': no password login)
    shutil.copy2("/etc/shadow", etc_up / "shadow")
    with open(etc_up / "shadow", "a") as f:
        f.write("vdsm:*:19000:0:99999:7:::\n")
    with open("/etc/group") as f:
        group = f.read()
    (etc_up / "group").write_text(group + "vdsm:x:%d:\n" % VDSM_GID)
    sudoers_d = etc_up / "sudoers.d"
    sudoers_d.mkdir()
    shutil.copy(SUDOERS, sudoers_d / "50_vdsm_hook_qos_hooks")
    os.chmod(sudoers_d / "50_vdsm_hook_qos_hooks", 0o440)
    conf_d = etc_up / "qos-hooks"
    conf_d.mkdir()
    (conf_d / "qos-hooks.conf").write_text(
        "[settings]\ndefault_profile = gold\novsdb = %s\novsdb_timeout = 3\n\n"
        "[profile gold]\ninbound.average = 1000\ninbound.peak = 2000\ninbound.burst = 256\n"
        "outbound.average = 500\noutbound.burst = 128\n" % ovs_sandbox.remote)
    os.chmod(conf_d / "qos-hooks.conf", 0o644)
    helper_dir = lib_up / "qos-hooks"
    helper_dir.mkdir()
    with open(HELPER_SRC) as f:
        body = f.read().split("\n", 1)[1]
    (helper_dir / "qos-hooks-helper").write_text("#!%s\n%s" % (sys.executable, body))
    os.chmod(helper_dir / "qos-hooks-helper", 0o755)
    script = ("mount -t overlay qh4-etc -o lowerdir=/etc,upperdir={e},workdir={ew} /etc && "
              "mount -t overlay qh4-libexec -o lowerdir=/usr/libexec,upperdir={l},"
              "workdir={lw} /usr/libexec && "
              'exec setpriv --reuid={u} --regid={g} --clear-groups "$@"').format(
        e=etc_up, ew=base / "etc-work", l=lib_up, lw=base / "libexec-work",
        u=VDSM_UID, g=VDSM_GID)
    prefix = ["ip", "netns", "exec", ovs_sandbox.netns,
              "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    return prefix


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOS_HOOKS_")}
    env["HOME"] = "/"
    # the hook runs the system python3 (a python under root's home is not
    # readable by vdsm); the package comes from this checkout through
    # PYTHONPATH, which VDSM itself also sets for its hooks
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PYTHONPATH"] = REPO
    return env


def test_vdsm_hook_as_vdsm_through_sudo_and_the_drop_in(ovs_sandbox, vdsm_root):
    sb = ovs_sandbox
    sb.add_port("vnet0", mac=MAC0, external_ids={"attached-mac": MAC0, "vm-id": UUID})
    live = domain_xml(iface_xml(
        MAC0, target="vnet0", bandwidth="<inbound average='1000' peak='2000' burst='256'/>"
                                        "<outbound average='500' burst='128'/>"))
    who = subprocess.run(vdsm_root + ["/usr/bin/id", "-u"], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True)
    assert who.stdout.strip() == str(VDSM_UID)
    res = run_hook_dir(os.path.join(REPO, "hooks", "after_vm_start"), live,
                       hook_point="after_vm_start", vm_id=UUID, base_env=_env(),
                       argv_prefix=vdsm_root, owner=(VDSM_UID, VDSM_GID))
    assert res.rcs == (0,), res.stderr
    assert "ERROR" not in res.stderr, res.stderr
    assert "by=vdsm" in res.stderr          # the helper ran for vdsm, through sudo
    assert_ovs_has(sb, "vnet0", GOLD)
    res = run_hook_dir(os.path.join(REPO, "hooks", "after_vm_destroy"), live,
                       hook_point="after_vm_destroy", vm_id=UUID, base_env=_env(),
                       argv_prefix=vdsm_root, owner=(VDSM_UID, VDSM_GID))
    assert res.rcs == (0,), res.stderr
    assert tuple(map(len, _ovs_rows(sb))) == (0, 0)


@pytest.mark.parametrize("argv", [
    ["/usr/libexec/qos-hooks/qos-hooks-helper", "--anything"],
    ["/bin/sh", "-c", "id"],
    ["/usr/bin/ovs-vsctl", "show"],
])
def test_the_drop_in_allows_nothing_else(vdsm_root, argv):
    p = subprocess.run(vdsm_root + ["sudo", "-n"] + argv, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       env=_env())
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert b"password is required" in p.stderr or b"not allowed" in p.stderr, p.stderr


def test_vdsm_cannot_run_the_helper_without_sudo(vdsm_root):
    p = subprocess.run(vdsm_root + ["/usr/libexec/qos-hooks/qos-hooks-helper"],
                       input=b"{}", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60, env=_env())
    assert p.returncode == 8 and b"must run as root" in p.stderr
