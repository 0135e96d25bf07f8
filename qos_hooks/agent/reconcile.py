"""One reconcile pass of the agent: many domains, one OVSDB transaction, one verification.

The same plan -> apply -> verify path as ``qos_hooks.ovs.backend.apply_domain``
(``ovs_plan.plan_apply`` per domain, ``ovs_backend.execute`` into the
transaction, ``wait_for_vswitchd``, OVSDB + kernel read-back,
``plan_repair``/reattach for a kernel that lost an htb), with two differences
that a long-running process needs:

* it runs on the agent's persistent ``ovsdb.Connection`` (the IDL replica the
  monitor keeps up to date) instead of opening one per call, and plans every
  domain of a burst against one snapshot, in ONE transaction;
* it explains each change: a :class:`Repair` per port with a short ``kind``
  (for counters) and a sentence naming what was wrong and what was done
  (``libvirt replaced QoS on vnet3 after domiftune: restored average mapping``).

Ownership is the planner's (ovs_plan._plan_port): a QoS that is Neutron's or
nobody's, or libvirt's for another domain, is refused and reported, never touched.
"""

import time
from functools import reduce

from qos_hooks.ovs.backend import _reattach, execute
from qos_hooks.ovs.mapping import DestroyQos, OWNER_LIBVIRT, OWNER_QOS_HOOKS, SetInboundQos, SetPolicing, map_bandwidth, ovsdb_differences, plan_apply, plan_repair, resolve
from qos_hooks.ovs.ovsdb import Deadline
from qos_hooks.core.plan import BACKEND_OVSDB, Plan

# Repair kinds (counter labels)
LIBVIRT_REPLACED = "libvirt-replaced"
MISSING = "missing"
CHANGED = "changed"
POLICING = "policing"
ORPHAN = "orphan"
KERNEL = "kernel-reattach"
CLEARED = "cleared"


class Repair:
    __slots__ = ("domain", "port", "kind", "text")

    def __init__(self, domain, port, kind, text):
        self.domain, self.port, self.kind, self.text = domain, port, kind, text

    def __repr__(self):
        return "Repair(%s, %s, %s)" % (self.port, self.kind, self.text)


class PassResult:
    """What one pass did: repairs, refusals, verification differences."""

    def __init__(self):
        self.repairs = []        # Repair
        self.refused = []        # (domain name, port, detail)
        self.missing = []        # (domain name, label, detail): port not (yet) in OVSDB
        self.differences = ()    # fatal and not, after repair
        self.verified = ()       # domain uuids whose every port verified
        self.attempts = 0
        self.seconds = 0.0
        self.plan = Plan()

    @property
    def fatal(self):
        return tuple(d for d in self.differences if d.fatal)


def _mapping_word(settings):
    return "average mapping" if settings.has_inbound or settings.has_outbound else "no QoS"


def explain(snap, dq, op, after, want):
    """(kind, sentence) for one planned op, from what the snapshot held before."""
    after = " after %s" % after if after else ""
    if isinstance(op, SetInboundQos):
        port = snap.ports.get(op.port)
        qos = snap.qos.get(port.qos) if port is not None and port.qos else None
        if qos is None:
            return MISSING, "no QoS on %s%s: applied %s" % (op.port, after, want)
        if qos.owner == OWNER_LIBVIRT:
            return (LIBVIRT_REPLACED, "libvirt replaced QoS on %s%s: restored %s"
                    % (op.port, after, want))
        if qos.owner == OWNER_QOS_HOOKS:
            return (CHANGED, "QoS on %s differs from the domain's <bandwidth>%s "
                    "(max-rate %s, queue %s): restored %s"
                    % (op.port, after, qos.other_config.get("max-rate"),
                       _queue_text(snap, qos), want))
        return CHANGED, "QoS on %s%s: applied %s" % (op.port, after, want)
    if isinstance(op, SetPolicing):
        if op.rate == 0 and op.burst == 0:
            return CLEARED, "ingress policing on %s%s: cleared (no outbound wanted)" % (
                op.interface, after)
        if (op.previous_rate, op.previous_burst) == (op.rate, op.burst):
            return (LIBVIRT_REPLACED, "libvirt set ingress policing on %s%s: same values "
                    "(%d/%d kbit), now tagged as qos-hooks'" % (op.interface, after, op.rate,
                                                                op.burst))
        return (POLICING, "ingress policing on %s was %s/%s kbit%s: restored %d/%d kbit"
                % (op.interface, op.previous_rate, op.previous_burst, after, op.rate, op.burst))
    if isinstance(op, DestroyQos):
        return ORPHAN, "removed QoS %s of %s%s: %s" % (op.qos_uuid, dq.name or dq.uuid, after,
                                                     op.reason)
    return CHANGED, "%s%s" % (op.describe(), after)


