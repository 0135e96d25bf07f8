"""Host network QoS hooks: validation, fill, strip and the VDSM JSON protocol.

Requests are shaped like the engine's (ovirt-engine HostNetworkQos ->
VDSM): ``ls.m2`` is the link-share weight (1..100), ``ul.m2``/``rt.m2`` are
bit/s (Mbps * 10^6).  The hook executables run through tests/vdsm_runner.py,
which runs a hook directory the way VDSM's ``_runHooksDir`` does.  No OVS
here: OVS networks only get stripped and remembered (tests/hostnet/test_hostnet_ovs.py
applies them).
"""

import json
import os
import string
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from qos_hooks.hostnet import decisions as hostnet_decide
from qos_hooks.hostnet import hostqos as hostnet_qos
from qos_hooks.core import policy
from qos_hooks.hooks import vdsm_network
from qos_hooks.core.errors import ConfigError, InputError
from tests.vdsm_runner import JSON, HookError, run_hook_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOKS = os.path.join(ROOT, "hooks")
MBIT = 10 ** 6

CONF = """\
[settings]
ovsdb = unix:/nonexistent/db.sock
ovsdb_timeout = 1

[profile hostgold]
host.ls.m2 = 40
host.ul.m2 = 500Mbit
host.rt.m2 = 100Mbit

[profile hostcap]
on_existing = override
host.ls.m2 = 10
host.ul.m2 = 20Mbit

[profile vmonly]
inbound.average = 10Mbit
"""


def engine_qos(linkshare=None, upperlimit=None, realtime=None):
    """hostQos as the engine sends it: ls weight, ul/rt in bit/s."""
    out = {}
    if linkshare is not None:
        out["ls"] = {"m2": linkshare}
    if upperlimit is not None:
        out["ul"] = {"m2": upperlimit * MBIT}
    if realtime is not None:
        out["rt"] = {"m2": realtime * MBIT}
    return {"out": out}


def engine_request(networks, bondings=None, options=None):
    """The request VDSM hands to before_network_setup (api.py
    _build_setup_hook_dict), after canonicalize_networks filled defaults."""
    nets = {}
    for name, attrs in networks.items():
        if attrs.get("remove"):
            nets[name] = {"remove": True}
            continue
        base = {"bridged": True, "mtu": 1500, "switch": "legacy", "defaultRoute": False,
                "bootproto": "none", "dhcpv6": False, "ipv6autoconf": False,
                "nameservers": [], "stp": False}
        base.update(attrs)
        nets[name] = base
    return {"request": {"networks": nets, "bondings": bondings or {},
                        "options": options or {"connectivityCheck": "true",
                                               "connectivityTimeout": 120,
                                               "commitOnSuccess": True}}}


@pytest.fixture
def env(tmp_path):
    conf = tmp_path / "qos-hooks.conf"
    conf.write_text(CONF)
    e = dict(os.environ)
    e.update({"QOS_HOOKS_CONFIG": str(conf),
              "QOS_HOOKS_HOSTNET_STATE": str(tmp_path / "state" / "hostnet.json"),
              "PYTHONPATH": ROOT + os.pathsep + e.get("PYTHONPATH", "")})
    return e


def run_file_hook(hook_point, text, env, tmp_path):
    """Run one hook executable on a file holding exactly ``text``; return
    (rc, new bytes, stderr, rewritten?)."""
    path = tmp_path / ("%s.json" % hook_point)
    path.write_bytes(text.encode("utf-8"))
    before = os.stat(path)
    e = dict(env, _hook_json=str(path))
    p = subprocess.run([os.path.join(HOOKS, hook_point, "50_qos_hooks")], env=e, cwd="/",
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    after = os.stat(path)
    rewritten = (after.st_ino, after.st_mtime_ns, after.st_size) != \
        (before.st_ino, before.st_mtime_ns, before.st_size)
    # replaced by rename (VDSM re-reads the file by name), mode and owner kept,
    # no temporary file left behind
    assert (after.st_mode, after.st_uid, after.st_gid) == \
        (before.st_mode, before.st_uid, before.st_gid)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".qos-hooks-")]
    return p.returncode, path.read_bytes().decode("utf-8"), p.stderr.decode(), rewritten


CFG = policy.parse_config(CONF)


# -- validation --------------------------------------------------------------------

