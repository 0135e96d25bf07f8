"""The Open vSwitch backend: apply, clear, garbage-collect and check VM QoS in OVSDB.

Public API (called by the hooks, the root helper and the CLI; stable)::

    apply_domain(dq, *, remote=DEFAULT_OVSDB, timeout=5.0, verify=True,
                 replace_libvirt=True, netns=None, repair=True) -> BackendReport
    clear_domain(dq, *, remote=DEFAULT_OVSDB, timeout=5.0,
                 libvirt_leftovers=False, netns=None) -> BackendReport
    gc(*, remote=DEFAULT_OVSDB, timeout=5.0, dry_run=False,
       libvirt_leftovers=False) -> BackendReport
    status(dq=None, *, remote=DEFAULT_OVSDB, timeout=5.0, netns=None) -> StatusReport

* ``dq`` is a :class:`qos_hooks.core.desired.DomainQos` (bandwidth in libvirt units,
  guest point of view).  Each interface is found by ``target_dev`` (the Port /
  Interface name, ``vnetN``) or, when that is None (VDSM ``after_nic_hotplug``
  and the ``Interface.getXML()`` documents of ``after_update_device`` /
  ``after_nic_hotunplug``), by the Interface's ``external_ids:attached-mac``
  and ``vm-id`` (where set) == ``dq.uuid``; such a MAC on no OVS Interface is
  not an OVS vNIC (outcome ``not-on-ovs``, nothing to do).
* ``apply_domain`` touches only the VM's own ports (ovs_plan.port_refusal:
  one Interface of a VM's type, not a bridge's local port, ``attached-mac``
  == the interface's MAC, ``vm-id`` == ``dq.uuid`` where set); any other
  port, or a target dev / MAC named twice, refuses the whole call before
  anything is written (PortRefused, exit 8).
* ``clear_domain`` removes what qos-hooks owns: with ``dq.interfaces`` empty,
  every row tagged with ``dq.uuid``; with interfaces (destroy passes them
  all, a hot-unplug passes the one to clear), the rows of those interfaces,
  by MAC or target dev, and only if tagged with ``dq.uuid`` when it is known
  (``vnetN`` names are reused at once).  ``gc`` catches rows left by a port
  that vanished without a clear.  An interface with an empty Bandwidth in ``dq``
  given to ``apply_domain`` also clears that interface.
* ``libvirt_leftovers=True`` (documented mode, off by default; CLI
  ``--libvirt-leftovers``): also destroy QoS/Queue rows tagged by libvirt with
  ``external_ids:vm-id`` == this domain's uuid that no Port references
  (libvirt < 10.3 leaks them when a domain goes away).
* ``replace_libvirt=True`` (documented mode, on by default): when libvirt
  (>= 7.10) already put its own QoS on the Port of THIS domain (QoS row tagged
  ``vm-id`` == dq.uuid), apply replaces it by ours and destroys libvirt's
  superseded QoS and Queue rows in the same transaction.  QoS rows owned by
  Neutron (``external_ids:id``/``_type``) or by nobody are never touched: the
  port is reported and apply raises OwnershipError after doing the rest.
* ``timeout`` bounds the whole call (connect, read, transaction retries, wait
  for ovs-vswitchd, verification).  ``netns`` names the network namespace the
  port devices live in, for the kernel read-back (None: this process's).

Errors (qos_hooks.core.errors): BackendUnavailable / BackendTimeout (OVSDB not
reachable or not answering within ``timeout``; exit 5), ApplyError (the
transaction failed), VerifyError (the read-back differs; ``.differences`` and
``.report`` carry the details; exit 6; its subclass VswitchdBusy: committed,
and ovs-vswitchd is working through configurations but had not reached ours
within ``timeout``), OwnershipError (a port carries a QoS
qos-hooks may not replace; exit 6), PortRefused (a port that is not the VM's
own, or one named twice: nothing written; exit 8).  Every raised ApplyError has a ``report``
attribute with what was done before the failure.

Reports are frozen records (qos_hooks.core.records) with ``to_dict()``: see BackendReport,
PortOutcome, Difference.

The mapping (units, directions, measurements) is documented in
docs/ovs-mapping.md and implemented in qos_hooks.ovs.mapping, which also builds
the plan that ``qos-hooks dry-run`` prints: apply executes exactly that plan.
"""

