"""The agent's parts that need no libvirtd: its systemd unit (installed, verified by
systemd's own parser), sd_notify, the pid file watch, the metadata element, and
the one-transaction reconcile against a real OVS sandbox, also while a hook's
``apply`` acts on the same ports at the same time (OVSDB transactions with
``verify()`` keep both correct: no lost update, no duplicate or orphaned row).
"""

import os
import re
import socket
import subprocess
import sys
import threading

import pytest
from lxml import etree

from qos_hooks.agent import daemon as agent
from qos_hooks.agent import reconcile as agent_reconcile
from qos_hooks.cli import install as inst
from qos_hooks.ovs import backend as ovs_backend
from qos_hooks.core import policy, profile_meta
from qos_hooks.core.desired import DomainQos, InterfaceQos
from qos_hooks.ovs.mapping import OWNER_KEY, map_bandwidth
from qos_hooks.ovs.ovsdb import Connection, Deadline
from qos_hooks.core.policy import Bandwidth, Rate
from tests import packaging_helpers as ph
from tests.polling import wait_until

UUID = "13000000-0000-4000-8000-000000000013"
BW = Bandwidth(inbound=Rate(average=1250, peak=2500, burst=256),
               outbound=Rate(average=625, burst=128))
BW2 = Bandwidth(inbound=Rate(average=500), outbound=Rate(average=250))


def test_agent_unit_installed_rendered_and_verified(tmp_path):
    ph.need_tools("systemd-analyze")
    for component in ("--libvirt", "--vdsm"):
        root = str(tmp_path / component.strip("-"))
        os.makedirs(root)
        r = subprocess.run([sys.executable, "-m", "qos_hooks", "install", component,
                            "--root", root], capture_output=True, text=True, cwd="/",
                           env=ph.base_env(PYTHONPATH=ph.REPO))
        assert r.returncode == 0, r.stdout + r.stderr
        unit = ph.under(root, inst.AGENT_UNIT)
        with open(unit) as f:
            text = f.read()
        (exec_line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
        assert exec_line.split("=", 1)[1].split() == [sys.executable, "-m", "qos_hooks",
                                                      "agent"]
        for line in ("Type=notify", "Restart=on-failure", "StandardError=journal"):
            assert line in text.splitlines(), line
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", unit],
                           capture_output=True, text=True)
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr
        # not enabled: nothing in a .wants directory
        assert not [d for d, _, _ in os.walk(root) if d.endswith(".wants")]
    with open(os.path.join(ph.REPO, inst.SRC_AGENT_UNIT)) as f:
        assert "ExecStart=/usr/bin/qos-hooks agent\n" in f.read()
    with open(os.path.join(ph.REPO, "rpm", "qos-hooks.spec")) as f:
        spec = f.read()
    assert "%{_unitdir}/qos-hooks-agent.service\n" in spec
    assert "systemd_post qos-hooks-agent" not in spec      # not enabled by default


