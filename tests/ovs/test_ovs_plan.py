"""Pure tests of the OVS mapping and planner (no OVS needed)."""

import shlex

import pytest

from qos_hooks.ovs import mapping as P
from qos_hooks.core.desired import DomainQos, InterfaceQos
from qos_hooks.core.errors import InputError, PortRefused
from qos_hooks.core.policy import Bandwidth, Rate

U = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-2222-3333-4444-555555555555"
MAC = "52:54:00:00:00:01"


def bw(inb=None, out=None):
    return Bandwidth(inbound=Rate(**inb) if inb else None, outbound=Rate(**out) if out else None)


def snap(ports=(), qos=(), queues=()):
    """A Snapshot; every port is a VM tap with attached-mac MAC unless its
    Interface external_ids say otherwise (the VM's own port: port_refusal)."""
    s = P.Snapshot()
    for name, iface_ids, qos_uuid, rate in ports:
        iu = "if-" + name
        ids = dict(iface_ids)
        ids.setdefault("attached-mac", MAC)
        s.interfaces[iu] = P.InterfaceRow(iu, name, "", rate, 0, ids)
        s.ports[name] = P.PortRow("p-" + name, name, qos_uuid, (iu,), {})
    for q in qos:
        s.qos[q.uuid] = q
    for q in queues:
        s.queues[q.uuid] = q
    return s


def test_mapping_units_and_directions():
    s, warns = P.map_bandwidth(bw(inb=dict(average=1000, peak=2000, burst=256),
                                  out=dict(average=500, peak=900, burst=128)))
    # VM outbound -> Interface policing, kbit/s and kbit
    assert (s.policing_rate, s.policing_burst) == (4000, 1024)
    # VM inbound -> QoS max-rate = peak, queue min = max = average, burst in bits
    assert s.qos_max_rate == 16000000
    assert (s.queue_min_rate, s.queue_max_rate) == (8000000, 8000000)
    assert s.queue_burst == 256 * 8192
    assert any("outbound peak" in w for w in warns)
    assert any("cannot cap the burst" in w for w in warns)


def test_mapping_without_peak_uses_average_as_max_rate():
    s, warns = P.map_bandwidth(bw(inb=dict(average=1000)))
    assert s.qos_max_rate == s.queue_max_rate == 8000000
    assert s.queue_burst is None and not warns
    assert not s.has_outbound


def test_floor_warns_never_silent():
    s, warns = P.map_bandwidth(bw(inb=dict(average=1000, floor=500)))
    assert any("floor" in w and "no Open vSwitch equivalent" in w for w in warns)


def test_out_of_range_is_an_input_error():
    with pytest.raises(InputError):
        P.map_bandwidth(bw(inb=dict(average=2 ** 40)))


def test_owner_of():
    assert P.owner_of({P.OWNER_KEY: U}) == P.OWNER_QOS_HOOKS
    assert P.owner_of({"vm-id": U, "ifname": "vnet0"}) == P.OWNER_LIBVIRT
    assert P.owner_of({"id": "x", "_type": "min_bw"}) == P.OWNER_NEUTRON
    assert P.owner_of({}) == P.OWNER_UNKNOWN


def dq(*ifaces, uuid=U):
    return DomainQos(uuid, "vm", tuple(ifaces))


def test_plan_creates_then_is_idempotent():
    i = InterfaceQos(MAC, "vnet0", bw(inb=dict(average=1000, burst=64), out=dict(average=100)))
    s = snap(ports=[("vnet0", {"attached-mac": MAC}, None, 0)])
    plan, outcomes = P.plan_apply(s, dq(i))
    kinds = [op.kind for op in plan.ops]
    assert kinds == ["SetInboundQos", "SetPolicing"]
    assert outcomes[0].action == "applied"
    # the state after apply, as OVSDB would hold it
    op = plan.ops[0]
    tags = dict(op.tags())
    q = P.QosRow("qos1", "linux-htb", op.settings.qos_other_config(), {0: "queue1"}, tags)
    qu = P.QueueRow("queue1", op.settings.queue_other_config(), tags)
    ids = dict({"attached-mac": MAC}, **dict(plan.ops[1].tags()))
    s2 = snap(ports=[("vnet0", ids, "qos1", 800)], qos=[q], queues=[qu])
    s2.interfaces["if-vnet0"] = P.InterfaceRow("if-vnet0", "vnet0", "", 800, 0, ids)
    plan2, outcomes2 = P.plan_apply(s2, dq(i))
    assert plan2.ops == () and outcomes2[0].action == "unchanged"
    settings, _ = P.map_bandwidth(i.bandwidth)
    assert P.ovsdb_differences(s2, s2.ports["vnet0"], settings) == []