from __future__ import annotations

import time

from qos_hooks.core.records import Record, default

from qos_hooks.core.errors import ApplyError, BackendTimeout, OwnershipError, VerifyError, VswitchdBusy
from qos_hooks.ovs.mapping import DestroyQos, DestroyQueue, Difference, OvsSettings, PortOutcome, SetInboundQos, SetPolicing, map_bandwidth, ovsdb_actual, ovsdb_differences, plan_apply, plan_clear, plan_gc, plan_repair, resolve, OWNER_KEY, MAC_KEY, IFNAME_KEY, OWNER_QOS_HOOKS, QOS_TYPE
from qos_hooks.core.plan import BACKEND_OVSDB, Plan
from qos_hooks.core.policy import DEFAULT_OVSDB, DEFAULT_OVSDB_TIMEOUT
from qos_hooks.core import log as _log

# annotations are strings (PEP 563): typing is never imported at run time
# (it costs 3-6 ms of every hook start, bench/bench_hooks.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple  # noqa: F401


LOG = _log.get("ovs")


# -- reports ---------------------------------------------------------------------

class BackendReport(Record):
    action: str                                   # apply | clear | gc
    domain_uuid: Optional[str]
    remote: str
    plan: Plan = default(Plan)      # what was executed (or would be, dry-run)
    outcomes: Tuple[PortOutcome, ...] = ()
    differences: Tuple[Difference, ...] = ()      # verification (fatal and not)
    warnings: Tuple[str, ...] = ()
    executed: bool = True                         # False for gc --dry-run
    attempts: int = 0                             # transaction attempts (TRY_AGAIN replays)
    seconds: float = 0.0

    @property
    def ok(self):
        return (all(o.ok for o in self.outcomes)
                and not any(d.fatal for d in self.differences))

    def to_dict(self):
        return {"action": self.action, "domain": self.domain_uuid, "remote": self.remote,
                "executed": self.executed, "ok": self.ok, "attempts": self.attempts,
                "seconds": round(self.seconds, 3), "plan": self.plan.to_dict(),
                "outcomes": [o.to_dict() for o in self.outcomes],
                "differences": [d.to_dict() for d in self.differences],
                "warnings": list(self.warnings)}


class PortStatus(Record):
    port: str
    mac: Optional[str]
    domain_uuid: Optional[str]
    desired: dict
    ovsdb: dict
    kernel: dict
    differences: Tuple[Difference, ...] = ()

    @property
    def drift(self):
        return any(d.fatal for d in self.differences)

    def to_dict(self):
        return {"port": self.port, "mac": self.mac, "domain": self.domain_uuid,
                "desired": self.desired, "ovsdb": self.ovsdb, "kernel": self.kernel,
                "drift": self.drift, "differences": [d.to_dict() for d in self.differences]}


class StatusReport(Record):
    remote: str
    ports: Tuple[PortStatus, ...] = ()
    problems: Tuple[str, ...] = ()     # interfaces not found, orphaned rows...
    drift_problems: bool = False

    @property
    def drift(self):
        return self.drift_problems or any(p.drift for p in self.ports)

    def to_dict(self):
        return {"remote": self.remote, "drift": self.drift,
                "ports": [p.to_dict() for p in self.ports], "problems": list(self.problems)}


# -- executing ops in an IDL transaction --------------------------------------------

def _set_ref(row, column, target):
    setattr(row, column, [target] if target is not None else [])


