"""Hostile policy files and what the shipped one promises (issue 9 items 5,
7, 8, 10, 11 at the config edge).

* numbers: 5000 digits or non-ASCII digits anywhere in the file are config
  errors (exit 3) naming file:line and key, never Python's int-digits
  ValueError (exit 1, a traceback);
* lines end at ``\\n`` only (U+2028, NEL, \\v, \\f, \\x1c-\\x1e do not);
* bursts below one MTU are refused with the smallest sane value;
* a FIFO at the config path, or a config that someone else than root can
  write, stops the root-side hooks by their failure policy, at once, with the
  hook file byte-equal;
* the shipped examples/qos-hooks.conf keeps every built-in fail-closed
  default, and ``on_error = continue`` at a validating hook removes the QoS
  it could not validate.
"""

import json
import os
import subprocess
import sys

import pytest

from qos_hooks.hooks import vdsm_vm as hooks
from qos_hooks.hooks import libvirt_qemu as libvirt_hook
from qos_hooks.core import policy
from qos_hooks.hooks import vdsm_network
from qos_hooks.core.errors import EXIT_CONFIG

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(REPO, "examples", "qos-hooks.conf")
EXAMPLE_XML = os.path.join(REPO, "examples", "ovs-guest.xml")
BIG = "9" * 5000


def cli(*args, stdin=None):
    env = dict(os.environ, PYTHONPATH=REPO, NO_COLOR="1")
    env.pop("QOS_HOOKS_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "qos_hooks"] + list(args), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)


def config_error(p):
    """The one stderr line of a refused config (exit 3, no traceback)."""
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == EXIT_CONFIG, (p.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- item 7: numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("line,needle", [
    ("inbound.average = %s" % BIG, "key 'inbound.average'"),
    ("inbound.average = %sMbit" % BIG, "key 'inbound.average'"),
    ("inbound.average = 1.%sMbit" % BIG, "key 'inbound.average'"),
    ("disk.total_iops_sec = %s" % BIG, "key 'disk.total_iops_sec'"),
    ("cpu.limit = %s" % BIG, "key 'cpu.limit'"),
    ("inbound.average = \u0664", "key 'inbound.average' = '\u0664': not a quantity"),
    ("inbound.average = \u00b2Mbit", "key 'inbound.average'"),
    ("disk.total_iops_sec = \uff11\uff10", "key 'disk.total_iops_sec'"),
    ("cpu.limit = \u0665", "key 'cpu.limit'"),
], ids=["big-rate", "big-rate-unit", "big-fraction", "big-iops", "big-cpu", "arabic-rate",
        "superscript-rate", "fullwidth-iops", "arabic-cpu"])
def test_hostile_numbers_in_a_profile(tmp_path, line, needle):
    conf = tmp_path / "p.conf"
    conf.write_text("[settings]\novsdb_timeout = 5\n\n[profile p]\n%s\n" % line)
    data = conf.read_bytes()
    msg = config_error(cli("dry-run", "--config", str(conf), "--profile", "p", EXAMPLE_XML))
    assert msg.startswith("qos-hooks[") and (" %s:5: profile 'p', " % conf) in msg, msg
    assert needle in msg
    assert len(msg) < 600                   # 5000 digits are not echoed back
    assert conf.read_bytes() == data


@pytest.mark.parametrize("line,key,allowed", [
    ("ovsdb_timeout = \u0665", "ovsdb_timeout", "0.1..60 seconds"),
    ("ovsdb_timeout = %s" % BIG, "ovsdb_timeout", "0.1..60 seconds"),
    ("ovsdb_timeout = 1e1", "ovsdb_timeout", "0.1..60 seconds"),
    ("host_cpus = \u0664", "host_cpus", "1..65536"),
    ("host_cpus = %s" % BIG, "host_cpus", "1..65536"),
    ("host_cpus = \u00b2", "host_cpus", "1..65536"),
], ids=["arabic-timeout", "big-timeout", "exponent-timeout", "arabic-cpus", "big-cpus",
        "superscript-cpus"])
def test_hostile_numbers_in_settings(tmp_path, line, key, allowed):
    """``ovsdb_timeout = ٥`` was read as 5.0 (float() takes any Unicode digit);
    ``host_cpus`` with 5000 digits was a traceback."""
    conf = tmp_path / "s.conf"
    conf.write_text("[settings]\n%s\n" % line)
    msg = config_error(cli("dry-run", "--config", str(conf), EXAMPLE_XML))
    assert " %s:2: key %r" % (conf, key) in msg, msg
    assert msg.endswith("(allowed: %s)" % allowed), msg


# -- item 8: lines end at \n only --------------------------------------------------------

@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d",
                                 "\x1e"],
                         ids=["U+2028", "U+2029", "NEL", "VT", "FF", "FS", "GS", "RS"])
