"""Host network QoS on the OVS switch type, against a real ovsdb-server + ovs-vswitchd.

The sandbox (tests/ovs_sandbox.py, netdev datapath in its own namespace)
stands in for what VDSM builds (vdsm lib/vdsm/network/nmstate/ovs/network.py):
a bridge ``vdsmbr_*``, the southbound NIC as a port (the uplink), and per
network a northbound port named like the network, with an access VLAN tag for
VLAN networks.  Namespaces stand in for the networks' host stacks (veth peers).
The hooks run as VDSM runs them (tests/vdsm_runner.py); ovs-vsctl, ovs-ofctl,
ovs-appctl ofproto/trace and tc are the oracles.
"""

import json
import os

import pytest

from qos_hooks.hostnet import ovs as hostnet_ovs
from tests.ovs_sandbox import running_sandbox
from tests.hostnet.test_hostnet import HOOKS, MBIT, ROOT, engine_qos, engine_request
from tests.vdsm_runner import JSON, run_hook_dir

BRIDGE = "vdsmbr_qh5test"
UPLINK = "qh5nic"
NET_VLAN = "qh5v10"
NET_MGMT = "qh5mgmt"


@pytest.fixture
def sandbox():
    with running_sandbox(prefix="qh5", bridge=BRIDGE) as sb:
        sb.add_port(UPLINK)
        sb.add_port(NET_VLAN, ip="10.55.10.2/24")
        sb.vsctl("set", "Port", NET_VLAN, "tag=10")
        sb.add_port(NET_MGMT, ip="10.55.0.2/24")
        yield sb


def hook_env(sb, tmp_path, extra=""):
    conf = tmp_path / "qos-hooks.conf"
    conf.write_text("[settings]\novsdb = %s\novsdb_timeout = 5\n%s\n"
                    "[profile mgmt]\nhost.ls.m2 = 10\nhost.ul.m2 = 20Mbit\n" % (sb.remote, extra))
    e = dict(os.environ)
    e.update({"QOS_HOOKS_CONFIG": str(conf),
              "QOS_HOOKS_HOSTNET_STATE": str(tmp_path / "hostnet.json"),
              "PYTHONPATH": ROOT + os.pathsep + e.get("PYTHONPATH", "")})
    return e


def setup_networks(env, networks):
    """What VDSM's setupNetworks does around the hooks: before_network_setup on
    the request, (VDSM configures the switch: the sandbox already has it), then
    after_network_setup on VDSM's own copy of the request (api.py passes the
    request as it was before the hooks changed it)."""
    req = engine_request(networks)
    before = run_hook_dir(os.path.join(HOOKS, "before_network_setup"), req, kind=JSON,
                          base_env=env)
    assert before.rcs == (0,), before.stderr
    after = run_hook_dir(os.path.join(HOOKS, "after_network_setup"), req, kind=JSON,
                         base_env=env)
    return before, after


def ovs_net(**kw):
    d = {"nic": UPLINK, "switch": "ovs", "bridged": True}
    d.update(kw)
    return d


def our_qos(sb):
    return sb.vsctl_json("QoS", where=["external_ids:%s=%s" % (hostnet_ovs.QOS_OWNER_KEY,
                                                                UPLINK)])


def our_queues(sb):
    return [q for q in sb.vsctl_json("Queue") if hostnet_ovs.OWNER_KEY in q["external_ids"]]


def our_flows(sb):
    out = sb.ns("ovs-ofctl", "dump-flows", BRIDGE,
                "cookie=%#x/-1" % hostnet_ovs.COOKIE).stdout
    return [ln.strip() for ln in out.splitlines() if "cookie=" in ln]


def htb_classes(sb):
    return sb.tc_text("class", "show", "dev", UPLINK)


def trace(sb, in_port):
    return sb.appctl(os.path.join(sb.dir, "ovs-vswitchd.ctl"), "ofproto/trace", BRIDGE,
                     "in_port=%s,dl_dst=ff:ff:ff:ff:ff:ff" % in_port)