def _exec_set_inbound(conn, txn, op):
    port = conn.port_row(op.port)
    if port is None:
        raise ApplyError("port %s vanished while applying" % op.port)
    port.verify("qos")
    tags = dict(op.tags())
    settings = op.settings
    qos = conn.row("QoS", op.existing_qos) if op.existing_qos else None
    queue = conn.row("Queue", op.existing_queue) if op.existing_queue else None
    if qos is not None and queue is not None:
        for col in ("type", "other_config", "queues", "external_ids"):
            qos.verify(col)
        queue.verify("other_config")
        queue.verify("external_ids")
    else:
        queue = txn.insert(conn.idl.tables["Queue"])
        qos = txn.insert(conn.idl.tables["QoS"])
        qos.queues = {0: queue}
    queue.other_config = settings.queue_other_config()
    queue.external_ids = tags
    qos.type = QOS_TYPE
    qos.other_config = settings.qos_other_config()
    qos.external_ids = tags
    _set_ref(port, "qos", qos)
    for u in op.supersedes:
        _delete_rows(conn, u, ())
    _delete_rows(conn, None, op.superseded_queues)


def _delete_rows(conn, qos_uuid, queue_uuids):
    """Delete a QoS row (its ``external_ids`` verified: ownership was decided
    on them) and Queue rows, those still there."""
    row = conn.row("QoS", qos_uuid) if qos_uuid else None
    if row is not None:
        row.verify("external_ids")
        row.delete()
    for u in queue_uuids:
        q = conn.row("Queue", u)
        if q is not None:
            q.delete()


def _exec_set_policing(conn, txn, op):
    iface = conn.interface_row(op.interface)
    if iface is None:
        raise ApplyError("interface %s vanished while applying" % op.interface)
    for col in ("ingress_policing_rate", "ingress_policing_burst", "external_ids"):
        iface.verify(col)
    iface.ingress_policing_rate = op.rate
    iface.ingress_policing_burst = op.burst
    ids = dict(iface.external_ids)
    for k in (OWNER_KEY, MAC_KEY, IFNAME_KEY):
        ids.pop(k, None)
    if op.rate:
        ids.update(dict(op.tags()))
    iface.external_ids = ids


def _exec_destroy_qos(conn, txn, op):
    for name in op.ports:
        port = conn.port_row(name)
        if port is not None:
            port.verify("qos")
            if port.qos and str(port.qos[0].uuid) == op.qos_uuid:
                _set_ref(port, "qos", None)
    _delete_rows(conn, op.qos_uuid, op.queue_uuids)


def _exec_destroy_queue(conn, txn, op):
    q = conn.row("Queue", op.queue_uuid)
    if q is not None:
        q.verify("external_ids")
        q.delete()


EXECUTORS = {SetInboundQos: _exec_set_inbound, SetPolicing: _exec_set_policing,
             DestroyQos: _exec_destroy_qos, DestroyQueue: _exec_destroy_queue}


def execute(conn, txn, plan):
    """Write every OVSDB op of ``plan`` into ``txn`` (the plan dry-run prints)."""
    for op in plan.for_backend(BACKEND_OVSDB):
        EXECUTORS[type(op)](conn, txn, op)


def _reattach(conn, ops):
    """Execute ReattachQos ops: two transactions, each waited for (see the op)."""
    def unhook(snap, txn):
        for op in ops:
            port = conn.port_row(op.port)
            if port is not None and port.qos and str(port.qos[0].uuid) == op.qos_uuid:
                port.verify("qos")
                _set_ref(port, "qos", None)
        return None, True

    def rehook(snap, txn):
        for op in ops:
            port, qos = conn.port_row(op.port), conn.row("QoS", op.qos_uuid)
            if port is not None and qos is not None and not port.qos:
                port.verify("qos")
                _set_ref(port, "qos", qos)
        return None, True
    for step in (unhook, rehook):
        _, next_cfg, _ = conn.transact(step, comment="qos-hooks repair")
        conn.wait_for_vswitchd(next_cfg)


def _connect(remote, deadline, connection=None):
    """A new Connection, or ``connection`` (opened ahead by the root helper
    while it waited for its request) brought up to date first."""
    if connection is not None:
        connection.settle()
        return connection
    from qos_hooks.ovs import ovsdb
    return ovsdb.Connection(remote, deadline)


def load_library(only_remote=None):
    """Import the ``ovs`` library now (the root helper does it while it
    waits for its request); ``only_remote``: see ovsdb.load_library."""
    from qos_hooks.ovs import ovsdb
    ovsdb.load_library(only_remote)