def test_only_newline_ends_a_line(tmp_path, sep):
    """``# disabled:<U+2028>default_profile = gold`` used to turn the setting
    on, and every later line number was off by one."""
    conf = tmp_path / "l.conf"
    conf.write_text("[settings]\n# disabled:%sdefault_profile = gold\n\n[profile gold]\n"
                    "inbound.average = 1000\noutbound.average = oops\n" % sep)
    cfg_text = conf.read_text()
    with pytest.raises(policy.ConfigError) as e:
        policy.parse_config(cfg_text, str(conf))
    assert str(e.value).startswith("%s:6: profile 'gold', key 'outbound.average'" % conf)
    ok = cfg_text.replace("oops", "1000")
    assert policy.parse_config(ok, str(conf)).settings.default_profile is None


# -- item 10: bursts ---------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_burst_below_one_mtu_is_refused(tmp_path, direction):
    conf = tmp_path / "b.conf"
    conf.write_text("[profile p]\n%s.average = 100Mbit\n%s.burst = 1KiB\n"
                    % (direction, direction))
    msg = config_error(cli("dry-run", "--config", str(conf), "--profile", "p", EXAMPLE_XML))
    assert ("%s:3: profile 'p', key '%s.burst' = '1KiB': %s burst of 1 KiB is below one "
            "MTU (1500 bytes)" % (conf, direction, direction)) in msg
    assert "(allowed: 2..4194303 KiB, at least 2 KiB (one 1500-byte MTU); for TCP ideally " \
           "1250 KiB or more (10% of the rate, Open vSwitch vswitch.xml))" in msg


def test_burst_below_one_mtu_from_the_xml_is_flagged_in_dry_run(tmp_path):
    """A burst kept from the XML (on_existing=fill) was not validated by us:
    the plan says it cannot work, once, with the fix."""
    conf = tmp_path / "f.conf"
    conf.write_text("[profile p]\ninbound.average = 1000\n")
    with open(EXAMPLE_XML, "rb") as f:
        xml = f.read().replace(b"<model", b"<bandwidth><outbound average='100' burst='1'/>"
                                         b"</bandwidth><model", 1)
    p = cli("dry-run", "--config", str(conf), "--profile", "p", "-", stdin=xml)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out
    warn = "outbound burst of 1 KiB is below one MTU (1500 bytes): the outbound policer " \
           "drops every frame larger than it (set outbound.burst to 2..4194303 KiB"
    assert out.count(warn) == 1, out


# -- items 4 and 5 at the root-side hooks --------------------------------------------------

