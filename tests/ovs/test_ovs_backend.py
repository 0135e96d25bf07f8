"""The OVS backend against a real ovsdb-server + ovs-vswitchd (tests/ovs_sandbox.py).

Oracles: ``ovs-vsctl`` and ``tc`` (qdiscs as ``tc -j``; iproute2 here prints
htb classes as text even with -j), never the code under test.
"""

import concurrent.futures
import multiprocessing
import re

import pytest

from qos_hooks.ovs import backend as ovs_backend
from qos_hooks.core.desired import DomainQos, InterfaceQos
from qos_hooks.core.errors import (BackendTimeout, BackendUnavailable, OwnershipError, VerifyError)
from qos_hooks.ovs.mapping import OWNER_KEY
from qos_hooks.core.policy import Bandwidth, Rate

pytestmark = [pytest.mark.root, pytest.mark.ovs]

U = "6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e"
OTHER = "0d5e2a9c-1111-4c3e-9a57-1d2f3b4c5d6e"
MAC = "52:54:00:6b:1f:01"
TIMEOUT = 20   # generous: the CPU is shared; the default (5 s) is tested in test_ovs_cli

BW = Bandwidth(inbound=Rate(average=1000, peak=2000, burst=256),
               outbound=Rate(average=500, burst=128))


def dq_for(*ifaces, uuid=U):
    return DomainQos(uuid, "web01", tuple(ifaces))


def iface(dev="vnet0", mac=MAC, bw=BW):
    return InterfaceQos(mac, dev, bw)


def qdiscs(sb, dev):
    return {(q["kind"], q["handle"]) for q in sb.tc_json("qdisc", "show", "dev", dev)}