def test_plan_updates_own_rows_in_place():
    i = InterfaceQos(MAC, "vnet0", bw(inb=dict(average=2000)))
    tags = dict(P._tags(U, MAC, "vnet0"))
    q = P.QosRow("qos1", "linux-htb", {"max-rate": "8000000"}, {0: "queue1"}, tags)
    qu = P.QueueRow("queue1", {"min-rate": "8000000", "max-rate": "8000000"}, tags)
    s = snap(ports=[("vnet0", {}, "qos1", 0)], qos=[q], queues=[qu])
    plan, _ = P.plan_apply(s, dq(i))
    (op,) = plan.ops
    assert op.existing_qos == "qos1" and op.existing_queue == "queue1"
    assert op.qos_max_rate == 16000000


def test_libvirt_qos_of_same_domain_is_replaced_and_destroyed():
    i = InterfaceQos(MAC, "vnet0", bw(inb=dict(average=1000, peak=2000)))
    lv = {"vm-id": U, "ifname": "vnet0"}
    q = P.QosRow("lq", "linux-htb", {"max-rate": "16000000"}, {0: "lqu"}, lv)
    qu = P.QueueRow("lqu", {"min-rate": "8000000", "max-rate": "16000000"}, lv)
    s = snap(ports=[("vnet0", {"vm-id": U}, "lq", 0)], qos=[q], queues=[qu])
    plan, outcomes = P.plan_apply(s, dq(i))
    (op,) = plan.ops
    assert op.supersedes == ("lq",) and op.superseded_queues == ("lqu",)
    assert "destroy QoS lq" in op.commands()[0]
    # mode off: refused, nothing touched
    plan, outcomes = P.plan_apply(s, dq(i), replace_libvirt=False)
    assert plan.ops == () and outcomes[0].action == "refused"


@pytest.mark.parametrize("ids", [{"id": "n1", "_type": "qos"}, {}, {"vm-id": OTHER}])
def test_foreign_qos_is_never_touched(ids):
    i = InterfaceQos(MAC, "vnet0", bw(inb=dict(average=1000)))
    q = P.QosRow("fq", "linux-htb", {"max-rate": "1"}, {}, ids)
    s = snap(ports=[("vnet0", {}, "fq", 0)], qos=[q])
    plan, outcomes = P.plan_apply(s, dq(i))
    assert plan.ops == ()
    assert outcomes[0].action == "refused" and "fq" in outcomes[0].detail


def test_foreign_policing_is_never_touched():
    i = InterfaceQos(MAC, "vnet0", bw(out=dict(average=100)))
    s = snap(ports=[("vnet0", {"iface-id": "neutron-port"}, None, 5000)])
    plan, outcomes = P.plan_apply(s, dq(i))
    assert plan.ops == () and outcomes[0].action == "refused"


def test_lookup_by_mac_and_ambiguity():
    i = InterfaceQos(MAC, None, bw(inb=dict(average=1000)))
    s = snap(ports=[("vnet7", {"attached-mac": MAC}, None, 0)])
    plan, outcomes = P.plan_apply(s, dq(i))
    assert plan.ops[0].port == "vnet7" and outcomes[0].port == "vnet7"
    s = snap(ports=[("vnet7", {"attached-mac": MAC}, None, 0),
                    ("vnet8", {"attached-mac": MAC}, None, 0)])
    plan, outcomes = P.plan_apply(s, dq(i))
    assert plan.ops == () and outcomes[0].action == "ambiguous"


def test_plan_without_ovsdb_notes_it_and_renders_shell():
    i = InterfaceQos(MAC, None, bw(inb=dict(average=1000, burst=10)))
    plan, _ = P.plan_apply(None, dq(i))
    assert any("OVSDB was not read" in n for n in plan.notes)
    cmd = plan.ops[0].commands()[0]
    assert "find Interface external_ids:attached-mac=" in cmd
    assert cmd.startswith("ovs-vsctl --db=unix:/run/openvswitch/db.sock")