def test_engine_request_valid_untouched_through_vdsm_runner(env):
    req = engine_request({
        "ovirtmgmt": {"nic": "eth0", "hostQos": engine_qos(50, 1000, 100)},
        "storage": {"nic": "eth1", "vlan": 20, "bridged": False,
                    "hostQos": engine_qos(30, 2000)},
        "display": {"nic": "eth1", "vlan": 30},
    })
    res = run_hook_dir(os.path.join(HOOKS, "before_network_setup"), req, kind=JSON,
                       base_env=env)
    assert res.rcs == (0,)
    assert res.data == req


def test_engine_request_valid_file_not_rewritten(env, tmp_path):
    req = engine_request({"net": {"nic": "eth1", "vlan": 5,
                                  "hostQos": engine_qos(10, 100, 10)}})
    text = json.dumps(req)
    rc, new, err, rewritten = run_file_hook("before_network_setup", text, env, tmp_path)
    assert rc == 0, err
    assert new == text and not rewritten


@pytest.mark.parametrize("qos, words", [
    (engine_qos(10, 100, 200), ["'vm10'", "upper limit 100Mbit/s is below the real-time "
                                "rate 200Mbit/s", "[ul][m2] = 100000000"]),
    (engine_qos(None, 100), ["'vm10'", "VLAN network (vlan 10) has no link-share"]),
    ({"out": {"ls": {"m2": 10}, "ul": {"m1": 200 * MBIT, "m2": 100 * MBIT}}},
     ["'vm10'", "[out][ul][m1] = 200000000", "m1 needs d"]),
    ({"out": {"ls": {"m2": 10}, "ul": {"m2": -5}}}, ["'vm10'", "= -5", "negative"]),
    ({"out": {"ls": {"m2": 10}, "ul": {"m2": 8 * 2 ** 32}}}, ["'vm10'", "too large"]),
    ({"out": {"ls": {"m2": 10}, "ul": {"m2": "fast"}}}, ["'vm10'", "\"fast\""]),
    ({"out": {"ls": {"m2": 0}}}, ["'vm10'", "weight of 0"]),
    ({"out": {"ls": {"m2": 10}, "xx": {"m2": 1}}}, ["'vm10'", "unknown curve"]),
    ({"in": {"ls": {"m2": 10}}}, ["'vm10'", "outbound traffic only"]),
    ({"out": {"ls": {"m2": 10, "m3": 1}}}, ["'vm10'", "unknown curve key"]),
    ({"out": {"ls": {"m2": 10}, "ul": {"m1": 50 * MBIT, "d": 1000, "m2": 300 * MBIT},
              "rt": {"m1": 100 * MBIT, "d": 1000, "m2": 200 * MBIT}}},
     ["'vm10'", "starts at 50Mbit/s, below the real-time curve's 100Mbit/s"]),
])
def test_invalid_requests_fail_naming_network_and_value(env, qos, words):
    req = engine_request({"vm10": {"nic": "eth1", "vlan": 10, "hostQos": qos},
                          "other": {"nic": "eth0"}})
    with pytest.raises(HookError) as ei:
        run_hook_dir(os.path.join(HOOKS, "before_network_setup"), req, kind=JSON,
                     base_env=env)
    res = ei.value.result
    # exit 2: VDSM reports the stderr of the last script run, so ours stops
    # the loop (qos_hooks.hooks.vdsm_network.FAIL_EXIT); VDSM raises before it reads
    # the file back (lib/vdsm/common/hooks.py _runHooksDir)
    assert res.rcs == (2,)
    assert res.data is None
    assert ei.value.value == (res.runs[-1].stderr.encode("utf-8"),)
    for w in words:
        assert w in res.stderr, (w, res.stderr)
        assert w in ei.value.value[0].decode("utf-8")    # what the engine is sent