def connect(remote=DEFAULT_OVSDB, timeout=DEFAULT_OVSDB_TIMEOUT):
    """An OVSDB connection opened ahead of an apply or clear, to be passed
    as its ``connection=`` (the root helper opens it while it waits)."""
    from qos_hooks.ovs.ovsdb import Deadline
    return _connect(remote, Deadline(timeout))


def _run_plan(conn, planner):
    """Plan against the current snapshot and execute it in one transaction,
    replanning on TRY_AGAIN.  Returns ((plan, outcomes), next_cfg, attempts)."""
    def build(snap, txn):
        plan, outcomes = planner(snap)
        execute(conn, txn, plan)
        return (plan, outcomes), bool(plan.for_backend(BACKEND_OVSDB))
    return conn.transact(build)


# -- the API ------------------------------------------------------------------------

def apply_domain(dq, *, remote=DEFAULT_OVSDB, timeout=DEFAULT_OVSDB_TIMEOUT, verify=True,
                 replace_libvirt=True, netns=None, repair=True, connection=None):
    """Apply dq's interfaces' bandwidth to OVS in one transaction; verify; report.

    ``repair`` (with ``verify``): when OVSDB is right but the kernel lost the
    htb ovs-vswitchd made (someone ran ``tc qdisc del``), unhook and re-hook
    the QoS so ovs-vswitchd installs it again (ovs_plan.ReattachQos), then
    verify again.

    Raises OwnershipError / ApplyError / VerifyError (with ``.report``) when an
    interface could not be given its QoS, BackendUnavailable / BackendTimeout
    when OVSDB is not reachable in time.

    ``connection``: an ovsdb.Connection to ``remote`` opened ahead (it keeps
    its own deadline and is closed here).
    """
    from qos_hooks.ovs.ovsdb import Deadline, VswitchdBehind
    t0 = time.monotonic()
    deadline = Deadline(timeout)
    with _connect(remote, deadline, connection) as conn:
        (plan, outcomes), next_cfg, attempts = _run_plan(
            conn, lambda snap: plan_apply(snap, dq, replace_libvirt=replace_libvirt, remote=remote))
        differences = ()
        if verify:
            try:
                conn.wait_for_vswitchd(next_cfg)
            except BackendTimeout as e:
                # written to OVSDB, not applied by ovs-vswitchd: apply failed (exit 6)
                err = (VswitchdBusy if isinstance(e, VswitchdBehind) else VerifyError)(
                    "%s; the OVSDB transaction was committed" % e)
                err.report = BackendReport("apply", dq.uuid, remote, plan, outcomes, (),
                                           plan.warnings, True, attempts,
                                           time.monotonic() - t0)
                raise err
            # one snapshot for both: nothing is read from the server in between
            snap = conn.snapshot()
            differences = tuple(_verify(snap, dq, netns))
            repairs = plan_repair(snap, differences, remote) if repair else Plan()
            if repairs.ops:
                for op in repairs.ops:
                    LOG.warning("%s", op.describe())
                _reattach(conn, repairs.ops)
                plan = plan + repairs
                differences = tuple(_verify(conn.snapshot(), dq, netns))
    report = BackendReport("apply", dq.uuid, remote, plan, outcomes, differences,
                           plan.warnings, True, attempts, time.monotonic() - t0)
    for w in plan.warnings:
        LOG.warning("%s", w)
    for d in differences:
        (LOG.error if d.fatal else LOG.warning)("verify: %s", d)
    _raise_for(report)
    return report


def _raise_for(report):
    refused = [o for o in report.outcomes if o.action == "refused"]
    missing = [o for o in report.outcomes if o.action in ("not-found", "ambiguous")]
    fatal = [d for d in report.differences if d.fatal]
    err = None
    if refused:
        err = OwnershipError("%s: %s" % (report.action, "; ".join(
            "%s: %s" % (o.port, o.detail) for o in refused)))
    elif missing:
        err = ApplyError("%s: %s" % (report.action, "; ".join(
            "%s: %s" % (o.mac or o.target_dev, o.detail) for o in missing)))
    elif fatal:
        err = VerifyError("%s: verification found %d difference(s): %s" % (
            report.action, len(fatal), "; ".join(str(d) for d in fatal)), fatal)
    if err is not None:
        err.report = report
        raise err


