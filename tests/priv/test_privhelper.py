"""The root helper refuses everything but one well-formed request.

Hostile and malformed requests are fed both to ``parse_request`` and to the
real executable ``libexec/qos-hooks-helper`` (as a subprocess, as sudo would
run it); the refusals must come before any OVSDB connection (exit 4, where
an OVSDB problem would be exit 5).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from qos_hooks.priv import helper as privhelper
from qos_hooks.priv import protocol as privproto
from qos_hooks.priv.protocol import RequestError, parse_request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(REPO, "libexec", "qos-hooks-helper")
SUDOERS = os.path.join(REPO, "sudoers", "50_vdsm_hook_qos_hooks")
UUID = "6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e"


def good(**over):
    req = {"version": 1, "action": "apply",
           "domain": {"uuid": UUID, "name": "web01",
                      "interfaces": [{"mac": "52:54:00:6b:1f:01", "target_dev": "vnet0",
                                      "bandwidth": {"inbound": {"average": 12500, "peak": 25000,
                                                                "burst": 1024},
                                                    "outbound": {"average": 6250}}}]}}
    req.update(over)
    return req


def enc(obj):
    return json.dumps(obj).encode()


def iface(**over):
    i = {"mac": "52:54:00:6b:1f:01", "target_dev": "vnet0", "bandwidth": {}}
    i.update(over)
    return i


def with_iface(**over):
    r = good()
    r["domain"]["interfaces"] = [iface(**over)]
    return r


def test_good_request_round_trips():
    action, dq, opts = parse_request(enc(good()))
    assert action == "apply"
    assert dq.uuid == UUID and dq.name == "web01"
    assert dq.interfaces[0].bandwidth.inbound.peak == 25000
    assert opts == {"libvirt_leftovers": False}
    # what the unprivileged side builds is what the helper accepts
    again = parse_request(privproto.build_request("clear", dq, libvirt_leftovers=True))
    assert again[0] == "clear" and again[1] == dq and again[2]["libvirt_leftovers"]


def test_mac_only_interface_is_accepted_and_normalised():
    _, dq, _ = parse_request(enc(with_iface(mac="52:54:00:AA:BB:CC", target_dev=None)))
    assert dq.interfaces[0].mac == "52:54:00:aa:bb:cc"
    assert dq.interfaces[0].target_dev is None


HOSTILE = {
    "not json": b"rm -rf /",
    "empty": b"",
    "not utf-8": b"\xff\xfe{}",
    "json list": b"[1, 2]",
    "too big": b'{"version": 1, "pad": "' + b"x" * (privproto.MAX_REQUEST_BYTES + 10) + b'"}',
    "NaN": b'{"version": NaN}',
    "deep nesting": b"[" * 100000 + b"]" * 100000,
    "duplicate key": (b'{"version": 1, "action": "apply", "action": "clear", '
                      b'"domain": {"uuid": "%s", "interfaces": []}}' % UUID.encode()),
}

HOSTILE_OBJ = {
    "unknown top key (remote)": good(remote="tcp:203.0.113.1:6640"),
    "unknown top key (argv)": good(argv=["/bin/sh", "-c", "id"]),
    "version 2": good(version=2),
    "version as string": good(version="1"),
    "version as bool": good(version=True),
    "action not allowed": good(action="exec"),
    "action shell": good(action="apply; rm -rf /"),
    "leftovers on apply": good(libvirt_leftovers=True),
    "leftovers not bool": good(action="clear", libvirt_leftovers="yes"),
    "unknown option": good(collect_orphans=True),
    "missing domain": {"version": 1, "action": "apply"},
    "domain not object": good(domain="web01"),
    "bad uuid": good(domain={"uuid": "../../etc/passwd", "interfaces": []}),
    "uuid injection": good(domain={"uuid": UUID + "; id", "interfaces": []}),
    "unknown domain key": good(domain={"uuid": UUID, "interfaces": [], "ovsdb": "x"}),
    "name with newline": good(domain={"uuid": UUID, "name": "a\nb", "interfaces": []}),
    "name with slash": good(domain={"uuid": UUID, "name": "a/b", "interfaces": []}),
    "interfaces not list": good(domain={"uuid": UUID, "interfaces": {"a": 1}}),
    "too many interfaces": good(domain={"uuid": UUID, "interfaces": [
        iface(mac="52:54:00:00:%02x:%02x" % (i // 256, i % 256)) for i in range(65)]}),
    "mac injection": with_iface(mac="52:54:00:6b:1f:01 -- destroy QoS ."),
    "mac wrong shape": with_iface(mac="52-54-00-6b-1f-01"),
    "dev shell": with_iface(target_dev="vnet0;reboot"),
    "dev too long": with_iface(target_dev="a" * 16),
    "dev slash": with_iface(target_dev="../eth0"),
    "dev space": with_iface(target_dev="vnet 0"),
    "no mac no dev": with_iface(mac=None, target_dev=None),
    "missing bandwidth": good(domain={"uuid": UUID, "interfaces": [
        {"mac": "52:54:00:6b:1f:01", "target_dev": "vnet0"}]}),
    "unknown iface key": with_iface(qos="anything"),
    "unknown direction": with_iface(bandwidth={"sideways": {"average": 1}}),
    "unknown rate field": with_iface(bandwidth={"inbound": {"average": 1, "rate": 2}}),
    "floor outbound": with_iface(bandwidth={"outbound": {"average": 10, "floor": 5}}),
    "float rate": with_iface(bandwidth={"inbound": {"average": 1.5}}),
    "bool rate": with_iface(bandwidth={"inbound": {"average": True}}),
    "string rate": with_iface(bandwidth={"inbound": {"average": "100"}}),
    "negative rate": with_iface(bandwidth={"inbound": {"average": -1}}),
    "zero rate": with_iface(bandwidth={"inbound": {"average": 0}}),
    "huge rate": with_iface(bandwidth={"inbound": {"average": 2 ** 54}}),
    "huge burst": with_iface(bandwidth={"inbound": {"average": 1, "burst": 4194304}}),
    "peak below average": with_iface(bandwidth={"inbound": {"average": 100, "peak": 50}}),
    "peak without average": with_iface(bandwidth={"inbound": {"peak": 50}}),
    "exponent float": None,  # filled below: 1e3 is a float in JSON
}
HOSTILE_OBJ.pop("exponent float")
HOSTILE["exponent float"] = enc(good()).replace(b'"average": 6250', b'"average": 6.25e3')


@pytest.mark.parametrize("name", sorted(HOSTILE) + sorted(HOSTILE_OBJ))
def test_hostile_request_is_refused(name):
    data = HOSTILE[name] if name in HOSTILE else enc(HOSTILE_OBJ[name])
    with pytest.raises(RequestError):
        parse_request(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                              max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes_the_validator(value):
    try:
        data = json.dumps(value).encode()
    except ValueError:
        return
    try:
        parse_request(data)
    except RequestError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["mac", "target_dev", "bandwidth", "x"]),
                       st.none() | st.text(max_size=20) | st.integers(), max_size=4))
def test_arbitrary_interfaces_are_validated(d):
    r = good()
    r["domain"]["interfaces"] = [d]
    try:
        _, dq, _ = parse_request(enc(r))
    except RequestError:
        return
    i = dq.interfaces[0]
    assert i.mac is None or privproto.MAC_RE.match(i.mac)
    assert i.target_dev is None or privproto.DEV_RE.match(i.target_dev)


# -- the executable -------------------------------------------------------------

def _require_root():
    if os.geteuid() != 0:
        from tests.ovs_sandbox import require
        require("needs root: the helper refuses to run as another user")


def run_helper(data, *args, env=None, argv0=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([argv0 or HELPER] + list(args), input=data, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=e, timeout=60)


@pytest.fixture
def unreachable_config(tmp_path):
    conf = tmp_path / "qos-hooks.conf"
    conf.write_text("[settings]\novsdb = unix:%s\novsdb_timeout = 1\n" % (tmp_path / "no.sock"))
    return {"QOS_HOOKS_CONFIG": str(conf)}


@pytest.mark.parametrize("name", ["not json", "too big", "duplicate key", "exponent float"])
def test_executable_refuses_malformed_stdin(name, unreachable_config):
    _require_root()
    p = run_helper(HOSTILE[name], env=unreachable_config)
    assert p.returncode == 4, p.stderr
    assert b"request refused" in p.stderr


@pytest.mark.parametrize("name", ["unknown top key (remote)", "action shell", "mac injection",
                                  "dev shell", "huge rate", "float rate"])
def test_executable_refuses_hostile_requests(name, unreachable_config):
    _require_root()
    p = run_helper(enc(HOSTILE_OBJ[name]), env=unreachable_config)
    assert p.returncode == 4, p.stderr
    assert b"request refused" in p.stderr


def test_executable_refuses_arguments(unreachable_config):
    _require_root()
    p = run_helper(enc(good()), "--config", "/tmp/evil.conf", env=unreachable_config)
    assert p.returncode == 4 and b"takes no arguments" in p.stderr


def test_valid_request_reaches_the_configured_remote_only(unreachable_config):
    """A valid request gets past validation and fails on the CONFIGURED (dead)
    remote: exit 5, OVSDB unavailable."""
    _require_root()
    p = run_helper(enc(good()), env=unreachable_config)
    assert p.returncode == 5, p.stderr
    assert b"no.sock" in p.stderr


def test_executable_refuses_non_root():
    """Run as nobody, the helper refuses (exit 8).  The package comes from a
    copy nobody can read (tests/unpriv_layout.py), not from the checkout, which
    may sit under a directory only its owner can enter (issue 15)."""
    _require_root()
    if shutil.which("setpriv") is None:
        from tests.ovs_sandbox import require
        require("needs setpriv (util-linux) to run the helper as nobody")
    from tests import unpriv_layout as ul
    from tests.ovs_sandbox import require
    base = ul.readable_copy(parts=("qos_hooks",))
    try:
        lib = os.path.join(base, "lib")
        python = ul.usable_python(65534, 65534)
        reason = ul.unusable_reason(65534, 65534, python, lib, ["qos_hooks.priv.helper"])
        if reason:
            require(reason)
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "env", "PYTHONPATH=" + lib, python, "-c",
                            "import sys; from qos_hooks.priv.helper import main; "
                            "sys.exit(main([]))"],
                           input=enc(good()), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60, cwd="/")
    finally:
        shutil.rmtree(base)
    assert p.returncode == 8, p.stderr
    assert b"must run as root" in p.stderr


def test_sudo_caller_cannot_choose_the_config(tmp_path, unreachable_config):
    """Through sudo ($SUDO_UID set), $QOS_HOOKS_CONFIG is ignored: the helper
    uses only the fixed default path."""
    env = dict(unreachable_config, SUDO_UID="36", SUDO_USER="vdsm")
    cfg = privhelper.helper_config(env)
    assert cfg.path in (None, "/etc/qos-hooks/qos-hooks.conf")
    assert "no.sock" not in cfg.settings.ovsdb


def test_sudoers_drop_in_is_valid_and_narrow():
    text = open(SUDOERS).read()
    rules = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert rules == ["Defaults:vdsm !requiretty",
                     'vdsm ALL=(root) NOPASSWD: /usr/libexec/qos-hooks/qos-hooks-helper ""']
    visudo = shutil.which("visudo") or ("/usr/sbin/visudo" if os.path.exists("/usr/sbin/visudo")
                                       else None)
    if visudo is None:
        from tests.ovs_sandbox import require
        require("needs visudo (Debian package sudo) to check the sudoers syntax")
    p = subprocess.run([visudo, "-c", "-f", SUDOERS], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    assert p.returncode == 0, p.stdout


def test_helper_through_real_sudo(tmp_path, unreachable_config):
    """``sudo -n`` runs the helper as root with sudo's reset environment:
    hostile input is refused (4); a valid request uses the default remote,
    not the caller's $QOS_HOOKS_CONFIG (5, and not our no.sock)."""
    _require_root()
    sudo = shutil.which("sudo")
    if sudo is None:
        from tests.ovs_sandbox import require
        require("needs sudo (tests/install-deps.sh installs it)")
    # the installed helper runs the system's python3 with the package; in
    # this checkout, a wrapper with this interpreter stands in for it
    wrapper = tmp_path / "qos-hooks-helper"
    wrapper.write_text("#!%s\nimport sys\nsys.path.insert(0, %r)\n"
                       "from qos_hooks.priv.helper import main\nsys.exit(main())\n"
                       % (sys.executable, REPO))
    wrapper.chmod(0o755)
    p = subprocess.run([sudo, "-n", str(wrapper)], input=enc(HOSTILE_OBJ["dev shell"]),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       env=dict(os.environ, **unreachable_config))
    assert p.returncode == 4, p.stderr
    p = subprocess.run([sudo, "-n", str(wrapper)], input=enc(good()), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60,
                       env=dict(os.environ, **unreachable_config))
    assert p.returncode == 5, p.stderr  # the default remote, not ours, is unreachable
    assert b"no.sock" not in p.stderr
    assert b"by=root" in p.stderr  # SUDO_USER seen: it really ran through sudo