def test_our_message_reaches_the_engine_with_a_silent_script_after_us(env, tmp_path):
    """before_network_setup runs with raiseError (lib/vdsm/common/hooks.py):
    HookError carries the stderr of the last script run.  With a script
    sorting after ours that succeeds silently, exit 1 would report b''; our
    exit 2 stops the loop, so setupNetworks fails with our message."""
    import shutil
    d = tmp_path / "before_network_setup"
    d.mkdir()
    shutil.copy(os.path.join(HOOKS, "before_network_setup", "50_qos_hooks"), d / "50_qos_hooks")
    (d / "60_silent").write_text("#!/bin/sh\nexit 0\n")
    (d / "60_silent").chmod(0o755)
    req = engine_request({"vm10": {"nic": "eth1", "vlan": 10,
                                   "hostQos": {"out": {"ls": {"m2": 0}}}}})
    with pytest.raises(HookError) as ei:
        run_hook_dir(str(d), req, kind=JSON, base_env=env)
    assert ei.value.result.rcs == (2,)
    (msg,) = ei.value.value
    assert b"network 'vm10'" in msg and b"weight of 0" in msg


@pytest.mark.parametrize("curve", ["ul", "rt"])
def test_engine_ceiling_17179_mbit_for_upper_limit_and_real_time(curve):
    """The engine refuses an upper limit or real-time rate above
    MaxAverageNetworkQoSValue = 17179 Mbit/s (ovirt-engine
    HostNetworkQosProperties; 34359 Mbit/s is the vNIC peak cap): so does
    the hook, and its message quotes that bound, not the kernel's."""
    at = {"ls": 10, "ul": 17179, "rt": 17179}
    ok = hostnet_decide.decide({"n": {"nic": "e0", "hostQos": engine_qos(**{
        "linkshare": at["ls"], "upperlimit": at["ul"], "realtime": at["rt"]})}}, CFG)
    assert ok                                   # exactly the ceiling: accepted
    above = {"out": {"ls": {"m2": 10}, curve: {"m2": 20000 * MBIT}}}
    with pytest.raises(InputError) as ei:
        hostnet_decide.decide({"n": {"nic": "e0", "hostQos": above}}, CFG)
    msg = str(ei.value)
    assert "'n'" in msg and "[out][%s][m2] = 20000000000" % curve in msg
    assert "MaxAverageNetworkQoSValue = 17179 Mbit/s" in msg
    assert "allowed: 1..17179000000 bit/s" in msg
    assert "34359" not in msg
    # the cross-curve message quotes the same upper end
    with pytest.raises(InputError) as ei:
        hostnet_decide.decide({"n": {"nic": "e0", "hostQos": engine_qos(10, 100, 200)}}, CFG)
    assert "allowed: 200000000..17179000000 bit/s" in str(ei.value)


def test_upper_limit_alone_is_refused_even_untagged():
    with pytest.raises(InputError) as ei:
        hostnet_decide.decide({"n": {"nic": "e0", "hostQos": engine_qos(None, 10)}}, CFG)
    assert "upper limit alone" in str(ei.value) and "'n'" in str(ei.value)


def test_removed_network_not_validated():
    assert hostnet_decide.decide({"gone": {"remove": True, "hostQos": "junk"}}, CFG) == []


# -- fixes -------------------------------------------------------------------------------

def test_fixes_change_only_that_networks_hostqos(env, tmp_path):
    bad = {"out": {"ls": {"m1": 0, "d": 0, "m2": "25"}, "ul": {"m2": "100Mbit"},
                   "rt": {"m1": 20000000.0, "d": "5ms", "m2": 10 * MBIT}}}
    req = engine_request({"a": {"nic": "eth0", "hostQos": engine_qos(10, 100)},
                          "b": {"nic": "eth1", "vlan": 7, "hostQos": bad},
                          "c": {"nic": "eth2", "vlan": 8}})
    text = json.dumps(req)
    rc, new, err, rewritten = run_file_hook("before_network_setup", text, env, tmp_path)
    assert rc == 0, err
    fixed = {"out": {"ls": {"m2": 25}, "ul": {"m2": 100 * MBIT},
                     "rt": {"m1": 20 * MBIT, "d": 5000, "m2": 10 * MBIT}}}
    assert json.loads(new)["request"]["networks"]["b"]["hostQos"] == fixed
    # byte for byte: the only difference is that one value
    assert new == text.replace(json.dumps(bad), json.dumps(fixed))
    assert rewritten
    assert "fixed hostQos[out][ul][m2]: \"100Mbit\" -> 100000000" in err
    assert "network 'b'" in err