def _verify(snap, dq, netns):
    from qos_hooks.kernel import tc
    diffs, kernel_ports = [], {}
    for iface in dq.interfaces:
        port, problem = resolve(snap, iface, dq.uuid)
        if port is None:
            continue
        settings, _ = map_bandwidth(iface.bandwidth, iface.label)
        diffs.extend(ovsdb_differences(snap, port, settings))
        kernel_ports[port.name] = settings
    if kernel_ports:
        kstate = tc.read_ports(sorted(kernel_ports), netns)
        for name, settings in sorted(kernel_ports.items()):
            diffs.extend(tc.kernel_differences(name, settings, kstate[name]))
    return diffs


def clear_domain(dq, *, remote=DEFAULT_OVSDB, timeout=DEFAULT_OVSDB_TIMEOUT,
                 libvirt_leftovers=False, netns=None, connection=None):
    """Remove what qos-hooks owns for dq (uuid, or only dq's interfaces' MACs/devs).

    ``libvirt_leftovers``: also destroy libvirt's QoS/Queue rows tagged with
    ``vm-id`` == dq.uuid that no Port uses.  Verifies that nothing selected
    is left (VerifyError otherwise).  ``connection``: as for apply_domain.
    """
    from qos_hooks.ovs.ovsdb import Deadline
    t0 = time.monotonic()
    deadline = Deadline(timeout)
    warnings = []

    def planner(snap):
        return plan_clear(snap, dq, libvirt_leftovers=libvirt_leftovers, remote=remote)
    with _connect(remote, deadline, connection) as conn:
        (plan, outcomes), next_cfg, attempts = _run_plan(conn, planner)
        left, _ = planner(conn.snapshot())
        differences = tuple(Difference(getattr(op, "port", None) or "-", "ovsdb", "left over",
                                       "nothing", op.describe())
                            for op in left.ops)
        try:
            conn.wait_for_vswitchd(next_cfg)
        except BackendTimeout as e:
            warnings.append("rows removed, but %s" % e)
    report = BackendReport("clear", dq.uuid, remote, plan, outcomes, differences,
                           plan.warnings + tuple(warnings), True, attempts,
                           time.monotonic() - t0)
    _raise_for(report)
    return report


def gc(*, remote=DEFAULT_OVSDB, timeout=DEFAULT_OVSDB_TIMEOUT, dry_run=False,
       libvirt_leftovers=False):
    """Remove qos-hooks rows whose port is gone (and, opt-in, libvirt's leftovers)."""
    from qos_hooks.ovs.ovsdb import Deadline
    t0 = time.monotonic()
    deadline = Deadline(timeout)

    def planner(snap):
        return plan_gc(snap, libvirt_leftovers=libvirt_leftovers, remote=remote), ()
    with _connect(remote, deadline) as conn:
        if dry_run:
            (plan, outcomes), attempts = planner(conn.snapshot()), 0
        else:
            (plan, outcomes), _, attempts = _run_plan(conn, planner)
    return BackendReport("gc", None, remote, plan, outcomes, (), plan.warnings,
                         not dry_run, attempts, time.monotonic() - t0)