def test_commands_are_shell_parseable():
    i = InterfaceQos(MAC, "vnet0", bw(inb=dict(average=1000, burst=10), out=dict(average=5)))
    plan, _ = P.plan_apply(snap(ports=[("vnet0", {}, None, 0)]), dq(i), remote="unix:/x y/db.sock")
    for op in plan.ops:
        argv = shlex.split(op.commands()[0])
        assert argv[:2] == ["ovs-vsctl", "--db=unix:/x y/db.sock"]


def test_clear_by_uuid_by_mac_and_libvirt_leftovers():
    mine = dict(P._tags(U, MAC, "vnet0"))
    other = dict(P._tags(OTHER, "52:54:00:00:00:02", "vnet1"))
    lv_mine = {"vm-id": U, "ifname": "vnet0"}
    lv_other = {"vm-id": OTHER, "ifname": "vnet1"}
    s = snap(ports=[("vnet0", mine, "q1", 100), ("vnet1", other, "q2", 0)],
             qos=[P.QosRow("q1", "linux-htb", {}, {0: "u1"}, mine),
                  P.QosRow("q2", "linux-htb", {}, {0: "u2"}, other),
                  P.QosRow("l1", "linux-htb", {}, {0: "lu1"}, lv_mine),
                  P.QosRow("l2", "linux-htb", {}, {0: "lu2"}, lv_other)],
             queues=[P.QueueRow("u1", {}, mine), P.QueueRow("u2", {}, other),
                     P.QueueRow("lu1", {}, lv_mine), P.QueueRow("lu2", {}, lv_other)])
    plan, _ = P.plan_clear(s, dq())
    destroyed = {op.qos_uuid for op in plan.ops if isinstance(op, P.DestroyQos)}
    assert destroyed == {"q1"}
    plan, _ = P.plan_clear(s, dq(), libvirt_leftovers=True)
    destroyed = {op.qos_uuid for op in plan.ops if isinstance(op, P.DestroyQos)}
    assert destroyed == {"q1", "l1"}
    # hot-unplug: only that MAC, even without a domain uuid
    plan, _ = P.plan_clear(s, dq(InterfaceQos("52:54:00:00:00:02", None, Bandwidth()), uuid=None))
    assert {op.qos_uuid for op in plan.ops if isinstance(op, P.DestroyQos)} == {"q2"}


def test_gc_only_orphans():
    mine = dict(P._tags(U, MAC, "gone0"))
    s = snap(ports=[("vnet0", {}, "q1", 0)],
             qos=[P.QosRow("q1", "linux-htb", {}, {}, dict(P._tags(U, MAC, "vnet0"))),
                  P.QosRow("q2", "linux-htb", {}, {0: "u2"}, mine),
                  P.QosRow("l1", "linux-htb", {}, {}, {"vm-id": OTHER}),
                  P.QosRow("n1", "linux-htb", {}, {}, {"id": "x", "_type": "y"}),
                  P.QosRow("x1", "linux-htb", {}, {}, {})],
             queues=[P.QueueRow("u2", {}, mine), P.QueueRow("u3", {}, mine)])
    plan = P.plan_gc(s)
    assert [(op.kind, getattr(op, "qos_uuid", getattr(op, "queue_uuid", None))) for op in plan.ops] \
        == [("DestroyQos", "q2"), ("DestroyQueue", "u3")]
    plan = P.plan_gc(s, libvirt_leftovers=True)
    assert "l1" in {getattr(op, "qos_uuid", None) for op in plan.ops}
    assert not {"n1", "x1"} & {getattr(op, "qos_uuid", None) for op in plan.ops}


def test_missing_port_is_an_error_only_when_qos_is_wanted():
    s = snap()
    plan, outcomes = P.plan_apply(s, dq(InterfaceQos(MAC, "vnet9", bw(inb=dict(average=1)))))
    assert outcomes[0].action == "not-found" and not outcomes[0].ok
    assert any("no OVS Port named vnet9" in w for w in plan.warnings)
    plan, outcomes = P.plan_apply(s, dq(InterfaceQos(MAC, "vnet9", Bandwidth())))
    assert outcomes[0].ok and plan.ops == ()