def test_fixes_of_a_foreign_formatted_file(env, tmp_path):
    """A hand-formatted file (another hook rewrote it with indent=4): VDSM
    reads it back with json.loads (_runHooksDir), so the hook edits the data
    and writes json.dumps of it: only the fixed value differs, every other
    member (non-ASCII names and values included) is kept."""
    req = engine_request({"b": {"nic": "eth1", "vlan": 7,
                                "hostQos": {"out": {"ls": {"m2": "5"}}}},
                          "ü-net": {"nic": "eth2", "note": "tabs\tand \u2603"}})
    text = json.dumps(req, indent=4, ensure_ascii=False) + "\n"
    rc, new, err, _ = run_file_hook("before_network_setup", text, env, tmp_path)
    assert rc == 0, err
    want = json.loads(text)
    want["request"]["networks"]["b"]["hostQos"] = {"out": {"ls": {"m2": 5}}}
    assert json.loads(new) == want
    assert new == json.dumps(want)


# -- fill from profiles ----------------------------------------------------------------

def test_fill_from_network_custom_profile(env, tmp_path):
    req = engine_request({"mig": {"nic": "eth1", "vlan": 40,
                                  "custom": {"qos_profile": "hostgold"}},
                          "keep": {"nic": "eth2", "hostQos": engine_qos(5, 10)}})
    text = json.dumps(req)
    rc, new, err, _ = run_file_hook("before_network_setup", text, env, tmp_path)
    assert rc == 0, err
    q = {"out": {"ls": {"m2": 40}, "ul": {"m2": 500 * MBIT}, "rt": {"m2": 100 * MBIT}}}
    want = json.loads(text)
    want["request"]["networks"]["mig"]["hostQos"] = q
    assert json.loads(new) == want
    custom = '"custom": {"qos_profile": "hostgold"}'
    assert new == text.replace(custom, custom + ', "hostQos": ' + json.dumps(q))
    assert "profile 'hostgold'" in err


def test_fill_gaps_only_by_default():
    nets = {"n": {"nic": "e", "vlan": 3, "custom": {"qos_profile": "hostgold"},
                  "hostQos": engine_qos(None, 200)}}
    (d,) = hostnet_decide.decide(nets, CFG)
    assert d.action == "set"
    assert d.qos.to_json() == {"out": {"ls": {"m2": 40}, "ul": {"m2": 200 * MBIT},
                                       "rt": {"m2": 100 * MBIT}}}


def test_override_profile_replaces():
    nets = {"n": {"nic": "e", "custom": {"qos_profile": "hostcap"},
                  "hostQos": engine_qos(50, 900, 100)}}
    (d,) = hostnet_decide.decide(nets, CFG)
    assert d.qos.to_json() == {"out": {"ls": {"m2": 10}, "ul": {"m2": 20 * MBIT}}}


def test_fill_that_contradicts_request_fails_naming_network():
    # request's upper limit 50 Mbit/s + profile's real-time 100 Mbit/s
    nets = {"n": {"nic": "e", "custom": {"qos_profile": "hostgold"},
                  "hostQos": engine_qos(None, 50)}}
    with pytest.raises(InputError) as ei:
        hostnet_decide.decide(nets, CFG)
    assert "'n'" in str(ei.value) and "below the real-time" in str(ei.value)


def test_profile_without_host_keys_changes_nothing():
    (d,) = hostnet_decide.decide({"n": {"nic": "e", "custom": {"qos_profile": "vmonly"}}}, CFG)
    assert d.action == "keep" and d.qos is None


def test_unknown_profile_names_network(env):
    req = engine_request({"n": {"nic": "e", "custom": {"qos_profile": "nope"}}})
    with pytest.raises(HookError) as ei:
        run_hook_dir(os.path.join(HOOKS, "before_network_setup"), req, kind=JSON,
                     base_env=env)
    assert "network 'n'" in ei.value.result.stderr
    assert "unknown profile 'nope'" in ei.value.result.stderr


@pytest.mark.parametrize("text, words", [
    ("host.ul.m2 = 10Mbps\n", ["host.ul.m2", "ambiguous"]),
    ("host.ls.m2 = heavy\n", ["host.ls.m2", "not a whole number"]),
    ("host.rt.d = 1.5us\n", ["host.rt.d", "whole number of microseconds"]),
    ("host.xx.m2 = 1\n", ["host.xx.m2", "unknown host network key"]),
])
def test_profile_value_errors(text, words):
    """host.* keys are parsed by the network side (the policy parser keeps them
    as written: a VM hook never parses them), with the file:line:key message."""
    cfg = policy.parse_config("[profile p]\n" + text, "/etc/q.conf")
    with pytest.raises(ConfigError) as ei:
        hostnet_qos.profile_host_qos(cfg.profiles["p"], cfg.path)
    msg = str(ei.value)
    assert "/etc/q.conf:2" in msg and "profile 'p'" in msg
    for w in words:
        assert w in msg