def test_helper_apply_imports_only_what_apply_needs(ovs_sandbox, tmp_path):
    """One real apply by the helper (root), in the switch's namespace: it
    succeeds and never loads pyroute2 (the kernel read-back uses
    kernel.rtnl), lxml, libvirt, asyncio, dataclasses, subprocess, or ssl
    (its remote is unix:, ovsdb.load_library; an import that was refused
    leaves None in sys.modules)."""
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": "52:54:00:6b:1f:01"})
    conf = tmp_path / "qos-hooks.conf"
    conf.write_text("[settings]\novsdb = %s\novsdb_timeout = 20\n" % sb.remote)
    code = ("import sys\n"
            "from qos_hooks.priv.helper import main\n"
            "rc = main([])\n"
            "bad = [m for m in ('pyroute2', 'lxml', 'libvirt', 'asyncio', 'dataclasses', 'ssl',"
            " 'subprocess')"
            " if sys.modules.get(m) is not None]\n"
            "print(' '.join(bad))\n"
            "sys.exit(rc)\n")
    env = dict(os.environ, QOS_HOOKS_CONFIG=str(conf), PYTHONPATH=REPO)
    env.pop("SUDO_UID", None)
    p = subprocess.run(sb.ns_argv([sys.executable, "-c", code]), input=enc(good()),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().strip() == ""
    assert "qos-hooks" in sb.vsctl("--bare", "--columns=external_ids", "list", "QoS")