def test_importing_the_backend_loads_neither_ovs_nor_pyroute2():
    """The VM-start hook path must not pay for the OVS and netlink libraries."""
    import subprocess
    import sys
    code = ("import sys, qos_hooks.ovs.backend, qos_hooks.ovs.mapping, qos_hooks.ovs.ovsdb, "
            "qos_hooks.kernel.tc, qos_hooks.cli.ovs_commands; "
            "bad = [m for m in ('ovs', 'pyroute2') if m in sys.modules]; "
            "sys.exit('imported: %s' % bad if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], stderr=subprocess.PIPE,
                       universal_newlines=True)
    assert p.returncode == 0, p.stderr


def test_sandbox_requirement_fails_under_ci_and_skips_otherwise(monkeypatch):
    from _pytest.outcomes import Failed, Skipped
    from tests.ovs_sandbox import require
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="needs frobnicator"):
        require("needs frobnicator")
    monkeypatch.delenv("CI")
    with pytest.raises(Skipped, match="needs frobnicator"):
        require("needs frobnicator")


def test_clear_unhooks_every_port_sharing_an_owned_qos_in_one_op():
    mine = dict(P._tags(U, MAC, "vnet0"))
    s = snap(ports=[("vnet0", {}, "q1", 0), ("vnet1", {}, "q1", 0)],
             qos=[P.QosRow("q1", "linux-htb", {}, {0: "u1"}, mine)],
             queues=[P.QueueRow("u1", {}, mine)])
    plan, _ = P.plan_clear(s, dq())
    (op,) = plan.ops
    assert op.ports == ("vnet0", "vnet1") and op.queue_uuids == ("u1",)
    assert op.commands()[0].count("clear Port") == 2
    assert any("several ports" in w for w in plan.warnings)


def test_late_clear_of_a_stopped_domain_spares_the_next_domain_on_a_reused_vnet():
    theirs = dict(P._tags(OTHER, "52:54:00:00:00:02", "vnet0"))
    s = snap(ports=[("vnet0", theirs, "q2", 800)],
             qos=[P.QosRow("q2", "linux-htb", {}, {0: "u2"}, theirs)],
             queues=[P.QueueRow("u2", {}, theirs)])
    stale = dq(InterfaceQos(MAC, "vnet0", Bandwidth()))      # domain U had vnet0 before
    plan, _ = P.plan_clear(s, stale)
    assert plan.ops == ()


def test_repair_only_where_ovsdb_is_right_and_the_kernel_is_not():
    s = snap(ports=[("vnet0", {}, "q1", 0), ("vnet1", {}, "q2", 0), ("vnet2", {}, None, 0)])
    D = P.Difference
    diffs = [D("vnet0", "kernel", "root qdisc", "htb 1:", "noqueue 0:0"),
             D("vnet1", "kernel", "class 1:1", "present", "absent"),
             D("vnet1", "ovsdb", "qos.max-rate", 1, 2),            # OVSDB wrong: apply's job
             D("vnet2", "kernel", "root qdisc", "htb 1:", "none"),  # no QoS to re-hook
             D("vnet0", "kernel", "ingress policer", "x", "y", fatal=False)]
    plan = P.plan_repair(s, diffs)
    assert [(op.port, op.qos_uuid) for op in plan.ops] == [("vnet0", "q1")]
    assert plan.ops[0].commands()[0].endswith("clear Port vnet0 qos")
    assert plan.ops[0].commands()[1].endswith("set Port vnet0 qos=q1")


def test_dpdk_ports_are_refused_not_silently_misconfigured():
    i = InterfaceQos(MAC, "vhu0", bw(inb=dict(average=1000)))
    s = snap(ports=[("vhu0", {}, None, 0)])
    s.interfaces["if-vhu0"] = P.InterfaceRow("if-vhu0", "vhu0", "dpdkvhostuserclient", 0, 0,
                                             {"attached-mac": MAC})
    plan, outcomes = P.plan_apply(s, dq(i))
    assert plan.ops == () and outcomes[0].action == "refused" and "DPDK" in outcomes[0].detail


# -- which ports a request may touch (issue 9 items 1, 2) --------------------------