def htb_classes(sb, dev):
    """{classid: (rate, ceil)} from ``tc class show`` (text: see module docstring)."""
    out = {}
    for line in sb.tc_text("class", "show", "dev", dev).splitlines():
        m = re.match(r"class htb (\S+) .*rate (\S+) ceil (\S+)", line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def rows(sb, table):
    return {r["_uuid"]: r for r in sb.vsctl_json(table)}


def owned(sb, table):
    return [r for r in sb.vsctl_json(table) if OWNER_KEY in r["external_ids"]]


def apply(sb, dq, **kw):
    kw.setdefault("timeout", TIMEOUT)
    return ovs_backend.apply_domain(dq, remote=sb.remote, netns=sb.netns, **kw)


def test_regression_ovs_deletes_libvirt_qdiscs_apply_survives_restart(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_veth("vnet0")
    # what libvirt's tc mapping puts on a tap (virnetdevbandwidth.c)
    sb.ns("tc", "qdisc", "add", "dev", "vnet0", "root", "handle", "1:", "htb", "default", "1")
    sb.ns("tc", "class", "add", "dev", "vnet0", "parent", "1:", "classid", "1:1", "htb",
          "rate", "1000kbps", "ceil", "2000kbps", "burst", "256kb")
    sb.ns("tc", "qdisc", "add", "dev", "vnet0", "ingress")
    assert {("htb", "1:"), ("ingress", "ffff:")} <= qdiscs(sb, "vnet0")
    sb.vsctl("add-port", sb.bridge, "vnet0", "--", "set", "Interface", "vnet0",
             "external_ids:attached-mac=\"%s\"" % MAC, wait=True)
    # the bug: ovs-vswitchd deleted both
    gone = qdiscs(sb, "vnet0")
    assert ("htb", "1:") not in gone and ("ingress", "ffff:") not in gone

    report = apply(sb, dq_for(iface()))
    assert report.ok
    port_qos = sb.vsctl("get", "Port", "vnet0", "qos").strip()
    assert port_qos != "[]"
    assert sb.vsctl("get", "QoS", port_qos, "type").strip() == "linux-htb"
    assert sb.vsctl("get", "QoS", port_qos, "other_config:max-rate").strip() == '"16000000"'
    assert sb.vsctl("get", "Interface", "vnet0", "ingress_policing_rate").strip() == "4000"
    assert sb.vsctl("get", "Interface", "vnet0", "ingress_policing_burst").strip() == "1024"
    want = {"1:fffe": ("16Mbit", "16Mbit"), "1:1": ("8Mbit", "8Mbit")}
    assert htb_classes(sb, "vnet0") == want
    # VM outbound: whatever the kernel did with OVS's policer is reported as it is.
    # Oracle: tc.  This machine's kernel has no 'police' action, so no filter.
    has_filter = bool(sb.tc_text("filter", "show", "dev", "vnet0", "ingress").strip())
    unenforced = [d for d in report.differences if d.key == "ingress policer"]
    assert bool(unenforced) == (not has_filter)
    assert all(not d.fatal and "NOT limited" in d.note for d in unenforced)

    sb.restart_vswitchd()
    sb.wait_for(lambda: htb_classes(sb, "vnet0") == want, "htb classes after restart")
    assert sb.vsctl("get", "Port", "vnet0", "qos").strip() == port_qos
    st = ovs_backend.status(dq_for(iface()), remote=sb.remote, timeout=TIMEOUT, netns=sb.netns)
    assert not st.drift, st.to_dict()


def test_apply_twice_no_duplicates_then_clear_leaves_nothing(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    apply(sb, dq_for(iface()))
    first = (rows(sb, "QoS"), rows(sb, "Queue"))
    r2 = apply(sb, dq_for(iface()))
    assert r2.plan.ops == () and [o.action for o in r2.outcomes] == ["unchanged"]
    assert (rows(sb, "QoS"), rows(sb, "Queue")) == first
    assert len(first[0]) == 1 and len(first[1]) == 1
    # a changed rate updates our rows in place: still one of each
    faster = Bandwidth(inbound=Rate(average=3000))
    apply(sb, dq_for(iface(bw=faster)))
    assert set(rows(sb, "QoS")) == set(first[0]) and set(rows(sb, "Queue")) == set(first[1])
    assert sb.vsctl("get", "Interface", "vnet0", "ingress_policing_rate").strip() == "0"

    ovs_backend.clear_domain(dq_for(), remote=sb.remote, timeout=TIMEOUT)
    assert owned(sb, "QoS") == [] and owned(sb, "Queue") == []
    assert sb.vsctl("get", "Port", "vnet0", "qos").strip() == "[]"
    ids = sb.vsctl_json("Interface", "name", "external_ids", where=["name=vnet0"])[0]
    assert not [k for k in ids["external_ids"] if k.startswith("qos-hooks")]
    assert ids["external_ids"]["attached-mac"] == MAC


def _foreign_rows(sb):
    """libvirt-tagged (other domain), Neutron-tagged and untagged rows, some on ports."""
    sb.add_port("vnet1", isolated=False)
    sb.add_port("tap-n", isolated=False, external_ids={"attached-mac": "52:54:00:00:00:99"})
    sb.vsctl("set", "Port", "vnet1", "qos=@q", "--", "--id=@q", "create", "QoS", "type=linux-htb",
             "other_config:max-rate=5000000", "queues:0=@u",
             "external_ids:vm-id=%s" % OTHER, "external_ids:ifname=vnet1",
             "--", "--id=@u", "create", "Queue", "other_config:min-rate=1000000",
             "external_ids:vm-id=%s" % OTHER)
    sb.vsctl("set", "Port", "tap-n", "qos=@q", "--", "--id=@q", "create", "QoS",
             "type=linux-htb", "other_config:max-rate=7000000", "external_ids:id=neutron-1",
             "external_ids:_type=min_bw")
    sb.vsctl("set", "Interface", "tap-n", "ingress_policing_rate=3000",
             "external_ids:iface-id=neutron-port-1")
    sb.vsctl("create", "QoS", "type=linux-htb", "other_config:max-rate=1")
    sb.vsctl("create", "Queue", "other_config:min-rate=1")
    sb.vsctl("create", "QoS", "type=linux-htb", "external_ids:vm-id=%s" % OTHER)  # leftover


def _all_rows(sb):
    return {t: rows(sb, t) for t in ("QoS", "Queue", "Port", "Interface")}


def _foreign_view(snapshot):
    """Everything except qos-hooks rows and the columns qos-hooks may write on vnet0."""
    out = {}
    for t, rs in snapshot.items():
        for u, r in rs.items():
            if OWNER_KEY in r.get("external_ids", {}):
                continue
            r = dict(r)
            if r.get("name") == "vnet0":
                continue
            r.pop("statistics", None)
            r.pop("status", None)
            out[(t, u)] = r
    return out


def test_foreign_rows_are_never_changed(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    _foreign_rows(sb)
    before = _foreign_view(_all_rows(sb))
    apply(sb, dq_for(iface()))
    apply(sb, dq_for(iface(bw=Bandwidth(inbound=Rate(average=10)))))
    ovs_backend.gc(remote=sb.remote, timeout=TIMEOUT)
    ovs_backend.clear_domain(dq_for(), remote=sb.remote, timeout=TIMEOUT, libvirt_leftovers=True)
    assert _foreign_view(_all_rows(sb)) == before

    # a port with Neutron's QoS and policing: refused, reported, untouched
    neutron = dq_for(iface("tap-n", "52:54:00:00:00:99"))
    with pytest.raises(OwnershipError) as exc:
        apply(sb, neutron)
    assert "neutron" in str(exc.value)
    assert exc.value.report.plan.ops == ()
    assert _foreign_view(_all_rows(sb)) == before


def test_libvirt_qos_of_this_domain_replaced_and_leftovers_cleared(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC, "vm-id": U})
    # what libvirt >= 7.10 writes for <bandwidth> on an OVS port (virnetdevopenvswitch.c)
    sb.vsctl("set", "Port", "vnet0", "qos=@q", "--", "--id=@q", "create", "QoS",
             "type=linux-htb", "other_config:max-rate=16000000", "queues:0=@u",
             "external_ids:vm-id=%s" % U, "external_ids:ifname=vnet0",
             "--", "--id=@u", "create", "Queue", "other_config:min-rate=8000000",
             "other_config:max-rate=16000000", "other_config:burst=2097152",
             "external_ids:vm-id=%s" % U, "external_ids:ifname=vnet0",
             "--", "set", "Interface", "vnet0", "ingress_policing_rate=4000")
    libvirt_rows = {r["_uuid"] for t in ("QoS", "Queue") for r in sb.vsctl_json(t)}
    apply(sb, dq_for(iface()))
    now = {r["_uuid"] for t in ("QoS", "Queue") for r in sb.vsctl_json(t)}
    assert not (now & libvirt_rows), "libvirt's superseded rows must be destroyed"
    assert len(owned(sb, "QoS")) == 1 and len(owned(sb, "Queue")) == 1

    # libvirt 9.0 leftovers of this domain (no Port uses them) and of another domain
    for dom in (U, U, OTHER):
        sb.vsctl("create", "QoS", "type=linux-htb", "queues:0=@u", "external_ids:vm-id=%s" % dom,
                 "--", "--id=@u", "create", "Queue", "external_ids:vm-id=%s" % dom)
    ovs_backend.clear_domain(dq_for(), remote=sb.remote, timeout=TIMEOUT, libvirt_leftovers=True)
    for t in ("QoS", "Queue"):
        left = [r for r in sb.vsctl_json(t)
                if r["external_ids"].get("vm-id") == U or OWNER_KEY in r["external_ids"]]
        assert left == [], (t, left)
        assert [r for r in sb.vsctl_json(t) if r["external_ids"].get("vm-id") == OTHER]


def test_port_found_by_attached_mac(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet5", isolated=False, external_ids={"attached-mac": MAC})
    report = apply(sb, dq_for(InterfaceQos(MAC, None, BW)))
    assert [o.port for o in report.outcomes] == ["vnet5"]
    assert sb.vsctl("get", "Port", "vnet5", "qos").strip() != "[]"
    # hot-unplug: clear by MAC only, without a domain uuid
    ovs_backend.clear_domain(DomainQos(None, None, (InterfaceQos(MAC, None, Bandwidth()),)),
                             remote=sb.remote, timeout=TIMEOUT)
    assert owned(sb, "QoS") == [] and sb.vsctl("get", "Port", "vnet5", "qos").strip() == "[]"


def test_gc_removes_orphans_only(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    sb.add_port("vnet1", isolated=False, external_ids={"attached-mac": "52:54:00:00:00:02"})
    apply(sb, dq_for(iface(), iface("vnet1", "52:54:00:00:00:02")))
    sb.create_leftover = sb.vsctl("create", "QoS", "type=linux-htb",
                                  "external_ids:vm-id=%s" % OTHER).strip()
    sb.del_port("vnet1")
    dry = ovs_backend.gc(remote=sb.remote, timeout=TIMEOUT, dry_run=True)
    assert len(dry.plan.ops) == 1 and len(owned(sb, "QoS")) == 2
    ovs_backend.gc(remote=sb.remote, timeout=TIMEOUT)
    assert [r["external_ids"]["qos-hooks-ifname"] for r in owned(sb, "QoS")] == ["vnet0"]
    assert len(owned(sb, "Queue")) == 1
    assert sb.create_leftover in rows(sb, "QoS")
    ovs_backend.gc(remote=sb.remote, timeout=TIMEOUT, libvirt_leftovers=True)
    assert sb.create_leftover not in rows(sb, "QoS")


def test_verify_reports_drift_made_behind_our_back(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    apply(sb, dq_for(iface()))
    sb.ns("tc", "class", "change", "dev", "vnet0", "parent", "1:fffe", "classid", "1:1", "htb",
          "rate", "1mbit", "ceil", "1mbit")
    st = ovs_backend.status(dq_for(iface()), remote=sb.remote, timeout=TIMEOUT, netns=sb.netns)
    assert st.drift
    assert any(d.layer == "kernel" and "1:1" in d.key for p in st.ports for d in p.differences)


def test_ovsdb_down_and_hung_give_clear_errors(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    sb.pause_ovsdb()
    try:
        with pytest.raises(BackendTimeout) as exc:
            apply(sb, dq_for(iface()), timeout=1.0)
        assert "within 1.0s" in str(exc.value)
    finally:
        sb.resume_ovsdb()
    sb.stop_ovsdb()
    for call in (lambda: apply(sb, dq_for(iface()), timeout=1.0),
                 lambda: ovs_backend.clear_domain(dq_for(), remote=sb.remote, timeout=1.0),
                 lambda: ovs_backend.gc(remote=sb.remote, timeout=1.0),
                 lambda: ovs_backend.status(remote=sb.remote, timeout=1.0)):
        with pytest.raises(BackendUnavailable) as exc:
            call()
        assert sb.remote in str(exc.value)


def test_32_parallel_applies_all_land(ovs_sandbox):
    sb = ovs_sandbox
    n = 32
    doms = []
    for i in range(n):
        mac = "52:54:00:00:01:%02x" % i
        sb.add_port("vnet%d" % i, isolated=False, external_ids={"attached-mac": mac}, wait=False)
        doms.append(DomainQos("00000000-0000-4000-8000-%012d" % i, "vm%d" % i,
                              (InterfaceQos(mac, "vnet%d" % i,
                                            Bandwidth(inbound=Rate(average=100 + i, burst=10 + i),
                                                      outbound=Rate(average=50 + i))),)))
    # separate processes, like 32 hooks of 32 VMs starting together
    ctx = multiprocessing.get_context("spawn")   # no fork of a process with threads
    with concurrent.futures.ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = [pool.submit(ovs_backend.apply_domain, d, remote=sb.remote, timeout=120,
                               verify=False) for d in doms]
        reports = [f.result() for f in futures]
    assert all(r.ok for r in reports)
    qos = {r["external_ids"]["qos-hooks-ifname"]: r for r in owned(sb, "QoS")}
    queues = owned(sb, "Queue")
    assert len(qos) == n and len(owned(sb, "QoS")) == n and len(queues) == n
    for i in range(n):
        port_qos = sb.vsctl("get", "Port", "vnet%d" % i, "qos").strip()
        assert port_qos == qos["vnet%d" % i]["_uuid"]
        assert qos["vnet%d" % i]["other_config"]["max-rate"] == str((100 + i) * 8000)
        assert sb.vsctl("get", "Interface", "vnet%d" % i,
                        "ingress_policing_rate").strip() == str((50 + i) * 8)


def test_verify_error_when_vswitchd_not_applying(ovs_sandbox):
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    sb.stop_vswitchd()
    with pytest.raises(VerifyError) as exc:
        apply(sb, dq_for(iface()), timeout=1.5)
    assert "ovs-vswitchd did not apply" in str(exc.value)
    assert "it applied nothing meanwhile (is ovs-vswitchd running?)" in str(exc.value)
    assert len(exc.value.report.plan.ops) == 2   # what was written
    # the OVSDB write itself happened: a second apply has nothing to do
    r = apply(sb, dq_for(iface()), verify=False, timeout=5)
    assert r.ok and r.plan.ops == ()


def test_a_busy_vswitchd_is_not_a_dead_one(ovs_sandbox):
    """What a mass start on a big switch looks like in OVSDB (measured with
    bench/bench_ovs_apply.py --concurrent 64x16 on 1024 ports): ovs-vswitchd
    keeps applying configurations, but reaches ours only after the bound.
    Here a stand-in advances cur_cfg to one short of next_cfg, as the busy
    daemon did (the real one is stopped, so it cannot catch up).  The
    backend raises VswitchdBusy, saying it is busy; the hooks' call
    (qos_hooks.priv.helper.backend_apply) makes it a warning."""
    import threading
    import time
    from qos_hooks.core.errors import VswitchdBusy
    from qos_hooks.priv import helper as privhelper
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    sb.stop_vswitchd()
    stop = threading.Event()

    def busy_vswitchd():
        while not stop.is_set():
            nxt = int(sb.vsctl("get", "Open_vSwitch", ".", "next_cfg").strip())
            cur = int(sb.vsctl("get", "Open_vSwitch", ".", "cur_cfg").strip())
            if nxt - 1 > cur:
                sb.vsctl("set", "Open_vSwitch", ".", "cur_cfg=%d" % (nxt - 1))
            time.sleep(0.05)
    # other VMs' transactions ahead of ours: the daemon is behind already
    cur = int(sb.vsctl("get", "Open_vSwitch", ".", "cur_cfg").strip())
    sb.vsctl("set", "Open_vSwitch", ".", "next_cfg=%d" % (cur + 5))
    t = threading.Thread(target=busy_vswitchd)
    t.start()
    try:
        with pytest.raises(VswitchdBusy) as exc:
            apply(sb, dq_for(iface()), timeout=1.5)
        assert "it is busy (it has applied configuration" in str(exc.value)
        assert "the OVSDB transaction was committed" in str(exc.value)

        class Config:
            class settings:
                ovsdb, ovsdb_timeout = sb.remote, 1.5
        report = privhelper.backend_apply(dq_for(iface(bw=Bandwidth(
            inbound=Rate(average=777)))), Config)
        assert report.action == "apply" and report.plan.ops
    finally:
        stop.set()
        t.join()


def test_api_surface():
    import inspect
    sig = inspect.signature(ovs_backend.apply_domain)
    assert list(sig.parameters)[:1] == ["dq"]
    for name in ("remote", "timeout", "verify", "replace_libvirt", "netns"):
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    sig = inspect.signature(ovs_backend.clear_domain)
    assert sig.parameters["libvirt_leftovers"].default is False
    assert issubclass(VerifyError, Exception)


def test_conflicting_writer_forces_a_replay_and_loses_nothing(ovs_sandbox, monkeypatch):
    """A concurrent write to a column our decision read (Interface external_ids)
    between our read and our commit: verify() makes the commit TRY_AGAIN, the
    transaction is re-planned and replayed, and the other writer's key stays."""
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    real = ovs_backend.plan_apply
    calls = []

    def racing_plan_apply(snap, dq, **kw):
        calls.append(1)
        if len(calls) == 1:   # after our snapshot, before our commit
            sb.vsctl("set", "Interface", "vnet0", "external_ids:other-writer=1")
        return real(snap, dq, **kw)
    monkeypatch.setattr(ovs_backend, "plan_apply", racing_plan_apply)
    report = apply(sb, dq_for(iface()))
    assert report.attempts == 2 and len(calls) >= 2
    ids = sb.vsctl_json("Interface", "external_ids", where=["name=vnet0"])[0]["external_ids"]
    assert ids["other-writer"] == "1" and ids[OWNER_KEY] == U and ids["attached-mac"] == MAC
    assert len(owned(sb, "QoS")) == 1 and len(owned(sb, "Queue")) == 1


def test_apply_after_libvirt_changed_the_bandwidth_leaves_one_qos(ovs_sandbox):
    """libvirt's updateDevice/setInterfaceParameters on an OVS port points Port.qos
    at a new QoS of its own (virnetdevopenvswitch.c finds no queue tagged for it),
    leaving ours unreferenced: the next apply replaces libvirt's and removes ours."""
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC, "vm-id": U})
    apply(sb, dq_for(iface()))
    ours = owned(sb, "QoS")[0]["_uuid"]
    sb.vsctl("set", "port", "vnet0", "qos=@qos1", "--", "--id=@qos1", "create", "qos",
             "type=linux-htb", "other_config:min-rate=24000000", "queues:0=@queue0",
             'external-ids:vm-id="%s"' % U, 'external-ids:ifname="vnet0"', "--",
             "--id=@queue0", "create", "queue", "other_config:min-rate=24000000",
             'external-ids:vm-id="%s"' % U, 'external-ids:ifname="vnet0"', wait=True)
    apply(sb, dq_for(iface(bw=Bandwidth(inbound=Rate(average=3000)))))
    assert len(rows(sb, "QoS")) == 1 and len(rows(sb, "Queue")) == 1
    (now,) = owned(sb, "QoS")
    assert now["_uuid"] != ours and sb.vsctl("get", "Port", "vnet0", "qos").strip() == now["_uuid"]


def test_apply_repairs_an_htb_deleted_behind_ovs_back(ovs_sandbox):
    """ovs-vswitchd does not notice `tc qdisc del` (its tc state is cached): status
    shows the drift, apply unhooks and re-hooks the QoS and the htb is back."""
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    apply(sb, dq_for(iface()))
    qos = sb.vsctl("get", "Port", "vnet0", "qos").strip()
    want = htb_classes(sb, "vnet0")
    sb.ns("tc", "qdisc", "del", "dev", "vnet0", "root")
    assert htb_classes(sb, "vnet0") == {}
    st = ovs_backend.status(dq_for(iface()), remote=sb.remote, timeout=TIMEOUT, netns=sb.netns)
    assert st.drift
    report = apply(sb, dq_for(iface()))
    assert [op.kind for op in report.plan.ops] == ["ReattachQos"]
    assert htb_classes(sb, "vnet0") == want
    assert sb.vsctl("get", "Port", "vnet0", "qos").strip() == qos   # same rows
    assert not [d for d in report.differences if d.fatal]


def test_tap_port_like_a_real_vm(ovs_sandbox):
    """libvirt gives a VM a tap, not a veth: same rows, same htb."""
    sb = ovs_sandbox
    sb.add_tap_port("vnet0", external_ids={"attached-mac": MAC, "vm-id": U})
    report = apply(sb, dq_for(InterfaceQos(MAC, None, BW)))
    assert [o.port for o in report.outcomes] == ["vnet0"]
    assert htb_classes(sb, "vnet0") == {"1:fffe": ("16Mbit", "16Mbit"), "1:1": ("8Mbit", "8Mbit")}
    ovs_backend.clear_domain(dq_for(), remote=sb.remote, timeout=TIMEOUT)
    sb.wait_for(lambda: htb_classes(sb, "vnet0") == {}, "OVS to remove its htb after clear")