def run_hook(point, env, path_var, path, argv=(), stdin=None):
    e = {"PATH": os.environ["PATH"], "PYTHONPATH": REPO, "LC_ALL": "C.UTF-8"}
    e.update(env)
    e[path_var] = str(path)
    exe = (os.path.join(REPO, "hooks", point, "50_qos_hooks") if point != "qemu"
           else os.path.join(REPO, "libvirt-hooks", "qemu.d", "50_qos_hooks"))
    try:
        p = subprocess.run([exe] + list(argv), env=e, input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s hung" % point)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


NET_REQUEST = json.dumps({"request": {"networks": {"n1": {
    "nic": "eth1", "switch": "legacy", "bridged": True,
    "hostQos": {"out": {"ul": {"m2": 8000000}}}}}, "bondings": {}, "options": {}}})


def _require_root():
    if os.geteuid() != 0:
        from tests.ovs_sandbox import require
        require("needs root: the root-side trust check only runs as root")


@pytest.mark.parametrize("kind", ["fifo", "group-writable", "vdsm-owned dir"])
def test_root_side_hooks_refuse_untrusted_or_fifo_config(tmp_path, kind):
    """before_network_setup (root, inside supervdsmd) and the libvirt qemu hook
    (root): a FIFO at the config path used to hang them; a config vdsm can
    write used to be obeyed.  Now: the failure policy's default (fail: exit 1
    for before_network_setup and qemu migrate), the message, the hook file
    and the XML byte-equal."""
    _require_root()
    d = tmp_path / "etc"
    d.mkdir()
    conf = d / "qos-hooks.conf"
    if kind == "fifo":
        os.mkfifo(conf)
        needle = "%s: not a regular file" % conf
    else:
        conf.write_text("[settings]\non_error = continue\n")
        if kind == "group-writable":
            os.chown(conf, 0, 36)
            os.chmod(conf, 0o664)
            needle = "writable by group 36 (mode 0664)"
        else:
            os.chown(d, 36, 36)
            needle = "its directory %s is owned by uid 36, not root" % d
    env = {"QOS_HOOKS_CONFIG": str(conf),
           "QOS_HOOKS_HOSTNET_STATE": str(tmp_path / "state" / "hostnet.json")}
    hook_json = tmp_path / "net.json"
    hook_json.write_text(NET_REQUEST)
    rc, _, err = run_hook("before_network_setup", env, "_hook_json", hook_json)
    assert rc == 2, err   # on_error=fail at a before_* point: exit 2 (docs/hooks.md)
    assert needle in err and "on_error=fail for before_network_setup" in err
    assert hook_json.read_text() == NET_REQUEST
    with open(EXAMPLE_XML, "rb") as f:
        xml = f.read()
    rc, out, err = run_hook("qemu", env, "QOS_HOOKS_CONFIG", conf,
                            argv=("web01", "migrate", "begin", "-"), stdin=xml)
    assert rc == 1, err
    assert needle in err and out == b""


# -- item 11: the shipped config fails closed; continue removes what it could not check -------

def test_shipped_config_keeps_every_built_in_default():
    cfg = policy.load_config(SHIPPED)
    assert cfg.settings.on_error == ()
    with open(SHIPPED) as f:
        lines = f.read().split("\n")
    assert not [ln for ln in lines if ln.strip().startswith("on_error")]
    assert [ln for ln in lines if ln.startswith("# on_error.")]     # overrides shown, commented
    for defaults in (hooks.DEFAULT_ON_ERROR, vdsm_network.DEFAULT_ON_ERROR,
                     libvirt_hook.DEFAULT_ON_ERROR):
        for point, mode in defaults.items():
            assert cfg.settings.on_error_for(point, mode) == mode, point


NIC = """<interface type='bridge'>
  <mac address='52:54:00:6b:1f:01'/>
  <source bridge='ovirtmgmt'/>
  <bandwidth>
    <inbound average='{avg}'/>
  </bandwidth>
  <model type='virtio'/>
</interface>
"""


@pytest.mark.parametrize("point", ["before_nic_hotplug", "before_update_device"])
def test_shipped_config_fails_closed_at_validating_hooks(tmp_path, point):
    """With the old shipped ``on_error = continue`` a vNIC naming an unknown
    profile passed straight to VDSM (exit 0)."""
    f = tmp_path / "nic.xml"
    f.write_text(NIC.format(avg=1000))
    data = f.read_bytes()
    rc, _, err = run_hook(point, {"QOS_HOOKS_CONFIG": SHIPPED, "qos_profile": "platinum"},
                          "_hook_domxml", f)
    assert rc == 2, err   # on_error=fail at a before_* point: exit 2 (docs/hooks.md)
    assert "unknown profile 'platinum'" in err and "on_error=fail for %s" % point in err
    assert f.read_bytes() == data


def test_shipped_config_fails_closed_at_before_network_setup(tmp_path):
    """A hostQos with a negative upper limit passed to VDSM with the old file."""
    req = json.loads(NET_REQUEST)
    req["request"]["networks"]["n1"]["hostQos"] = {"out": {"ul": {"m2": -5}}}
    f = tmp_path / "net.json"
    f.write_text(json.dumps(req))
    data = f.read_bytes()
    rc, _, err = run_hook("before_network_setup",
                          {"QOS_HOOKS_CONFIG": SHIPPED,
                           "QOS_HOOKS_HOSTNET_STATE": str(tmp_path / "st" / "h.json")},
                          "_hook_json", f)
    assert rc == 2, err   # on_error=fail at a before_* point: exit 2 (docs/hooks.md)
    assert "network 'n1': hostQos[out][ul][m2] = -5: negative" in err
    assert f.read_bytes() == data


@pytest.mark.parametrize("point", ["before_nic_hotplug", "before_update_device"])
@pytest.mark.parametrize("case", ["unknown profile", "non-ASCII digit"])
def test_continue_at_a_validating_hook_removes_the_unvalidated_qos(tmp_path, point, case):
    """on_error.<point> = continue means "carry on without QoS": the
    <bandwidth> the hook could not validate is removed (it used to pass
    through), the rest of the device is byte-equal, and the log says so."""
    conf = tmp_path / "c.conf"
    conf.write_text("[settings]\non_error.%s = continue\n\n[profile gold]\n"
                    "inbound.average = 1000\n" % point)
    f = tmp_path / "nic.xml"
    f.write_text(NIC.format(avg="\u0664" if case == "non-ASCII digit" else 500))
    env = {"QOS_HOOKS_CONFIG": str(conf),
           "qos_profile": "platinum" if case == "unknown profile" else "gold"}
    rc, _, err = run_hook(point, env, "_hook_domxml", f)
    assert rc == 0, err
    assert "on_error=continue for %s: carrying on without QoS" % point in err
    assert ("on_error=continue: removed the <bandwidth> of interface 52:54:00:6b:1f:01, "
            "which could not be validated: the vNIC carries on without QoS") in err
    assert f.read_text() == ('<interface type="bridge">\n  <mac address="52:54:00:6b:1f:01"/>\n'
                             '  <source bridge="ovirtmgmt"/>\n  <model type="virtio"/>\n'
                             '</interface>\n')


def test_security_md_names_real_tests():
    """docs/security.md's attack table stays true: every ``file::test`` it
    names exists (and the file-only references are to test modules)."""
    import ast
    import re
    with open(os.path.join(REPO, "docs", "security.md")) as f:
        text = f.read()
    refs = re.findall(r"`(tests/(?:[a-z]+/)?test_[a-z_]+\.py)(?:::([A-Za-z_0-9]+))?`", text)
    assert len(refs) > 30
    for path, name in refs:
        if not name:
            continue
        with open(os.path.join(REPO, path)) as f:
            tree = ast.parse(f.read())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in names, "%s::%s named in docs/security.md does not exist" % (path, name)


@pytest.mark.parametrize("value,needle", [
    ("9" * 5000, "hostQos[out][ul][m2] = \"99999"),
    ("%sms" % ("9" * 5000), "hostQos[out][ul][d]"),
], ids=["big-m2", "big-d"])
def test_hostile_numbers_in_the_hook_json(tmp_path, value, needle):
    """A 5000-digit string in hostQos was Python's int-digits ValueError (a
    traceback, "internal error"); now an input error naming the network, and
    the request byte-equal."""
    req = json.loads(NET_REQUEST)
    curve = {"m2": value} if needle.endswith("= \"99999") else {"m1": 1000, "d": value,
                                                                "m2": 8000000}
    req["request"]["networks"]["n1"]["hostQos"] = {"out": {"ul": curve}}
    f = tmp_path / "net.json"
    f.write_text(json.dumps(req))
    data = f.read_bytes()
    conf = tmp_path / "c.conf"
    conf.write_text("[settings]\novsdb_timeout = 5\n")
    rc, _, err = run_hook("before_network_setup",
                          {"QOS_HOOKS_CONFIG": str(conf),
                           "QOS_HOOKS_HOSTNET_STATE": str(tmp_path / "st" / "h.json")},
                          "_hook_json", f)
    assert rc == 2, err   # on_error=fail at a before_* point: exit 2 (docs/hooks.md)
    assert "Traceback" not in err and "internal error" not in err
    assert "network 'n1': " in err and needle in err
    assert "at most 20 digits" in err
    assert f.read_bytes() == data