def _queue_text(snap, qos):
    q = snap.queues.get(qos.queues.get(0)) if 0 in qos.queues else None
    if q is None:
        return "none"
    return "min %s max %s" % (q.other_config.get("min-rate"), q.other_config.get("max-rate"))


def run(conn, dqs, *, timeout, remote, netns=None, verify=True, causes=None,
        kernel_check=True, vswitchd_wait=True, verify_unchanged=True):
    """Plan every DomainQos in ``dqs`` against one snapshot, write all ops in one
    transaction, wait for ovs-vswitchd, verify OVSDB (+ kernel), reattach a
    lost htb, verify again.  ``causes``: {domain uuid: "domiftune"...} for the
    log sentences.  Never raises for a refused or missing port: those are in
    the result.  ``verify_unchanged=False``: when nothing had to be written,
    skip the read-back (OVSDB was just planned against and found as desired).

    ``kernel_check``: True reads back every port's htb classes and ingress
    qdisc (one netlink dump per device); ``"qdisc"`` (the periodic safety
    net) reads every port's qdiscs in ONE dump (root htb 1: present where
    inbound is limited) and the classes only of the ports this pass wrote or
    found without their htb; False checks OVSDB only.

    Raises BackendUnavailable / BackendTimeout / ApplyError."""
    t0 = time.monotonic()
    causes = causes or {}
    res = PassResult()
    conn.deadline = Deadline(timeout)
    state = {}

    def build(snap, txn):
        plans, expl, refused, missing = [], [], [], []
        sub = _planning_view(snap, dqs)
        for dq in dqs:
            plan, outcomes = plan_apply(sub, dq, remote=remote)
            execute(conn, txn, plan)
            plans.append(plan)
            wants = {}
            for iface in dq.interfaces:
                settings, _ = map_bandwidth(iface.bandwidth, iface.label)
                if iface.target_dev:
                    wants[iface.target_dev] = _mapping_word(settings)
            for op in plan.for_backend(BACKEND_OVSDB):
                port = getattr(op, "port", None) or getattr(op, "interface", None)
                kind, text = explain(snap, dq, op, causes.get(dq.uuid),
                                     wants.get(port, "average mapping"))
                expl.append(Repair(dq.uuid, port, kind, text))
            for o in outcomes:
                if o.action == "refused":
                    refused.append((dq.name, o.port, o.detail))
                elif o.action in ("not-found", "ambiguous"):
                    missing.append((dq.name, o.mac or o.target_dev, o.detail))
        state.update(expl=expl, refused=refused, missing=missing)
        total = reduce(lambda a, b: a + b, plans, Plan())
        return total, bool(total.for_backend(BACKEND_OVSDB))

    plan, next_cfg, res.attempts = conn.transact(build, comment="qos-hooks agent")
    res.plan = plan
    res.repairs = list(state.get("expl", ()))
    res.refused = list(state.get("refused", ()))
    res.missing = list(state.get("missing", ()))
    if verify and not plan.ops and not verify_unchanged:
        missing_labels = {m[1] for m in res.missing}
        res.verified = tuple(dq.uuid for dq in dqs if not any(
            (i.mac or i.target_dev) in missing_labels for i in dq.interfaces))
    elif verify:
        if vswitchd_wait:
            conn.wait_for_vswitchd(next_cfg)
        after = conn.snapshot()
        written = {getattr(op, "port", None) or getattr(op, "interface", None)
                   for op in plan.ops}
        diffs = _verify(after, dqs, netns, kernel_check, written)
        repairs = plan_repair(after, diffs, remote)
        if repairs.ops:
            _reattach(conn, repairs.ops)
            by_port = {op.port: op for op in repairs.ops}
            for dq in dqs:
                for iface in dq.interfaces:
                    op = by_port.get(iface.target_dev)
                    if op is not None:
                        after = causes.get(dq.uuid)
                        res.repairs.append(Repair(
                            dq.uuid, op.port, KERNEL, "kernel lost the htb of %s%s (%s): "
                            "re-hooked the QoS" % (op.port, " after %s" % after if after else "",
                                                   op.reason)))
            res.plan = res.plan + repairs
            diffs = _verify(conn.snapshot(), dqs, netns, kernel_check, written)
        res.differences = tuple(diffs)
        bad = {d.port for d in diffs if d.fatal}
        missing_labels = {m[1] for m in res.missing}
        res.verified = tuple(
            dq.uuid for dq in dqs
            if not any(i.target_dev in bad or (i.mac or i.target_dev) in missing_labels
                       for i in dq.interfaces))
    res.seconds = time.monotonic() - t0
    return res