def status(dq=None, *, remote=DEFAULT_OVSDB, timeout=DEFAULT_OVSDB_TIMEOUT, netns=None):
    """Per port: desired, OVSDB, kernel, differences.

    With ``dq``: the desired state is dq's bandwidth mapped to OVS.  Without:
    every port carrying qos-hooks rows, desired = what those rows say (so only
    the kernel can differ), plus orphaned qos-hooks rows as problems.
    """
    from qos_hooks.ovs import ovsdb
    from qos_hooks.kernel import tc
    snap = ovsdb.read_snapshot(remote, timeout)
    entries, problems, drift_problems = [], [], False
    if dq is not None:
        for iface in dq.interfaces:
            port, problem = resolve(snap, iface, dq.uuid)
            if port is None:
                problems.append("interface %s: %s" % (iface.label, problem))
                # a MAC-only vNIC that no OVS Interface carries is not on OVS
                drift_problems = drift_problems or bool(
                    iface.target_dev or not iface.mac
                    or snap.ports_by_mac(iface.mac, dq.uuid))
                continue
            settings, _ = map_bandwidth(iface.bandwidth, iface.label)
            entries.append((port.name, iface.mac, dq.uuid, settings))
    else:
        for port in sorted(snap.ports.values(), key=lambda p: p.name):
            settings, owner = _owned_settings(snap, port)
            if owner is not None:
                entries.append((port.name, owner[1], owner[0], settings))
        gc_plan = plan_gc(snap)
        for op in gc_plan.ops:
            problems.append("orphaned: %s (qos-hooks gc removes it)" % op.describe())
    kernel = tc.read_ports([e[0] for e in entries], netns) if entries else {}
    ports = []
    for name, mac, dom, settings in entries:
        port = snap.ports[name]
        diffs = ovsdb_differences(snap, port, settings) + tc.kernel_differences(
            name, settings, kernel[name])
        ports.append(PortStatus(name, mac, dom, _settings_dict(settings),
                                ovsdb_actual(snap, port), kernel[name].to_dict(), tuple(diffs)))
    return StatusReport(remote, tuple(ports), tuple(problems), drift_problems)


def _owned_settings(snap, port):
    """(OvsSettings from qos-hooks' own rows, (domain, mac) or None)."""
    iface = snap.interface_of(port)
    qos = snap.qos.get(port.qos) if port.qos else None
    kw, owner = {}, None
    if iface is not None and OWNER_KEY in iface.external_ids:
        kw.update(policing_rate=iface.policing_rate, policing_burst=iface.policing_burst)
        owner = (iface.external_ids.get(OWNER_KEY), iface.external_ids.get(MAC_KEY))
    if qos is not None and qos.owner == OWNER_QOS_HOOKS:
        queue = snap.queues.get(qos.queues.get(0)) if 0 in qos.queues else None
        oc = queue.other_config if queue else {}

        def num(d, k):
            try:
                return int(d[k]) if k in d else None
            except ValueError:
                return None
        kw.update(qos_max_rate=num(qos.other_config, "max-rate") or 0,
                  queue_min_rate=num(oc, "min-rate") or 0, queue_max_rate=num(oc, "max-rate") or 0,
                  queue_burst=num(oc, "burst"))
        owner = owner or (qos.external_ids.get(OWNER_KEY), qos.external_ids.get(MAC_KEY))
    return OvsSettings(**kw), owner


def _settings_dict(s):
    return {"ingress_policing_rate": s.policing_rate, "ingress_policing_burst": s.policing_burst,
            "qos.max-rate": s.qos_max_rate, "queue0.min-rate": s.queue_min_rate,
            "queue0.max-rate": s.queue_max_rate, "queue0.burst": s.queue_burst}


def plan_domain(doc, *, config=None, remote=None, timeout=None):
    """The OVS part of dry-run's plan for a (rewritten) DomainDoc.

    It lives with the backend, not in the pure mapping (qos_hooks.ovs.mapping),
    because it reads OVSDB.

    ``remote`` None: plan without reading OVSDB (a note says so).  Otherwise a
    read-only snapshot of OVSDB is taken (bounded by ``timeout``) and the plan
    is exactly what ``qos-hooks apply`` would execute against it now.
    """
    from qos_hooks.core import desired
    dq = desired.domain_qos(doc)
    if not dq.interfaces:
        return Plan()
    if remote is None:
        plan, _ = plan_apply(None, dq)
        return plan
    from qos_hooks.ovs import ovsdb
    t = timeout or (config.settings.ovsdb_timeout if config is not None else DEFAULT_OVSDB_TIMEOUT)
    snap = ovsdb.read_snapshot(remote, t)
    plan, _ = plan_apply(snap, dq, remote=remote)
    return plan + Plan(notes=("OVSDB %s read (read-only) for this plan" % remote,))