def _own_snap():
    """vnet0: the VM's tap; br0: the bridge's local port; eth0: an uplink;
    patch0; vnet1: another VM's tap (other MAC); vnet2: same MAC, other vm-id."""
    s = snap(ports=[("vnet0", {"vm-id": U}, None, 0),
                    ("eth0", {"attached-mac": ""}, None, 0),
                    ("vnet1", {"attached-mac": "52:54:00:00:00:09", "vm-id": OTHER}, None, 0),
                    ("vnet2", {"vm-id": OTHER}, None, 0)])
    s.interfaces["if-br0"] = P.InterfaceRow("if-br0", "br0", "internal", 0, 0,
                                            {"attached-mac": MAC})
    s.ports["br0"] = P.PortRow("p-br0", "br0", None, ("if-br0",), {})
    s.interfaces["if-patch0"] = P.InterfaceRow("if-patch0", "patch0", "patch", 0, 0,
                                               {"attached-mac": MAC})
    s.ports["patch0"] = P.PortRow("p-patch0", "patch0", None, ("if-patch0",), {})
    s.interfaces["if-bond0b"] = P.InterfaceRow("if-bond0b", "bond0b", "", 0, 0,
                                               {"attached-mac": MAC})
    s.ports["bond0"] = P.PortRow("p-bond0", "bond0", None, ("if-vnet0", "if-bond0b"), {})
    return P.Snapshot(s.ports, s.interfaces, s.qos, s.queues, 0, 0, frozenset({"br0"}))


@pytest.mark.parametrize("dev,why", [
    ("br0", "bridge br0's own local port"),
    ("eth0", "attached-mac=(none)"),
    ("patch0", "of type patch"),
    ("bond0", "has 2 interfaces"),
    ("vnet1", "attached-mac=52:54:00:00:00:09"),
    ("vnet2", "belongs to domain %s" % OTHER),
])
def test_a_port_that_is_not_the_vms_own_is_refused_naming_it(dev, why):
    i = InterfaceQos(MAC, dev, bw(inb=dict(average=1000), out=dict(average=10)))
    with pytest.raises(PortRefused) as e:
        P.plan_apply(_own_snap(), dq(i))
    assert "port %s" % dev in str(e.value) and why in str(e.value)
    assert e.value.exit_code == 8


def test_the_vms_own_tap_is_planned_and_one_bad_port_refuses_the_whole_request():
    good = InterfaceQos(MAC, "vnet0", bw(inb=dict(average=1000)))
    plan, outcomes = P.plan_apply(_own_snap(), dq(good))
    assert plan.ops and outcomes[0].action == "applied"
    bad = InterfaceQos("52:54:00:00:00:07", "eth0", bw(inb=dict(average=1000)))
    with pytest.raises(PortRefused, match="eth0"):
        P.plan_apply(_own_snap(), dq(good, bad))


def test_a_request_without_a_mac_cannot_prove_the_port_is_the_vms():
    i = InterfaceQos(None, "vnet0", bw(inb=dict(average=1000)))
    with pytest.raises(PortRefused, match="carries no MAC"):
        P.plan_apply(_own_snap(), dq(i))


@pytest.mark.parametrize("second", [
    InterfaceQos("52:54:00:00:00:05", "vnet0", Bandwidth()),      # same target dev
    InterfaceQos(MAC.upper(), "vnet5", Bandwidth()),              # same MAC
])
def test_the_same_port_or_mac_twice_is_refused(second):
    first = InterfaceQos(MAC, "vnet0", bw(inb=dict(average=1000)))
    for planner in (lambda d: P.plan_apply(_own_snap(), d), lambda d: P.plan_apply(None, d),
                    lambda d: P.plan_clear(_own_snap(), d)):
        with pytest.raises(PortRefused, match="appears twice"):
            planner(dq(first, second))


def test_mac_lookup_only_sees_this_vms_interfaces_and_a_mac_not_on_ovs_is_nothing_to_do():
    s = _own_snap()
    # vm-id, where set, must be the domain's: vnet0 (and bond0, whose first
    # Interface is vnet0's) carry vm-id U, so domain OTHER does not see them
    assert [p.name for p in s.ports_by_mac(MAC, OTHER)] == ["br0", "patch0", "vnet2"]
    plain = snap(ports=[("vnet0", {"vm-id": U}, None, 0), ("vnet2", {"vm-id": OTHER}, None, 0)])
    assert [p.name for p in plain.ports_by_mac(MAC, U)] == ["vnet0"]
    i = InterfaceQos(MAC, None, bw(inb=dict(average=1000)))
    plan, outcomes = P.plan_apply(plain, dq(i))
    assert outcomes[0].port == "vnet0" and plan.ops
    stranger = InterfaceQos("52:54:00:00:00:77", None, bw(inb=dict(average=1000)))
    plan, outcomes = P.plan_apply(plain, dq(stranger))
    assert plan.ops == () and outcomes[0].action == "not-on-ovs" and outcomes[0].ok
    assert any("not an Open vSwitch vNIC" in n for n in plan.notes)