def test_sd_notify_datagram(tmp_path):
    path = str(tmp_path / "n.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    try:
        assert agent.sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert s.recv(100) == b"READY=1"
    finally:
        s.close()
    assert agent.sd_notify("READY=1", {}) is False


def test_pidfile_watch_sees_a_new_pidfile(tmp_path):
    pid = tmp_path / "ovs-vswitchd.pid"
    pid.write_text("1\n")
    w = agent.PidfileWatch(str(pid))
    try:
        assert w.fd is not None and w.read() is False
        tmp = tmp_path / "ovs-vswitchd.pid.tmp99"        # what make_pidfile does
        tmp.write_text("99\n")
        os.rename(str(tmp), str(pid))
        assert w.read() is True
        assert w.read() is False
        (tmp_path / "other").write_text("x")
        assert w.read() is False
    finally:
        w.close()


def test_profile_meta_round_trip():
    meta = profile_meta.ProfileMeta("gold", "gold")
    el = etree.fromstring(meta.to_xml())
    el = etree.fromstring("<domain><metadata><q:qos xmlns:q='%s' %s/></metadata></domain>"
                          % (profile_meta.NS, " ".join("%s='%s'" % kv for kv in el.items())))
    assert profile_meta.read(el) == meta
    assert profile_meta.read(etree.fromstring("<domain/>")) == profile_meta.ProfileMeta()


@pytest.fixture
def sandbox(ovs_sandbox):
    return ovs_sandbox      # tests/conftest.py: a private OVS in a namespace


def _dq(n, bw):
    return DomainQos(UUID, "qh13", tuple(
        InterfaceQos("52:54:00:13:00:%02x" % i, "qh13p%d" % i, bw) for i in range(n)))


def _add_ports(sb, n):
    for i in range(n):
        sb.add_port("qh13p%d" % i, mac="52:54:00:13:00:%02x" % i,
                    external_ids={"attached-mac": "52:54:00:13:00:%02x" % i})


def _state(sb):
    qos = sb.vsctl_json("QoS")
    queues = sb.vsctl_json("Queue")
    ports = {p["name"]: p["qos"] for p in sb.vsctl_json("Port", "name", "qos")
             if p["name"].startswith("qh13p")}
    return qos, queues, ports


def test_reconcile_repairs_with_reasons_then_nothing_to_do(sandbox):
    sb = sandbox
    _add_ports(sb, 3)
    conn = Connection(sb.remote, Deadline(10))
    try:
        res = agent_reconcile.run(conn, [_dq(3, BW)], timeout=10, remote=sb.remote,
                                  netns=sb.netns, causes={UUID: "hotplug of net0"})
        assert not res.fatal and res.verified == (UUID,)
        texts = [r.text for r in res.repairs]
        assert "no QoS on qh13p0 after hotplug of net0: applied average mapping" in texts
        # libvirt's mapping on one port (its tags, peak as queue max-rate)
        sb.vsctl("--", "set", "Port", "qh13p1", "qos=@q", "--", "--id=@q", "create", "QoS",
                 "type=linux-htb", "other_config:max-rate=20000000", "queues:0=@u",
                 "external_ids:vm-id=%s" % UUID, "--", "--id=@u", "create", "Queue",
                 "other_config:min-rate=10000000", "other_config:max-rate=20000000",
                 "external_ids:vm-id=%s" % UUID, wait=True)
        conn.settle()
        res = agent_reconcile.run(conn, [_dq(3, BW)], timeout=10, remote=sb.remote,
                                  netns=sb.netns, causes={UUID: "domiftune"})
        assert [(r.port, r.kind) for r in res.repairs if r.kind != "orphan"] == [
            ("qh13p1", agent_reconcile.LIBVIRT_REPLACED)]
        assert ("libvirt replaced QoS on qh13p1 after domiftune: restored average mapping"
                in [r.text for r in res.repairs])
        assert not res.fatal
        qos, queues, ports = _state(sb)
        assert len(qos) == 3 and len(queues) == 3
        # nothing to do: no write at all
        res = agent_reconcile.run(conn, [_dq(3, BW)], timeout=10, remote=sb.remote,
                                  netns=sb.netns)
        assert res.repairs == [] and not res.plan.ops and res.verified == (UUID,)
        # the safety net's cheap kernel check (one qdisc dump) finds a lost htb
        # and the reattach repair puts it back
        sb.ns("tc", "qdisc", "del", "dev", "qh13p2", "root")
        res = agent_reconcile.run(conn, [_dq(3, BW)], timeout=10, remote=sb.remote,
                                  netns=sb.netns, kernel_check="qdisc")
        assert [(r.port, r.kind) for r in res.repairs] == [("qh13p2", agent_reconcile.KERNEL)]
        assert not res.fatal
        assert "1:fffe" in sb.tc_text("class", "show", "dev", "qh13p2")
    finally:
        conn.close()


def _libvirt_rows(sb, n):
    """libvirt's own mapping on every port (its vm-id tags, peak as queue max-rate)."""
    args = []
    for i in range(n):
        args += ["--", "set", "Port", "qh13p%d" % i, "qos=@q%d" % i, "--", "--id=@q%d" % i,
                 "create", "QoS", "type=linux-htb", "other_config:max-rate=20000000",
                 "queues:0=@u%d" % i, "external_ids:vm-id=%s" % UUID, "--", "--id=@u%d" % i,
                 "create", "Queue", "other_config:min-rate=10000000",
                 "other_config:max-rate=20000000", "external_ids:vm-id=%s" % UUID]
    sb.vsctl(*args, wait=True)


def test_agent_and_hook_on_the_same_ports_at_once(sandbox):
    """A hotplug seen by both: libvirt's rows on every port, then the agent's
    pass and a hook's ``apply`` (VDSM after_nic_hotplug) run at the same time,
    each on its own OVSDB connection, both replacing libvirt's rows.  Both
    succeed and verify (the loser's transaction gets TRY_AGAIN, replans against
    the winner's rows and finds nothing left to do), and the end state has
    exactly one qos-hooks QoS + Queue per port, libvirt's destroyed, nothing
    orphaned."""
    sb = sandbox
    n = 8
    _add_ports(sb, n)
    want, _ = map_bandwidth(BW)
    for _ in range(3):
        _libvirt_rows(sb, n)
        errors, results = [], {}
        conn = Connection(sb.remote, Deadline(30))
        barrier = threading.Barrier(2)

        def hook():
            try:
                barrier.wait(30)
                results["hook"] = ovs_backend.apply_domain(_dq(n, BW), remote=sb.remote,
                                                           timeout=30, netns=sb.netns)
            except Exception as e:   # reported below
                errors.append(("hook", e))

        def agent_side():
            try:
                conn.settle()
                barrier.wait(30)
                results["agent"] = agent_reconcile.run(conn, [_dq(n, BW)], timeout=30,
                                                       remote=sb.remote, netns=sb.netns)
            except Exception as e:
                errors.append(("agent", e))
        threads = [threading.Thread(target=hook), threading.Thread(target=agent_side)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        conn.close()
        assert errors == []
        assert results["hook"].ok and not results["agent"].fatal
        qos, queues, ports = _state(sb)
        assert len(qos) == n and len(queues) == n, (qos, queues)
        assert all(q["external_ids"].get(OWNER_KEY) == UUID for q in qos)
        assert sorted(ports.values()) == sorted(q["_uuid"] for q in qos)
        assert {int(q["other_config"]["max-rate"]) for q in qos} == {want.qos_max_rate}
        # start the next round from libvirt's rows again
        args = []
        for i in range(n):
            args += ["--", "clear", "Port", "qh13p%d" % i, "qos"]
        sb.vsctl(*(args + ["--", "--all", "destroy", "QoS", "--", "--all", "destroy",
                           "Queue"]), wait=True)


def _wait(pred, what, timeout=60):
    return wait_until(pred, what, timeout)


def test_agent_survives_ovsdb_and_vswitchd_restarts(sandbox, tmp_path):
    """The agent in-process (libvirt's test driver stands in for libvirtd):
    ovsdb-server stopped and started again -> the IDL reconnects and a full
    reconcile runs; ovs-vswitchd restarted -> seen through its pid file, the
    restart pass runs."""
    from qos_hooks.core import policy
    sb = sandbox
    cfg = policy.parse_config("[settings]\novsdb = %s\novsdb_timeout = 5\n" % sb.remote, "t")
    a = agent.Agent(cfg, uri="test:///default", netns=sb.netns, environ={},
                    hostnet_state=str(tmp_path / "absent.json"))
    t = threading.Thread(target=a.run, name="agent")
    t.start()
    h = a.health
    try:
        _wait(lambda: h.to_dict()["reconciles"].get("full"), "the first full reconcile")
        full0 = h.to_dict()["reconciles"]["full"]
        sb.stop_ovsdb()
        _wait(lambda: not h.ovsdb_connected, "the agent to notice OVSDB is gone")
        subprocess.run(["ovsdb-server", os.path.join(sb.dir, "conf.db"),
                        "--remote=punix:" + sb.db_sock,
                        "--pidfile=" + os.path.join(sb.dir, "ovsdb-server.pid"),
                        "--unixctl=" + os.path.join(sb.dir, "ovsdb-server.ctl"),
                        "--log-file=" + os.path.join(sb.dir, "ovsdb-server.log"),
                        "--detach", "--no-chdir"], check=True, env=sb.env)
        _wait(lambda: h.ovsdb_connected and h.to_dict()["reconciles"]["full"] > full0,
              "IDL reconnect and a full reconcile")
        restarts = h.vswitchd_restarts
        sb.restart_vswitchd()
        _wait(lambda: h.vswitchd_restarts > restarts
              and h.to_dict()["reconciles"].get("vswitchd-restart"),
              "the vswitchd restart pass")
        assert t.is_alive()
    finally:
        a.stop()
        t.join(30)
    assert not t.is_alive()


def test_health_metrics_pass_promtool_and_count_right():
    """The agent's health as Prometheus sees it: counters by label, the
    event-to-verified histogram with cumulative buckets, connection gauges;
    promtool accepts the exposition text."""
    import shutil
    from prometheus_client import generate_latest
    from qos_hooks.observe import metrics
    h = agent.Health()
    h.count("reconciles", "event", 3)
    h.count("repairs", "libvirt-mapping")
    h.count("errors", "ovsdb-connect")
    h.set(libvirt_connected=True, ovsdb_connected=False, last_full_reconcile=1700000000.0)
    for s in (0.04, 0.12, 0.12, 0.9, 30.0):
        h.observe("hotplug", s)

    class Empty:
        def describe(self):
            return []

        def collect(self):
            return []
    text = generate_latest(metrics.registry(Empty(), [agent.HealthCollector(h)])).decode()
    assert 'qos_hooks_agent_reconciles_total{trigger="event"} 3.0' in text
    assert 'qos_hooks_agent_repairs_total{reason="libvirt-mapping"} 1.0' in text
    assert 'qos_hooks_agent_errors_total{what="ovsdb-connect"} 1.0' in text
    assert 'qos_hooks_agent_connected{peer="libvirt"} 1.0' in text
    assert 'qos_hooks_agent_connected{peer="ovsdb"} 0.0' in text
    assert "qos_hooks_agent_last_full_reconcile_timestamp_seconds 1.7e+09" in text
    buckets = {le: float(v) for le, v in re.findall(
        r'qos_hooks_agent_event_to_verified_seconds_bucket\{kind="hotplug",le="([^"]+)"\} (\S+)',
        text)}
    assert buckets["0.05"] == 1 and buckets["0.25"] == 3 and buckets["1.0"] == 4
    assert buckets["10.0"] == 4 and buckets["+Inf"] == 5
    assert 'qos_hooks_agent_event_to_verified_seconds_count{kind="hotplug"} 5.0' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        from tests.ovs_sandbox import require
        require("needs promtool (Debian prometheus; tests/install-deps.sh installs it)")
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_metrics_address_parsing():
    assert agent.parse_metrics_address(None) == ("127.0.0.1", 10144)
    assert agent.parse_metrics_address("off") is None
    assert agent.parse_metrics_address("[::1]:9999") == ("::1", 9999)
    from qos_hooks.core.errors import UsageError
    with pytest.raises(UsageError) as e:
        agent.parse_metrics_address("127.0.0.1:99999")
    assert str(e.value).startswith("--metrics '127.0.0.1:99999': want ADDR:PORT")


def test_planning_view_cuts_the_qos_rows_of_a_snapshot():
    """The safety net plans against the QoS rows the request's ports use (and
    qos-hooks' unreferenced ones), not every row of a 1,000-port switch; the
    snapshot is a core.records value (the OVS path imports no dataclasses)."""
    from qos_hooks.ovs import mapping as m
    ifc = m.InterfaceRow("i0", "vnet0", "", 0, 0, {"attached-mac": "52:54:00:13:00:00"})
    port = m.PortRow("p0", "vnet0", "q-used", ("i0",), {})
    other = m.PortRow("p1", "vnet1", "q-other", (), {})
    qos = {"q-used": m.QosRow("q-used", "linux-htb", {}, {}, {}),
           "q-other": m.QosRow("q-other", "linux-htb", {}, {}, {}),
           "q-orphan": m.QosRow("q-orphan", "linux-htb", {}, {},
                                {m.OWNER_KEY: m.OWNER_QOS_HOOKS})}
    snap = m.Snapshot(ports={"vnet0": port, "vnet1": other}, interfaces={"i0": ifc}, qos=qos)
    bw = policy.Bandwidth(inbound=policy.Rate(average=1000))
    dq = DomainQos(UUID, "qh13", (InterfaceQos("52:54:00:13:00:00", "vnet0", bw),))
    view = agent_reconcile._planning_view(snap, [dq])
    assert sorted(view.qos) == ["q-orphan", "q-used"]
    assert view.ports == snap.ports and sorted(snap.qos) == ["q-orphan", "q-other", "q-used"]