def _planning_view(snap, dqs):
    """The snapshot as plan_apply needs it for ``dqs``, with the QoS rows cut
    down to those it can look at: the ones the dqs' ports use, and qos-hooks'
    rows no Port uses (orphan candidates).  Same plan, but planning 1,000
    ports no longer walks every QoS row once per port (ovs_plan._own_orphans)."""
    from qos_hooks.core.records import replace   # records and dataclasses alike
    used_by_any = {p.qos for p in snap.ports.values() if p.qos}
    wanted = set()
    for dq in dqs:
        for iface in dq.interfaces:
            port, _ = resolve(snap, iface)
            if port is not None and port.qos:
                wanted.add(port.qos)
    qos = {u: q for u, q in snap.qos.items()
           if u in wanted or (u not in used_by_any and q.owner == OWNER_QOS_HOOKS)}
    # and every QoS sharing a queue with those (the planner must see that a
    # queue is still used before destroying it)
    queues = {qu for q in qos.values() for qu in q.queues.values()}
    qos.update((u, q) for u, q in snap.qos.items()
               if u not in qos and queues.intersection(q.queues.values()))
    if len(qos) == len(snap.qos):
        return snap
    return replace(snap, qos=qos)


def _verify(snap, dqs, netns, kernel_check, written=()):
    """OVSDB and kernel differences of every port in ``dqs``."""
    diffs, kernel_ports = [], {}
    for dq in dqs:
        for iface in dq.interfaces:
            port, _ = resolve(snap, iface)
            if port is None:
                continue
            settings, _ = map_bandwidth(iface.bandwidth, iface.label)
            diffs.extend(ovsdb_differences(snap, port, settings))
            kernel_ports[port.name] = settings
    if not kernel_ports or not kernel_check:
        return diffs
    from qos_hooks.kernel import tc
    full = kernel_ports
    if kernel_check == "qdisc":
        full = {n: s for n, s in kernel_ports.items() if n in written}
        quick = {n: s for n, s in kernel_ports.items() if n not in written}
        bad = _root_qdisc_missing(quick, netns)
        for name in bad:          # a lost htb: read its classes too, for the repair
            full[name] = kernel_ports[name]
    if full:
        kstate = tc.read_ports(sorted(full), netns)
        for name, settings in sorted(full.items()):
            diffs.extend(tc.kernel_differences(name, settings, kstate[name]))
    return diffs


def _root_qdisc_missing(ports, netns):
    """Ports (wanting inbound QoS) whose root qdisc is not OVS's ``htb 1:``,
    from link look-ups and one qdisc dump of the namespace (qos_hooks.kernel
    .rtnl: a few struct reads per message; pyroute2's full decoding of every
    link and qdisc costs about 1 ms per port here, the whole safety-net
    budget)."""
    from qos_hooks.kernel.rtnl import Rtnl
    from qos_hooks.kernel.tc import TC_H_ROOT
    want = sorted(n for n, s in ports.items() if s.has_inbound)
    if not want:
        return []
    with Rtnl(netns) as nl:
        index = nl.link_indexes(want)
        roots = {idx: (kind, handle) for idx, handle, parent, kind, _ in
                 nl.qdiscs(set(index.values())) if parent == TC_H_ROOT}
    return [n for n in want if n in index and roots.get(index[n]) != ("htb", 0x10000)]