# -- clear: interface name, and rows no Port references (issue 16 items 9, 10) -------

def test_source_side_clear_spares_the_migration_destinations_rows():
    src = dict(P._tags(U, MAC, "vnet0"))
    dst = dict(P._tags(U, MAC, "vnet1"))
    s = snap(ports=[("vnet1", dst, "qd", 800)],   # the source's vnet0 is gone already
             qos=[P.QosRow("qd", "linux-htb", {}, {0: "ud"}, dst),
                  P.QosRow("qs", "linux-htb", {}, {0: "us"}, src)],
             queues=[P.QueueRow("ud", {}, dst), P.QueueRow("us", {}, src)])
    plan, _ = P.plan_clear(s, dq(InterfaceQos(MAC, "vnet0", Bandwidth())))
    assert {op.qos_uuid for op in plan.ops if isinstance(op, P.DestroyQos)} == {"qs"}
    assert not [op for op in plan.ops if isinstance(op, P.SetPolicing)]
    # without a target dev (VDSM's getXML()), by MAC: both
    plan, _ = P.plan_clear(s, dq(InterfaceQos(MAC, None, Bandwidth())))
    assert {op.qos_uuid for op in plan.ops if isinstance(op, P.DestroyQos)} == {"qs", "qd"}


def test_clear_removes_the_domains_rows_no_port_references():
    mine0 = dict(P._tags(U, MAC, "vnet0"))
    detached = dict(P._tags(U, "52:54:00:00:00:02", "vnet1"))
    theirs = dict(P._tags(OTHER, "52:54:00:00:00:03", "vnet9"))
    s = snap(ports=[("vnet0", mine0, "q0", 0)],
             qos=[P.QosRow("q0", "linux-htb", {}, {0: "u0"}, mine0),
                  P.QosRow("q1", "linux-htb", {}, {0: "u1"}, detached),
                  P.QosRow("q9", "linux-htb", {}, {0: "u9"}, theirs)],
             queues=[P.QueueRow("u0", {}, mine0), P.QueueRow("u1", {}, detached),
                     P.QueueRow("u9", {}, theirs), P.QueueRow("ux", {}, detached)])
    plan, _ = P.plan_clear(s, dq(InterfaceQos(MAC, "vnet0", Bandwidth())))
    assert {op.qos_uuid for op in plan.ops if isinstance(op, P.DestroyQos)} == {"q0", "q1"}
    assert {op.queue_uuid for op in plan.ops if isinstance(op, P.DestroyQueue)} == {"ux"}
    assert "u9" not in {q for op in plan.ops for q in getattr(op, "queue_uuids", ())}


def test_interface_documents_without_virtualport_are_looked_up_by_mac():
    from qos_hooks.core import desired
    from qos_hooks.core.domxml import DomainDoc
    getxml = ("<interface type='bridge'><mac address='52:54:00:AA:00:01'/>"
              "<model type='virtio'/><source bridge='%s'/><link state='up'/>"
              "<bandwidth><inbound average='250'/></bandwidth>"
              "<alias name='ua-1'/></interface>")
    doc = DomainDoc(getxml % "ovsnet", allow_interface=True)
    (i,) = desired.domain_qos(doc).interfaces
    assert (i.mac, i.target_dev, i.bandwidth.inbound.average) == ("52:54:00:aa:00:01", None, 250)
    doc = DomainDoc(getxml % "lxbr0", allow_interface=True)
    assert desired.domain_qos(doc, not_ovs_bridge=lambda b: b == "lxbr0").interfaces == ()
    # a whole domain: only <virtualport type='openvswitch'/> counts, as before
    dom = DomainDoc("<domain><name>x</name><devices>%s</devices></domain>"
                    % (getxml % "ovsnet"))
    assert desired.domain_qos(dom).interfaces == ()