def test_profile_curve_errors_name_profile_and_key():
    cfg = policy.parse_config("[profile p]\nhost.ls.m2 = 5\nhost.ul.m1 = 10Mbit\n"
                              "host.ul.m2 = 5Mbit\n", "/etc/q.conf")
    with pytest.raises(ConfigError) as ei:
        hostnet_qos.profile_host_qos(cfg.profiles["p"], cfg.path)
    msg = str(ei.value)
    assert "profile 'p'" in msg and "host.ul.m1" in msg and "m1 needs d" in msg


def test_profile_units():
    cfg = policy.parse_config("[profile p]\nhost.ls.m2 = 7\nhost.ul.m1 = 1.5Gbit\n"
                              "host.ul.d = 2ms\nhost.ul.m2 = 125MB/s\n")
    q = hostnet_qos.profile_host_qos(cfg.profiles["p"])
    assert q.ul == hostnet_qos.Curve(m1=1500 * MBIT, d=2000, m2=1000 * MBIT)
    assert q.ls == hostnet_qos.Curve(m2=7)


# -- OVS switch type: strip and remember ------------------------------------------------

def test_ovs_network_stripped_and_remembered(env, tmp_path):
    q = engine_qos(20, 300, 50)
    req = engine_request({"ovsnet": {"nic": "eth3", "vlan": 100, "switch": "ovs",
                                     "hostQos": q},
                          "ovsplain": {"nic": "eth3", "switch": "ovs",
                                       "custom": {"qos_profile": "hostgold"}},
                          "ovsnone": {"nic": "eth3", "vlan": 101, "switch": "ovs"}})
    text = json.dumps(req)
    rc, new, err, _ = run_file_hook("before_network_setup", text, env, tmp_path)
    assert rc == 0, err
    assert new == text.replace(', "hostQos": ' + json.dumps(q), "")
    got = json.loads(new)["request"]["networks"]
    assert all("hostQos" not in a for a in got.values())
    with open(env["QOS_HOOKS_HOSTNET_STATE"]) as f:
        state = json.load(f)
    assert state["pending"]["ovsnet"] == {"hostQos": q, "uplink": "eth3", "vlan": 100,
                                          "profile": None}
    assert state["pending"]["ovsplain"]["hostQos"] == {
        "out": {"ls": {"m2": 40}, "ul": {"m2": 500 * MBIT}, "rt": {"m2": 100 * MBIT}}}
    assert state["pending"]["ovsnone"]["hostQos"] is None
    assert oct(os.stat(env["QOS_HOOKS_HOSTNET_STATE"]).st_mode & 0o777) == "0o600"


def test_ovs_by_custom_property_and_invalid_ovs_qos_fails(env):
    req = engine_request({"o": {"nic": "eth3", "vlan": 5, "custom": {"ovs": "true"},
                                "switch": "legacy", "hostQos": engine_qos(None, 10)}})
    with pytest.raises(HookError) as ei:
        run_hook_dir(os.path.join(HOOKS, "before_network_setup"), req, kind=JSON,
                     base_env=env)
    assert "network 'o'" in ei.value.result.stderr
    assert not os.path.exists(env["QOS_HOOKS_HOSTNET_STATE"])


def test_after_fail_drops_pending(env, tmp_path):
    req = engine_request({"o": {"nic": "eth3", "switch": "ovs",
                                "hostQos": engine_qos(5, 10)}})
    rc, _, err, _ = run_file_hook("before_network_setup", json.dumps(req), env, tmp_path)
    assert rc == 0, err
    res = run_hook_dir(os.path.join(HOOKS, "after_network_setup_fail"), req, kind=JSON,
                       base_env=env)
    assert res.rcs == (0,)
    with open(env["QOS_HOOKS_HOSTNET_STATE"]) as f:
        assert json.load(f)["pending"] == {}


