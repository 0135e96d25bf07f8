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

Nothing the vdsm user runs comes from the checkout, which may sit under a
directory only its owner can enter (issue 15): the hooks and the package are
copied to a directory everyone can read (tests/unpriv_layout.py), laid out as
an install has them, and the helper's interpreter has that copy in its
site-packages, as the RPM's python3-qos-hooks gives the system python.
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests.ovs_sandbox import require
from tests.hooks.test_hooks_vdsm import (GOLD, MAC0, UUID, assert_ovs_has, domain_xml, iface_xml,
                                   _ovs_rows)
from tests.vdsm_runner import run_hook_dir
from tests import unpriv_layout as ul

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VDSM_UID = VDSM_GID = 36   # oVirt's vdsm user
SUDOERS = os.path.join(REPO, "sudoers", "50_vdsm_hook_qos_hooks")
HELPER_SRC = os.path.join(REPO, "libexec", "qos-hooks-helper")


@pytest.fixture(scope="module")
def layout():
    """The readable copy of the hooks and the package (removed afterwards)."""
    if os.geteuid() != 0:
        yield None
        return
    base = ul.readable_copy()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _requirements(base):
    return _tool_requirements() or ul.unusable_reason(
        # the hooks run the system python3 (VDSM's interpreter), as vdsm
        VDSM_UID, VDSM_GID, ul.SYSTEM_PYTHON, os.path.join(base, "lib"),
        ["lxml.etree", "qos_hooks.hooks.vdsm_vm"])


def _tool_requirements():
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
def vdsm_root(tmp_path, ovs_sandbox, layout):
    """Overlay upper directories for /etc and /usr/libexec, and the argv prefix
    that runs a hook as vdsm inside them (and in the switch's namespace)."""
    reason = _requirements(layout)
    if reason:
        require(reason)
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
    # as rpmbuild does: the shebang names an interpreter that has the package
    (helper_dir / "qos-hooks-helper").write_text("#!%s\n%s" % (ul.helper_python(layout),
                                                               body))
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


def _env(base):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOS_HOOKS_")}
    env["HOME"] = "/"
    # the hook runs the system python3 (a python under root's home is not
    # readable by vdsm); the package comes from the readable copy through
    # PYTHONPATH, which VDSM itself also sets for its hooks
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PYTHONPATH"] = os.path.join(base, "lib")
    return env


def test_vdsm_hook_as_vdsm_through_sudo_and_the_drop_in(ovs_sandbox, vdsm_root, layout):
    sb = ovs_sandbox
    sb.add_port("vnet0", mac=MAC0, external_ids={"attached-mac": MAC0, "vm-id": UUID})
    live = domain_xml(iface_xml(
        MAC0, target="vnet0", bandwidth="<inbound average='1000' peak='2000' burst='256'/>"
                                        "<outbound average='500' burst='128'/>"))
    who = subprocess.run(vdsm_root + ["/usr/bin/id", "-u"], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True)
    assert who.stdout.strip() == str(VDSM_UID)
    res = run_hook_dir(os.path.join(layout, "hooks", "after_vm_start"), live,
                       hook_point="after_vm_start", vm_id=UUID, base_env=_env(layout),
                       argv_prefix=vdsm_root, owner=(VDSM_UID, VDSM_GID))
    assert res.rcs == (0,), res.stderr
    assert "ERROR" not in res.stderr, res.stderr
    assert "by=vdsm" in res.stderr          # the helper ran for vdsm, through sudo
    assert_ovs_has(sb, "vnet0", GOLD)
    res = run_hook_dir(os.path.join(layout, "hooks", "after_vm_destroy"), live,
                       hook_point="after_vm_destroy", vm_id=UUID, base_env=_env(layout),
                       argv_prefix=vdsm_root, owner=(VDSM_UID, VDSM_GID))
    assert res.rcs == (0,), res.stderr
    assert tuple(map(len, _ovs_rows(sb))) == (0, 0)


@pytest.mark.parametrize("argv", [
    ["/usr/libexec/qos-hooks/qos-hooks-helper", "--anything"],
    ["/bin/sh", "-c", "id"],
    ["/usr/bin/ovs-vsctl", "show"],
])
def test_the_drop_in_allows_nothing_else(vdsm_root, layout, argv):
    p = subprocess.run(vdsm_root + ["sudo", "-n"] + argv, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       env=_env(layout))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert b"password is required" in p.stderr or b"not allowed" in p.stderr, p.stderr


def test_vdsm_cannot_run_the_helper_without_sudo(vdsm_root, layout):
    p = subprocess.run(vdsm_root + ["/usr/libexec/qos-hooks/qos-hooks-helper"],
                       input=b"{}", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60, env=_env(layout))
    assert p.returncode == 8 and b"must run as root" in p.stderr


def test_privilege_drop_tests_pass_from_a_0700_checkout(tmp_path):
    """Issue 15: a git clone of this checkout inside a directory only its owner
    can enter (as /root, or what ``mktemp -d`` makes) passes the tests that run
    code as another user: this module and the helper's non-root refusal.  Run
    with CI=true so that a skip would count as a failure."""
    if os.environ.get("QOS_HOOKS_IN_PRIVATE_CHECKOUT"):
        pytest.skip("already inside the private checkout")  # no recursion
    reason = _tool_requirements()
    if reason:
        require(reason)
    if shutil.which("git") is None:
        require("needs git to clone the checkout")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    clone = private / "qos-hooks"
    r = subprocess.run(["git", "clone", "-q", REPO, str(clone)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, CI="true", QOS_HOOKS_IN_PRIVATE_CHECKOUT="1")
    env.pop("PYTHONPATH", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/priv/test_privhelper.py::test_executable_refuses_non_root",
                        "tests/hooks/test_hooks_vdsm_user.py"],
                       cwd=str(clone), env=env, capture_output=True, text=True, timeout=900)
    tail = (r.stdout + r.stderr)[-3000:]
    assert r.returncode == 0, tail
    assert "6 passed, 1 skipped" in r.stdout, tail