def foreign_rows(sb):
    """A libvirt-style QoS + Queue on a VM port: must never be touched."""
    sb.add_port("vnet0")
    sb.vsctl("set", "Port", "vnet0", "qos=@q", "--", "--id=@q", "create", "QoS",
             "type=linux-htb", "other_config:max-rate=1000000",
             "external_ids:vm-id=0f0f", "queues:0=@u", "--", "--id=@u", "create", "Queue",
             "other_config:max-rate=1000000", "external_ids:vm-id=0f0f")
    return snapshot_foreign(sb)


def snapshot_foreign(sb):
    qos = [q for q in sb.vsctl_json("QoS") if "vm-id" in q["external_ids"]]
    queues = [q for q in sb.vsctl_json("Queue") if "vm-id" in q["external_ids"]]
    return json.dumps([qos, queues], sort_keys=True)


def test_apply_update_clear_remove(sandbox, tmp_path):
    sb = sandbox
    env = hook_env(sb, tmp_path)
    foreign = foreign_rows(sb)

    # 1. two networks: VLAN 10 with engine QoS, untagged from a profile
    before, after = setup_networks(env, {
        NET_VLAN: ovs_net(vlan=10, hostQos=engine_qos(30, 50, 10)),
        NET_MGMT: ovs_net(custom={"qos_profile": "mgmt"})})
    assert all("hostQos" not in a for a in before.data["request"]["networks"].values())
    assert after.rcs == (0,), after.stderr
    (qos,) = our_qos(sb)
    assert qos["type"] == "linux-htb"
    assert qos["other_config"]["max-rate"] == str(10 ** 10)    # veth link_speed
    port = sb.vsctl_json("Port", "qos", where=["name=%s" % UPLINK])[0]
    assert port["qos"] == qos["_uuid"]
    queues = {q["external_ids"]["qos-hooks-hostnet"]: q for q in our_queues(sb)}
    assert set(queues) == {NET_VLAN, NET_MGMT}
    # min-rate: the link-share of the 10 Gbit/s link, capped at the upper limit;
    # burst: 1 ms of the upper limit + one frame (tc's default rule)
    assert queues[NET_VLAN]["other_config"] == {"max-rate": str(50 * MBIT),
                                                "min-rate": str(50 * MBIT),
                                                "burst": str(50 * MBIT // 1000 + 1514 * 8)}
    assert queues[NET_MGMT]["other_config"]["max-rate"] == str(20 * MBIT)
    assert qos["queues"] == {10: queues[NET_VLAN]["_uuid"], 0: queues[NET_MGMT]["_uuid"]}
    # the kernel: queue 10 is class 1:b, queue 0 the default class 1:1
    sb.wait_for(lambda: "1:b parent 1:fffe" in htb_classes(sb), "htb class 1:b")
    classes = htb_classes(sb)
    assert "class htb 1:b parent 1:fffe prio 0 rate 50Mbit ceil 50Mbit" in classes
    assert "class htb 1:1 parent 1:fffe prio 0 rate 20Mbit ceil 20Mbit" in classes
    # the steering flows: VLAN 10's northbound port and tagged traffic
    flows = our_flows(sb)
    assert len(flows) == 2
    assert any("dl_vlan=10 actions=set_queue:10,NORMAL" in f for f in flows)
    assert "set_queue:10" in trace(sb, NET_VLAN)
    assert "set_queue" not in trace(sb, NET_MGMT)       # default queue 0
    # status: as desired
    rows = hostnet_ovs.status_rows(sb.remote, 5, env["QOS_HOOKS_HOSTNET_STATE"], sb.netns)
    assert sorted(r.network for r in rows) == [NET_MGMT, NET_VLAN]
    assert all(r.ok for r in rows), [r.describe() for r in rows]

    # 2. drift is reported, naming the network
    sb.vsctl("set", "Queue", queues[NET_VLAN]["_uuid"], "other_config:max-rate=1")
    rows = {r.network: r for r in hostnet_ovs.status_rows(
        sb.remote, 5, env["QOS_HOOKS_HOSTNET_STATE"], sb.netns)}
    assert rows[NET_VLAN].drift == ("max-rate 1, want %d" % (50 * MBIT),)
    assert rows[NET_MGMT].ok

    # 3. update: the same rows change in place (and the drift is repaired)
    _, after = setup_networks(env, {NET_VLAN: ovs_net(vlan=10,
                                                      hostQos=engine_qos(30, 80))})
    assert after.rcs == (0,), after.stderr
    queues2 = {q["external_ids"]["qos-hooks-hostnet"]: q for q in our_queues(sb)}
    assert queues2[NET_VLAN]["_uuid"] == queues[NET_VLAN]["_uuid"]
    assert queues2[NET_VLAN]["other_config"]["max-rate"] == str(80 * MBIT)
    assert our_qos(sb)[0]["_uuid"] == qos["_uuid"]
    assert len(our_qos(sb)) == 1

    # 4. the VLAN network set up again without hostQos: its queue and flows go
    _, after = setup_networks(env, {NET_VLAN: ovs_net(vlan=10)})
    assert after.rcs == (0,), after.stderr
    assert [q["external_ids"]["qos-hooks-hostnet"] for q in our_queues(sb)] == [NET_MGMT]
    assert our_flows(sb) == []
    assert set(our_qos(sb)[0]["queues"]) == {0}

    # 5. the untagged network removed: nothing of ours is left
    _, after = setup_networks(env, {NET_MGMT: {"remove": True}})
    assert after.rcs == (0,), after.stderr
    assert our_qos(sb) == [] and our_queues(sb) == [] and our_flows(sb) == []
    assert sb.vsctl_json("Port", "qos", where=["name=%s" % UPLINK])[0]["qos"] == []
    with open(env["QOS_HOOKS_HOSTNET_STATE"]) as f:
        assert json.load(f) == {"version": 1, "pending": {}, "applied": {}}
    assert snapshot_foreign(sb) == foreign


def test_foreign_qos_on_uplink_left_alone(sandbox, tmp_path):
    sb = sandbox
    env = hook_env(sb, tmp_path)
    sb.vsctl("set", "Port", UPLINK, "qos=@q", "--", "--id=@q", "create", "QoS",
             "type=linux-htb", "other_config:max-rate=123456789",
             "external_ids:owner=someone-else")
    before = sb.vsctl_json("QoS")
    _, after = setup_networks(env, {NET_VLAN: ovs_net(vlan=10,
                                                      hostQos=engine_qos(30, 50))})
    assert after.rcs == (0,)                     # on_error=continue (default)
    assert "did not create" in after.stderr and UPLINK in after.stderr
    assert "ERROR" in after.stderr and "not applied on %s" % UPLINK in after.stderr
    assert sb.vsctl_json("QoS") == before
    assert our_queues(sb) == [] and our_flows(sb) == []
    (row,) = hostnet_ovs.status_rows(sb.remote, 5, env["QOS_HOOKS_HOSTNET_STATE"], sb.netns)
    assert row.network == NET_VLAN and not row.ok
    assert any("not qos-hooks'" in d for d in row.drift)


def test_unreachable_ovsdb_bounded_and_logged(sandbox, tmp_path):
    sb = sandbox
    env = hook_env(sb, tmp_path)
    env_fast = dict(env)
    conf = tmp_path / "fast.conf"
    conf.write_text("[settings]\novsdb = %s\novsdb_timeout = 1\n"
                    "on_error.after_network_setup = fail\n" % sb.remote)
    env_fast["QOS_HOOKS_CONFIG"] = str(conf)
    sb.pause_ovsdb()
    try:
        _, after = setup_networks(env_fast, {NET_VLAN: ovs_net(
            vlan=10, hostQos=engine_qos(30, 50))})
    finally:
        sb.resume_ovsdb()
    assert after.rcs == (1,)         # on_error=fail; VDSM only logs after_* failures
    assert "within 1.0s" in after.stderr and "OVSDB" in after.stderr
    # a later setupNetworks (OVSDB back) applies what is remembered
    _, after = setup_networks(env, {NET_VLAN: ovs_net(vlan=10,
                                                      hostQos=engine_qos(30, 50))})
    assert after.rcs == (0,), after.stderr
    assert len(our_queues(sb)) == 1


def test_vswitchd_restart_loses_flows_status_sees_it_resync_repairs(sandbox, tmp_path):
    sb = sandbox
    env = hook_env(sb, tmp_path)
    state = env["QOS_HOOKS_HOSTNET_STATE"]
    _, after = setup_networks(env, {NET_VLAN: ovs_net(vlan=10,
                                                      hostQos=engine_qos(30, 50))})
    assert after.rcs == (0,), after.stderr
    assert len(our_flows(sb)) == 2
    sb.restart_vswitchd()
    # OpenFlow flows live in ovs-vswitchd only; the QoS rows persist in OVSDB
    assert our_flows(sb) == []
    sb.wait_for(lambda: "1:b parent" in htb_classes(sb), "htb re-created from OVSDB")
    lines, rows, drift = hostnet_ovs.status_section(sb.remote, 5, state, sb.netns)
    assert drift and rows[0]["network"] == NET_VLAN
    assert "steering flow for vlan 10 missing" in lines[0] and lines[0].startswith("DRIFT")
    # the operator's view: `qos-hooks status` lists host networks and exits 7
    cli = status_cli(sb, env, "--json")
    assert cli.returncode == 7, cli.stderr
    (net,) = json.loads(cli.stdout)["host_networks"]
    assert net["network"] == NET_VLAN and net["drift"]
    # `qos-hooks resync` repairs it from the remembered state
    import subprocess
    import sys
    fixed = subprocess.run([sys.executable, "-m", "qos_hooks", "resync", "--ovsdb", sb.remote],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "applied: uplink %s" % UPLINK in fixed.stdout
    assert len(our_flows(sb)) == 2
    lines, rows, drift = hostnet_ovs.status_section(sb.remote, 5, state, sb.netns)
    assert not drift, lines
    assert rows[0]["actual"]["kernel-ceil"] == 50 * MBIT
    cli = status_cli(sb, env)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert any(ln.startswith("ok") and NET_VLAN in ln for ln in cli.stdout.splitlines())


def status_cli(sb, env, *args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "qos_hooks", "status", "--ovsdb", sb.remote,
                           "--netns", sb.netns] + list(args), env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_bridge_removed_by_vdsm_rows_collected(sandbox, tmp_path):
    """VDSM removes the bridge (and with it the uplink Port) when the last
    network goes: the after hook deletes the QoS/Queue rows, which nobody
    else would (root tables)."""
    sb = sandbox
    env = hook_env(sb, tmp_path)
    _, after = setup_networks(env, {NET_VLAN: ovs_net(vlan=10,
                                                      hostQos=engine_qos(30, 50))})
    assert after.rcs == (0,), after.stderr
    assert len(our_qos(sb)) == 1
    sb.vsctl("del-port", BRIDGE, UPLINK, "--", "del-port", BRIDGE, NET_VLAN, wait=True)
    assert len(our_qos(sb)) == 1            # orphaned, still there
    _, after = setup_networks(env, {NET_VLAN: {"remove": True}})
    assert after.rcs == (0,), after.stderr
    assert our_qos(sb) == [] and our_queues(sb) == []
    assert hostnet_ovs.status_rows(sb.remote, 5, env["QOS_HOOKS_HOSTNET_STATE"], sb.netns) == []


def vdsm_hfsc_on_uplink(sb):
    """What VDSM's configurators/qos.py _fresh_qdisc_conf_out leaves on a NIC:
    root qdisc 1389: (hfsc, default class 1388) and an empty ingress qdisc.
    This kernel has neither hfsc nor fq_codel, so an htb with VDSM's handle
    and default class stands in for the hfsc: qos-hooks recognises VDSM's
    qdisc by its handle, as VDSM itself does (netinfo/qos.py get_root_qdisc)."""
    sb.ns("tc", "qdisc", "del", "dev", UPLINK, "root", check=False)
    sb.ns("tc", "qdisc", "add", "dev", UPLINK, "root", "handle", "1389:", "htb",
          "default", "1388")
    sb.ns("tc", "qdisc", "add", "dev", UPLINK, "ingress")
    assert "qdisc htb 1389: root" in sb.tc_text("qdisc", "show", "dev", UPLINK)


def test_switch_type_change_vdsm_hfsc_moved_to_ovs(sandbox, tmp_path):
    """A setupNetworks that changes the switch type takes _change_switch_type
    (lib/vdsm/network/api.py), which skips before_network_setup: VDSM's
    _setup_qos then puts hostQos on the uplink as hfsc although the network
    ends on OVS.  after_network_setup (run in the uplink's namespace, as on a
    host) notices an OVS network whose hostQos it never took out, applies the
    OVS queues and removes VDSM's qdisc."""
    sb = sandbox
    env = hook_env(sb, tmp_path)
    vdsm_hfsc_on_uplink(sb)
    req = engine_request({NET_VLAN: ovs_net(vlan=10, hostQos=engine_qos(30, 50))})
    # no before_network_setup: only the after hook runs
    after = run_hook_dir(os.path.join(HOOKS, "after_network_setup"), req, kind=JSON,
                         base_env=env, argv_prefix=["ip", "netns", "exec", sb.netns])
    assert after.rcs == (0,), after.stderr
    assert "VDSM skips it when the switch type changes" in after.stderr
    assert "removed what VDSM's own host QoS put there: root qdisc 1389: (VDSM's hfsc), " \
           "empty ingress qdisc" in after.stderr
    sb.wait_for(lambda: "1:b parent 1:fffe" in htb_classes(sb), "OVS htb class 1:b")
    qdiscs = sb.tc_text("qdisc", "show", "dev", UPLINK)
    assert "1389:" not in qdiscs and "ingress" not in qdiscs
    assert "qdisc htb 1: root" in qdiscs
    assert "rate 50Mbit ceil 50Mbit" in htb_classes(sb)
    (row,) = hostnet_ovs.status_rows(sb.remote, 5, env["QOS_HOOKS_HOSTNET_STATE"], sb.netns)
    assert row.ok, row.describe()


def test_vdsm_hfsc_over_our_queues_is_drift_resync_repairs(sandbox, tmp_path):
    """VDSM's hfsc replacing the OVS htb of an uplink that already carries our
    QoS (ovs-vswitchd believes its htb is still there and re-installs nothing):
    status names it, with the fix; resync removes it and makes vswitchd
    install the htb again (Port.qos detached and re-attached)."""
    sb = sandbox
    env = hook_env(sb, tmp_path)
    state = env["QOS_HOOKS_HOSTNET_STATE"]
    _, after = setup_networks(env, {NET_VLAN: ovs_net(vlan=10, hostQos=engine_qos(30, 50))})
    assert after.rcs == (0,), after.stderr
    sb.wait_for(lambda: "1:b parent 1:fffe" in htb_classes(sb), "OVS htb class 1:b")
    qos_uuid = our_qos(sb)[0]["_uuid"]
    vdsm_hfsc_on_uplink(sb)
    (row,) = hostnet_ovs.status_rows(sb.remote, 5, state, sb.netns)
    assert not row.ok
    assert row.drift == (hostnet_ovs.VDSM_QDISC_DRIFT % UPLINK,)
    assert "fix: qos-hooks resync" in row.describe()
    import subprocess
    import sys
    fixed = subprocess.run(sb.ns_argv([sys.executable, "-m", "qos_hooks", "resync", "--ovsdb",
                                       sb.remote]), env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "removed what VDSM's own host QoS put there" in fixed.stderr
    sb.wait_for(lambda: "1:b parent 1:fffe" in htb_classes(sb), "OVS htb class 1:b again")
    assert "1389:" not in sb.tc_text("qdisc", "show", "dev", UPLINK)
    assert our_qos(sb)[0]["_uuid"] == qos_uuid           # the same rows, re-attached
    (row,) = hostnet_ovs.status_rows(sb.remote, 5, state, sb.netns)
    assert row.ok, row.describe()