def test_after_hook_without_ovs_networks_touches_nothing(env):
    req = engine_request({"a": {"nic": "eth0", "hostQos": engine_qos(5, 10)}})
    res = run_hook_dir(os.path.join(HOOKS, "after_network_setup"), req, kind=JSON,
                       base_env=env)
    assert res.rcs == (0,) and res.data == req


def test_after_hook_unreachable_ovsdb_continues_by_default(env):
    """after_network_setup: on_error defaults to continue (VDSM ignores it anyway)."""
    req = engine_request({"o": {"nic": "eth3", "switch": "ovs",
                                "hostQos": engine_qos(5, 10)}})
    res = run_hook_dir(os.path.join(HOOKS, "after_network_setup"), req, kind=JSON,
                       base_env=env)
    assert res.rcs == (0,)
    assert "OVSDB" in res.stderr and "on_error=continue" in res.stderr


def test_on_error_continue_for_before_hook(env, tmp_path):
    """continue means "carry on without QoS" (issue 9 item 11): the hostQos
    that failed validation is taken out of the request (it used to pass
    through to VDSM), the valid network keeps its own, and the log says so."""
    conf = tmp_path / "c2.conf"
    conf.write_text("[settings]\non_error.before_network_setup = continue\n")
    e = dict(env, QOS_HOOKS_CONFIG=str(conf))
    req = engine_request({"v": {"nic": "e", "vlan": 2, "hostQos": engine_qos(None, 5)},
                          "w": {"nic": "f", "hostQos": engine_qos(5, 10)}})
    res = run_hook_dir(os.path.join(HOOKS, "before_network_setup"), req, kind=JSON,
                       base_env=e)
    assert res.rcs == (0,)
    want = json.loads(json.dumps(req))
    del want["request"]["networks"]["v"]["hostQos"]
    assert res.data == want
    assert "network 'v'" in res.stderr and "on_error=continue" in res.stderr
    assert "removed the hostQos of network 'v', which could not be validated" in res.stderr


def test_hook_without_hook_json_fails(env):
    e = dict(env)
    e.pop("_hook_json", None)
    p = subprocess.run([sys.executable, os.path.join(HOOKS, "before_network_setup",
                                                     "50_qos_hooks")],
                       env=e, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert p.returncode == 2 and b"_hook_json" in p.stderr


def test_hook_dirs_hold_only_the_executable():
    for hp in ("before_network_setup", "after_network_setup", "after_network_setup_fail"):
        names = os.listdir(os.path.join(HOOKS, hp))
        assert names == ["50_qos_hooks"], names
        assert os.access(os.path.join(HOOKS, hp, "50_qos_hooks"), os.X_OK)


# -- the byte-preserving editor ------------------------------------------------------------

_keys = st.text(alphabet=string.ascii_letters + "é☃\"\\ \t", min_size=1, max_size=6)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20),
                     st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=8))
_json = st.recursive(_scalars, lambda c: st.one_of(
    st.lists(c, max_size=3), st.dictionaries(_keys, c, max_size=3)), max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, st.dictionaries(_keys, _json, max_size=4), min_size=1,
                       max_size=4),
       st.dictionaries(_keys, _json, max_size=3), st.integers(0, 3))
def test_vdsm_json_round_trips_and_edits_are_local(networks, options, indent_choice):
    """VDSM writes the file with json.dumps(data) and reads it back with
    json.loads (lib/vdsm/common/hooks.py _runHooksDir): json.dumps(json.loads(x))
    == x for such files, and an edit of one network's hostQos changes that
    member only, whatever the formatting of the file."""
    from qos_hooks.hostnet.decisions import NetworkDecision
    from qos_hooks.hostnet.hostqos import Curve, HostQos
    data = {"request": {"networks": networks, "bondings": {}, "options": options}}
    vdsm_text = json.dumps(data)
    assert json.dumps(json.loads(vdsm_text)) == vdsm_text
    text = json.dumps(data, indent=[None, 1, 4, "\t"][indent_choice])
    qos = HostQos(ls=Curve(m2=3))
    for net in networks:
        doc = json.loads(text)
        assert vdsm_network.edit_request(doc, [NetworkDecision(net, "set", qos)]) is \
            (networks[net].get("hostQos") != qos.to_json())
        want = json.loads(text)
        want["request"]["networks"][net]["hostQos"] = qos.to_json()
        assert doc == want
        assert json.loads(json.dumps(doc)) == want
        stripped = vdsm_network.edit_request(doc, [NetworkDecision(net, "strip", qos)])
        assert stripped
        del want["request"]["networks"][net]["hostQos"]
        assert doc == want
        # nothing to change: no edit (the hook then does not rewrite the file)
        assert not vdsm_network.edit_request(doc, [NetworkDecision(net, "keep", None)])
        if "hostQos" not in networks[net]:
            assert doc == json.loads(text)


def test_empty_out_on_ovs_network_means_none(env, tmp_path):
    req = engine_request({"o": {"nic": "eth3", "switch": "ovs", "hostQos": {"out": {}}}})
    rc, new, err, _ = run_file_hook("before_network_setup", json.dumps(req), env, tmp_path)
    assert rc == 0, err
    assert "hostQos" not in json.loads(new)["request"]["networks"]["o"]
    with open(env["QOS_HOOKS_HOSTNET_STATE"]) as f:
        assert json.load(f)["pending"]["o"]["hostQos"] is None


def test_stale_pending_replaced_by_next_before_hook(env, tmp_path):
    ovs_req = engine_request({"o": {"nic": "eth3", "switch": "ovs",
                                    "hostQos": engine_qos(5, 10)}})
    rc, _, err, _ = run_file_hook("before_network_setup", json.dumps(ovs_req), env, tmp_path)
    assert rc == 0, err
    # supervdsmd died before after_network_setup; the next request is legacy only
    legacy = engine_request({"l": {"nic": "eth0", "hostQos": engine_qos(5, 10)}})
    rc, _, err, _ = run_file_hook("before_network_setup", json.dumps(legacy), env, tmp_path)
    assert rc == 0, err
    with open(env["QOS_HOOKS_HOSTNET_STATE"]) as f:
        assert json.load(f)["pending"] == {}


# -- the OVS mapping (pure) -------------------------------------------------------------

def test_plan_uplink_mapping():
    from qos_hooks.hostnet import ovs as ho
    entries = {
        "a": {"hostQos": {"out": {"ls": {"m2": 30}, "ul": {"m2": 8 * 10 ** 9}}}, "vlan": 10},
        "b": {"hostQos": {"out": {"ls": {"m2": 10}, "rt": {"m2": 5 * 10 ** 9},
                                  "ul": {"m1": 9 * 10 ** 9, "d": 20000,
                                         "m2": 6 * 10 ** 9}}}, "vlan": None},
    }
    ports = [("uplink0", 1, None), ("a", 5, 10), ("vm1", 7, 10), ("b", 6, None)]
    plan = ho.plan_uplink("uplink0", entries, 10 ** 10, "vdsmbr_x", ports)
    qa, qb = sorted(plan.queues, key=lambda q: -q.queue_id)
    assert (qa.network, qa.queue_id, qb.network, qb.queue_id) == ("a", 10, "b", 0)
    # link-share: 30/40 and 10/40 of 10 Gbit/s; b's real-time rate is larger
    assert qa.min_rate == 7500000000 and qa.max_rate == 8 * 10 ** 9
    assert qb.min_rate == 5 * 10 ** 9 and qb.max_rate == 6 * 10 ** 9
    # burst: 1 ms of m2 + one frame; the concave curve's extra volume if larger
    assert qa.burst == 8 * 10 ** 6 + 1514 * 8
    assert qb.burst == (9 - 6) * 10 ** 9 * 20000 // 10 ** 6
    assert plan.flows == (
        "cookie=0x71685f686e000001,priority=100,in_port=5,actions=set_queue:10,NORMAL",
        "cookie=0x71685f686e000001,priority=100,in_port=7,actions=set_queue:10,NORMAL",
        "cookie=0x71685f686e000001,priority=90,dl_vlan=10,actions=set_queue:10,NORMAL")
    assert ho.flow_bundle(plan.flows).splitlines()[0] == \
        "delete cookie=0x71685f686e000001/-1"
    empty = ho.plan_uplink("uplink0", {}, 10 ** 10, "vdsmbr_x", ports)
    assert empty.queues == () and empty.flows == ()
    assert "clear Port uplink0 qos" in empty.commands()[0]
