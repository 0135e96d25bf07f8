"""Host network QoS on VDSM's OVS switch type: queues on the uplink + steering flows.

How VDSM builds an OVS network (vdsm lib/vdsm/network/nmstate/ovs/network.py):
one bridge per southbound device (NIC or bond), named ``vdsmbr_`` plus random
characters; the southbound device is a port of that bridge (the uplink); each
network is a northbound OVS internal interface named like the network, whose
Port has an access VLAN ``tag`` when the network has a VLAN.  VM traffic of
an OVS network comes through OVN: ``ovn-bridge-mappings`` maps the network to
the bridge, and ovn-controller patches br-int to it (VLAN networks arrive
tagged on the patch port).

What this module builds, per uplink that carries at least one network with
host QoS (all rows carry qos-hooks ownership tags, and rows it did not create
are never modified):

* a ``QoS`` row (``type=linux-htb``, ``other_config:max-rate`` = the uplink's
  link speed) tagged ``external_ids:qos-hooks-hostnet-uplink=<uplink>``, set
  as the uplink Port's ``qos`` only when that column is empty or already ours;
* one ``Queue`` per network, tagged ``external_ids:qos-hooks-hostnet=<network>``:
  queue id = the network's VLAN id, or 0 for the untagged network (queue 0 is
  linux-htb's default class, as VDSM's hfsc default class is the untagged
  network's, configurators/qos.py); ``max-rate`` = ``ul.m2``; ``min-rate`` =
  the larger of ``rt.m2`` and the network's link-share of the link speed
  (``ls.m2`` / sum of ``ls.m2`` on the uplink), capped at ``max-rate``;
* OpenFlow flows with cookie ``COOKIE`` that steer each VLAN network's
  traffic into its queue: ``in_port=<each port with access tag V>`` (the
  network's northbound port, directly attached guests) and ``dl_vlan=V``
  (traffic that is already tagged, e.g. from OVN's patch port), each with
  ``actions=set_queue:V,NORMAL``.  Flows have no OVSDB representation:
  they are installed with ``ovs-ofctl --bundle`` (one atomic OpenFlow 1.4
  bundle that deletes our cookie's flows and adds the new set).

What of hfsc has no OVS equivalent: the two-piece curves (``m1`` for ``d``
microseconds, then ``m2``) -- linux-htb classes have one guaranteed rate, one
ceiling and a bucket, so only ``m2`` is used; hfsc's decoupling of delay from
bandwidth (real-time curve served by deadline, independent of link-share);
and the link-share weight itself, which becomes an absolute ``min-rate``
computed from the link speed at apply time.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from qos_hooks.core import log as _log
from qos_hooks.ovs import ovsdb
from qos_hooks.core import units
from qos_hooks.core.errors import ApplyError, BackendTimeout, BackendUnavailable, OwnershipError, QosHooksError

OWNER_KEY = "qos-hooks-hostnet"              # Queue rows: network name
QOS_OWNER_KEY = "qos-hooks-hostnet-uplink"   # QoS rows: uplink port name
COOKIE = 0x71685F686E000001                  # "qh_hn" + 1: our OpenFlow flows
FLOW_PRIORITY_PORT = 100
FLOW_PRIORITY_VLAN = 90
FRAME_BITS = 1514 * 8                        # one full Ethernet frame (MTU 1500)
DEFAULT_LINK_RATE = 10 ** 10                 # when OVSDB has no link_speed
RUNDIR_ENV = "QOS_HOOKS_OVS_RUNDIR"

TABLES = {
    "Open_vSwitch": ["bridges", "cur_cfg", "next_cfg"],
    "Bridge": ["name", "ports"],
    "Port": ["name", "qos", "tag", "interfaces"],
    "Interface": ["name", "ofport", "link_speed"],
    "QoS": ["type", "other_config", "queues", "external_ids"],
    "Queue": ["other_config", "external_ids"],
}


# -- the plan (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class QueuePlan:
    network: str
    queue_id: int
    vlan: Optional[int]
    min_rate: int
    max_rate: Optional[int]
    burst: Optional[int] = None       # bits

    def other_config(self):
        d = {"min-rate": str(self.min_rate)}
        if self.max_rate is not None:
            d["max-rate"] = str(self.max_rate)
        if self.burst is not None:
            d["burst"] = str(self.burst)
        return d


@dataclass(frozen=True)
class UplinkPlan:
    uplink: str
    bridge: Optional[str]
    link_rate: int
    queues: Tuple[QueuePlan, ...] = ()
    flows: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()

    def describe(self):
        if not self.queues:
            return "uplink %s (bridge %s): no host QoS; qos-hooks rows and flows removed" % (
                self.uplink, self.bridge)
        qs = "; ".join("%s -> queue %d (min %s, max %s)" % (
            q.network, q.queue_id, units.format_bps(q.min_rate),
            units.format_bps(q.max_rate) if q.max_rate else "link")
            for q in self.queues)
        return "uplink %s (bridge %s, link %s): %s; %d flow%s" % (
            self.uplink, self.bridge, units.format_bps(self.link_rate), qs,
            len(self.flows), "" if len(self.flows) == 1 else "s")

    def commands(self):
        """The same change as ovs-vsctl / ovs-ofctl lines an operator could run."""
        if not self.queues:
            return ["ovs-vsctl clear Port %s qos" % self.uplink,
                    "ovs-ofctl del-flows %s cookie=%#x/-1" % (self.bridge, COOKIE)]
        argv = ["ovs-vsctl", "set", "Port", self.uplink, "qos=@q", "--", "--id=@q",
                "create", "QoS", "type=linux-htb",
                "other_config:max-rate=%d" % self.link_rate,
                "external_ids:%s=%s" % (QOS_OWNER_KEY, self.uplink)]
        argv += ["queues:%d=@q%d" % (q.queue_id, q.queue_id) for q in self.queues]
        for q in self.queues:
            argv += ["--", "--id=@q%d" % q.queue_id, "create", "Queue"]
            argv += ["other_config:%s=%s" % kv for kv in sorted(q.other_config().items())]
            argv += ["external_ids:%s=%s" % (OWNER_KEY, q.network)]
        lines = [" ".join(argv)]
        lines += ["ovs-ofctl --bundle add-flows %s - <<'EOF'" % self.bridge]
        lines += flow_bundle(self.flows).splitlines() + ["EOF"]
        return lines


def queue_burst(ul):
    """The htb bucket (bits) for an upper-limit curve, or None for OVS's default.

    hfsc enforces a curve with its own timers; htb needs a bucket of at least
    one timer tick's worth of the rate to reach its ceiling.  tc's own default
    is rate/HZ + one MTU (iproute2 tc/q_htb.c, HZ 1000); OVS's default is one
    MTU, which falls short above a few tens of Mbit/s (measured here: 100
    Mbit/s gave 85 Mbit/s on the wire).  So the bucket is 1 ms of ``m2`` plus
    one full frame, as tc would choose; a concave curve (``m1 > m2`` for ``d``
    microseconds) also allows the extra volume it grants, ``(m1 - m2) * d``,
    as burst (sent at link speed, not at ``m1``: htb has no second slope).
    """
    if not ul:
        return None
    m2 = ul["m2"]
    burst = m2 // 1000 + FRAME_BITS
    if ul.get("m1") and ul.get("d") and ul["m1"] > m2:
        burst = max(burst, (ul["m1"] - m2) * ul["d"] // 10 ** 6)
    return burst


def queue_id_for(vlan):
    return 0 if vlan is None else int(vlan)


def plan_uplink(uplink, entries, link_rate, bridge=None, ports=()):
    """The desired QoS of one uplink.

    ``entries``: {network: state entry} of the networks on this uplink with
    host QoS; ``ports``: [(port name, ofport, tag)] of the bridge, to find
    the access ports of each VLAN network.
    """
    queues = []
    flows = []
    notes = []
    weights = {}
    for net, e in entries.items():
        ls = (e.get("hostQos") or {}).get("out", {}).get("ls")
        weights[net] = ls["m2"] if ls else 0
    total = sum(weights.values())
    for net in sorted(entries, key=lambda n: (queue_id_for(entries[n].get("vlan")), n)):
        e = entries[net]
        out = (e.get("hostQos") or {}).get("out", {})
        vlan = e.get("vlan")
        ul = out.get("ul", {}).get("m2")
        rt = out.get("rt", {}).get("m2", 0)
        share = link_rate * weights[net] // total if total else 0
        mn = max(rt, share, 1)
        if ul is not None:
            mn = min(mn, ul)
        qid = queue_id_for(vlan)
        queues.append(QueuePlan(network=net, queue_id=qid, vlan=vlan, min_rate=mn,
                                max_rate=ul, burst=queue_burst(out.get("ul"))))
        if vlan is None:
            notes.append("%s is untagged: queue 0, linux-htb's default class (no flow "
                         "needed; traffic no flow claims shares it)" % net)
            continue
        access = sorted((ofport, name) for name, ofport, tag in ports
                        if tag == vlan and name != uplink and ofport and ofport > 0)
        if not any(name == net for _, name in access):
            notes.append("%s: no northbound port with tag %s on the bridge yet" % (net, vlan))
        for ofport, name in access:
            flows.append("cookie=%#x,priority=%d,in_port=%d,actions=set_queue:%d,NORMAL"
                         % (COOKIE, FLOW_PRIORITY_PORT, ofport, qid))
        flows.append("cookie=%#x,priority=%d,dl_vlan=%d,actions=set_queue:%d,NORMAL"
                     % (COOKIE, FLOW_PRIORITY_VLAN, vlan, qid))
    return UplinkPlan(uplink=uplink, bridge=bridge, link_rate=link_rate,
                      queues=tuple(queues), flows=tuple(flows), notes=tuple(notes))


def flow_bundle(flows):
    """``ovs-ofctl add-flows`` input: delete our cookie's flows, add ours."""
    lines = ["delete cookie=%#x/-1" % COOKIE]
    lines += ["add " + f for f in flows]
    return "\n".join(lines) + "\n"


# -- OVSDB access with a deadline ---------------------------------------------------

class _Deadline(ovsdb.Deadline):
    """qos_hooks.ovs.ovsdb's time budget, plus a check that raises BackendTimeout."""

    def left_ms(self):
        return self.ms()

    def check(self, what):
        if self.expired():
            raise BackendTimeout("OVSDB: %s did not finish within %gs" % (what, self.timeout))


class Db:
    """An IDL on the tables this module needs, synced within a deadline."""

    def __init__(self, remote, timeout):
        self.remote = remote
        self.dl = _Deadline(timeout)
        # schema fetch shared with the VM-interface backend (bounded, typed errors)
        schema = ovsdb.fetch_schema(remote, self.dl)
        import ovs.db.idl  # noqa: F401  (fetch_schema checked the package is there)
        import ovs.poller  # noqa: F401
        self.ovs = ovs
        helper = self.ovs.db.idl.SchemaHelper(schema_json=schema)
        for table, cols in TABLES.items():
            helper.register_columns(table, cols)
        self.idl = self.ovs.db.idl.Idl(remote, helper)
        try:
            self._sync()
        except BaseException:
            self.idl.close()
            raise

    def _wait(self, txn=None):
        p = self.ovs.poller.Poller()
        self.idl.wait(p)
        if txn is not None:
            txn.wait(p)
        p.timer_wait(min(self.dl.left_ms(), 100))
        p.block()

    def _sync(self):
        seq = self.idl.change_seqno
        while True:
            self.idl.run()
            if self.idl.change_seqno != seq:
                return
            self.dl.check("initial sync with %s" % self.remote)
            self._wait()

    def rows(self, table):
        return list(self.idl.tables[table].rows.values())

    def _ovs_row(self):
        return next(iter(self.idl.tables["Open_vSwitch"].rows.values()), None)

    def transact(self, build, what):
        """Run ``build(txn)`` in a transaction; replay on TRY_AGAIN until the
        deadline; then wait until ovs-vswitchd has applied it (the transaction
        increments ``next_cfg``; vswitchd copies it to ``cur_cfg`` when done)."""
        T = self.ovs.db.idl.Transaction
        while True:
            txn = T(self.idl)
            build(txn)
            ovs_row = self._ovs_row()
            if ovs_row is not None:
                ovs_row.increment("next_cfg")
            status = txn.commit()
            while status == T.INCOMPLETE:
                self.dl.check(what)
                self._wait(txn)
                self.idl.run()
                status = txn.commit()
            if status in (T.SUCCESS, T.UNCHANGED):
                if status == T.SUCCESS and ovs_row is not None:
                    self._wait_vswitchd(txn.get_increment_new_value(), what)
                return status
            if status == T.TRY_AGAIN:
                self.dl.check(what)
                seq = self.idl.change_seqno
                while self.idl.change_seqno == seq and not self.dl.expired():
                    self.idl.run()
                    if self.idl.change_seqno == seq:
                        self._wait()
                continue
            raise ApplyError("OVSDB transaction (%s) failed: %s %s"
                             % (what, status, txn.get_error()))

    def _wait_vswitchd(self, next_cfg, what):
        while True:
            self.idl.run()
            row = self._ovs_row()
            if row is None or next_cfg is None or row.cur_cfg >= next_cfg:
                return
            if self.dl.expired():
                raise BackendTimeout("ovs-vswitchd did not apply %s within %gs (cur_cfg %d < "
                                     "next_cfg %d): is it running?"
                                     % (what, self.dl.timeout, row.cur_cfg, next_cfg))
            self._wait()

    def close(self):
        self.idl.close()


def _owned_qos(db):
    return [q for q in db.rows("QoS") if QOS_OWNER_KEY in q.external_ids]


def _is_ours_queue(row):
    return OWNER_KEY in row.external_ids


# -- reading the switch ----------------------------------------------------------------

def _port_by_name(db):
    return {p.name: p for p in db.rows("Port")}


def _bridge_of_port(db):
    out = {}
    for b in db.rows("Bridge"):
        for p in b.ports:
            out[p.name] = b.name
    return out


def _bridge_ports(db, bridge):
    res = []
    for b in db.rows("Bridge"):
        if b.name != bridge:
            continue
        for p in b.ports:
            tag = p.tag[0] if p.tag else None
            for i in p.interfaces:
                of = i.ofport[0] if i.ofport else None
                res.append((p.name, of, tag))
    return res


def _link_rate(db, uplink):
    for i in db.rows("Interface"):
        if i.name == uplink and i.link_speed:
            return int(i.link_speed[0])
    return None


# -- flows ----------------------------------------------------------------------------

def ovs_rundir(remote, environ=None):
    """Where ovs-vswitchd's ``<bridge>.mgmt`` sockets are: $QOS_HOOKS_OVS_RUNDIR,
    else the directory of a ``unix:`` OVSDB remote, else /run/openvswitch."""
    environ = os.environ if environ is None else environ
    if environ.get(RUNDIR_ENV):
        return environ[RUNDIR_ENV]
    if remote.startswith("unix:"):
        return os.path.dirname(remote[len("unix:"):]) or "/run/openvswitch"
    return "/run/openvswitch"


def _ofctl(args, timeout, stdin=None):
    exe = shutil.which("ovs-ofctl")
    if exe is None:
        raise BackendUnavailable("ovs-ofctl not found (Debian/EL: openvswitch)")
    try:
        p = subprocess.run([exe, "--timeout=%d" % max(1, int(timeout))] + list(args),
                           input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=timeout + 2)
    except subprocess.TimeoutExpired:
        raise BackendTimeout("ovs-ofctl %s did not finish within %gs" % (args[0], timeout))
    if p.returncode != 0:
        raise ApplyError("ovs-ofctl %s: %s" % (" ".join(args[:2]), p.stderr.strip()))
    return p.stdout


def mgmt_target(bridge, remote):
    return "unix:%s/%s.mgmt" % (ovs_rundir(remote), bridge)


def install_flows(bridge, flows, remote, timeout):
    """Replace this module's flows on ``bridge`` atomically (one OpenFlow bundle)."""
    _ofctl(["--bundle", "add-flows", mgmt_target(bridge, remote), "-"], timeout,
           stdin=flow_bundle(flows))


def dump_flows(bridge, remote, timeout):
    out = _ofctl(["dump-flows", mgmt_target(bridge, remote), "cookie=%#x/-1" % COOKIE],
                 timeout)
    return [ln.strip() for ln in out.splitlines() if "cookie=" in ln]


# -- reconcile --------------------------------------------------------------------------

@dataclass
class ReconcileResult:
    uplink: str
    plan: Optional[UplinkPlan]
    error: Optional[str] = None

    def __str__(self):
        if self.error:
            return "uplink %s: NOT applied: %s" % (self.uplink, self.error)
        return "applied: " + self.plan.describe()


def _entries_by_uplink(applied):
    by = {}
    for net, e in applied.items():
        if e.get("hostQos") and e.get("uplink"):
            by.setdefault(e["uplink"], {})[net] = e
    return by


# -- what VDSM itself put on an uplink --------------------------------------------------

#: the root qdisc handle of VDSM's hfsc host QoS (lib/vdsm/network/configurators/
#: qos.py: ``_ROOT_QDISC_HANDLE = '%x:' % 5001``); OVS linux-htb uses ``1:``
VDSM_ROOT_HANDLE = "1389:0"


def vdsm_qdisc_uplinks(uplinks, netns=None):
    """{uplink: KernelPort} for the uplinks whose root qdisc is VDSM's hfsc.

    VDSM puts it there when a setupNetworks with ``hostQos`` reaches its
    ``_setup_qos`` (lib/vdsm/network/netswitch/configurator.py) without our
    before_network_setup having taken ``hostQos`` out: the switch type change
    path (lib/vdsm/network/api.py ``_change_switch_type``) skips
    before_network_setup altogether, and ``_setup_qos`` does not look at the
    switch type.  Device names that do not exist here are left out."""
    from qos_hooks.kernel import tc
    ports = tc.read_ports(sorted(uplinks), netns=netns)
    return {u: kp for u, kp in ports.items()
            if kp.exists and kp.root_handle == VDSM_ROOT_HANDLE}


def evict_vdsm_qdisc(uplink, kport, netns=None):
    """Delete VDSM's root hfsc qdisc (its classes, filters and fq_codel leaves
    go with it) and the ingress qdisc VDSM adds next to it
    (configurators/qos.py ``_fresh_qdisc_conf_out``) when that has no filter
    (an ingress qdisc with filters is OVS policing: left alone).  Returns
    what was removed, in words."""
    from qos_hooks.kernel import tc
    ipr = tc._iproute(netns)
    done = []
    try:
        idx = ipr.link_lookup(ifname=uplink)
        if not idx:
            return done
        ipr.tc("del", index=idx[0], parent=tc.TC_H_ROOT)
        done.append("root qdisc %s (VDSM's hfsc)" % VDSM_ROOT_HANDLE.replace(":0", ":"))
        if kport.ingress and not kport.ingress_filters:
            ipr.tc("del", "ingress", index=idx[0], parent=tc.TC_H_INGRESS)
            done.append("empty ingress qdisc")
    except Exception as e:   # NetlinkError and friends: report, never half-hide
        raise ApplyError("uplink %s: cannot remove VDSM's qdisc: %s" % (uplink, e))
    finally:
        ipr.close()
    return done


def reconcile(applied, uplinks, remote, timeout, logger=None, evict_vdsm=False, netns=None):
    """Make the given uplinks' OVS QoS, queues and flows match ``applied``.

    One OVSDB transaction for all uplinks (QoS + Queue rows + Port.qos, with
    ``verify`` on Port.qos so a concurrent writer forces a replay), then one
    OpenFlow bundle per bridge.  Returns a ReconcileResult per uplink; raises
    when OVSDB is unreachable or the transaction fails.

    ``evict_vdsm``: an uplink about to get qos-hooks' QoS whose root qdisc is
    VDSM's hfsc (``vdsm_qdisc_uplinks``) loses it first; if the Port already
    pointed at our QoS, ovs-vswitchd believes its htb is still installed, so
    Port.qos is cleared in a first transaction and set again in the main one
    (vswitchd then installs the htb afresh).  Uplinks whose QoS is not ours
    keep VDSM's qdisc (status reports it).
    """
    logger = logger or _log.get("hostnet")
    dl = _Deadline(timeout)
    db = Db(remote, timeout)
    try:
        by_uplink = _entries_by_uplink(applied)
        ports = _port_by_name(db)
        bridge_of = _bridge_of_port(db)
        plans = {}
        results = []
        for up in uplinks:
            bridge = bridge_of.get(up)
            entries = by_uplink.get(up, {})
            if entries and up not in ports:
                results.append(ReconcileResult(up, None, "uplink port %r is not on any OVS "
                                               "bridge" % up))
                continue
            rate = _link_rate(db, up) if up in ports else None
            if rate is None and entries:
                logger.warning("uplink %s: OVSDB reports no link_speed; assuming %s",
                               up, units.format_bps(DEFAULT_LINK_RATE))
            plan = plan_uplink(up, entries, rate or DEFAULT_LINK_RATE, bridge,
                               _bridge_ports(db, bridge) if bridge else ())
            port = ports.get(up)
            if entries and port is not None and port.qos and \
                    QOS_OWNER_KEY not in port.qos[0].external_ids:
                results.append(ReconcileResult(
                    up, plan, "Port %s already has a QoS row qos-hooks did not create "
                    "(external_ids %s): left alone" % (up, dict(port.qos[0].external_ids))))
                continue
            plans[up] = plan
            results.append(ReconcileResult(up, plan))

        evicted = {}
        if evict_vdsm:
            mine_now = [up for up, plan in plans.items() if plan.queues]
            for up, kp in sorted(vdsm_qdisc_uplinks(mine_now, netns).items()):
                evicted[up] = evict_vdsm_qdisc(up, kp, netns)
                logger.warning("uplink %s: removed what VDSM's own host QoS put there: %s",
                               up, ", ".join(evicted[up]))
            bounce = [up for up in evicted if ports.get(up) is not None and ports[up].qos
                      and QOS_OWNER_KEY in ports[up].qos[0].external_ids]
            if bounce:
                def detach(txn):
                    now = _port_by_name(db)
                    for up in bounce:
                        now[up].verify("qos")
                        now[up].qos = []
                db.transact(detach, "detach QoS of %s for re-install" % ", ".join(bounce))

        def build(txn):
            ports_now = _port_by_name(db)
            owned = _owned_qos(db)
            for up, plan in plans.items():
                port = ports_now.get(up)
                mine = [q for q in owned if q.external_ids.get(QOS_OWNER_KEY) == up]
                if port is not None:
                    port.verify("qos")
                    if port.qos and port.qos[0] in mine:
                        mine.remove(port.qos[0])
                        mine.insert(0, port.qos[0])
                    elif port.qos and plan.queues:
                        raise OwnershipError("Port %s has a QoS row qos-hooks did not "
                                             "create" % up)
                if not plan.queues or port is None:
                    if port is not None and port.qos and port.qos[0] in mine:
                        port.qos = []
                    for q in mine:
                        for qu in q.queues.values():
                            if _is_ours_queue(qu):
                                qu.delete()
                        q.delete()
                    continue
                qos = mine[0] if mine else txn.insert(db.idl.tables["QoS"])
                for extra in mine[1:]:
                    for qu in extra.queues.values():
                        if _is_ours_queue(qu):
                            qu.delete()
                    extra.delete()
                if not mine or qos.type != "linux-htb":
                    qos.type = "linux-htb"
                want_oc = {"max-rate": str(plan.link_rate)}
                if not mine or dict(qos.other_config) != want_oc:
                    qos.other_config = want_oc
                want_ext = {QOS_OWNER_KEY: up}
                if not mine or dict(qos.external_ids) != want_ext:
                    qos.external_ids = want_ext
                old = dict(qos.queues) if mine else {}
                new_queues = {}
                for qp in plan.queues:
                    row = old.get(qp.queue_id)
                    if row is None or not _is_ours_queue(row):
                        row = txn.insert(db.idl.tables["Queue"])
                        row.other_config = qp.other_config()
                        row.external_ids = {OWNER_KEY: qp.network}
                    else:
                        if dict(row.other_config) != qp.other_config():
                            row.other_config = qp.other_config()
                        if dict(row.external_ids) != {OWNER_KEY: qp.network}:
                            row.external_ids = {OWNER_KEY: qp.network}
                    new_queues[qp.queue_id] = row
                for qid, row in old.items():
                    if qid not in new_queues and _is_ours_queue(row):
                        row.delete()
                if len(old) != len(new_queues) or \
                        any(old.get(k) is not v for k, v in new_queues.items()):
                    qos.queues = new_queues
                if not port.qos or port.qos[0].uuid != qos.uuid:
                    port.qos = [qos]

        if plans:
            db.transact(build, "host network QoS on %s" % ", ".join(sorted(plans)))
        for up, plan in plans.items():
            if plan.bridge:
                install_flows(plan.bridge, plan.flows, remote, max(1, dl.left_ms() / 1000.0))
        return results
    finally:
        db.close()


def resync(applied, remote, timeout, logger=None, netns=None):
    """Re-apply everything in ``applied`` and drop qos-hooks rows of uplinks no
    longer in it: after an ovs-vswitchd restart (OpenFlow flows live in
    vswitchd's memory only and are lost; QoS/Queue rows persist in OVSDB), or
    after VDSM removed a bridge behind our back."""
    db = Db(remote, timeout)
    try:
        uplinks = set(_entries_by_uplink(applied))
        uplinks |= {q.external_ids.get(QOS_OWNER_KEY) for q in _owned_qos(db)}
    finally:
        db.close()
    uplinks.discard(None)
    if not uplinks:
        return []
    return reconcile(applied, sorted(uplinks), remote, timeout, logger=logger,
                     evict_vdsm=True, netns=netns)


def gc_orphans(applied, remote, timeout):
    """Remove qos-hooks host network QoS rows whose uplink has no applied entry
    or no longer exists (e.g. VDSM removed the bridge with the network)."""
    db = Db(remote, timeout)
    try:
        live = set(_entries_by_uplink(applied))
        ports = _port_by_name(db)
        doomed = [q for q in _owned_qos(db)
                  if q.external_ids.get(QOS_OWNER_KEY) not in live
                  or q.external_ids.get(QOS_OWNER_KEY) not in ports]
        if not doomed:
            return []
        names = [q.external_ids.get(QOS_OWNER_KEY) for q in doomed]

        def build(txn):
            for p in _port_by_name(db).values():
                if p.qos and p.qos[0] in doomed:
                    p.verify("qos")
                    p.qos = []
            for q in doomed:
                for qu in q.queues.values():
                    if _is_ours_queue(qu):
                        qu.delete()
                q.delete()
        db.transact(build, "host network QoS garbage collection")
        return names
    finally:
        db.close()


# -- status -------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostNetStatus:
    """Desired versus actual for one host network with QoS on the OVS switch."""

    network: str
    uplink: Optional[str]
    bridge: Optional[str]
    vlan: Optional[int]
    queue_id: int
    desired: Dict[str, Optional[int]] = field(default_factory=dict)   # min-rate, max-rate
    actual: Dict[str, Optional[int]] = field(default_factory=dict)
    flows: Tuple[str, ...] = ()
    drift: Tuple[str, ...] = ()

    @property
    def ok(self):
        return not self.drift

    def to_dict(self):
        return {"network": self.network, "uplink": self.uplink, "bridge": self.bridge,
                "vlan": self.vlan, "queue": self.queue_id, "desired": dict(self.desired),
                "actual": dict(self.actual), "flows": list(self.flows),
                "drift": list(self.drift)}

    def describe(self):
        def fmt(d):
            return ", ".join("%s %s" % (k, units.format_bps(v) if v else "-")
                             for k, v in sorted(d.items()))
        s = "host network %s (uplink %s, bridge %s, %s, queue %d): desired %s; actual %s" % (
            self.network, self.uplink, self.bridge,
            "vlan %s" % self.vlan if self.vlan is not None else "untagged", self.queue_id,
            fmt(self.desired), fmt(self.actual) or "none")
        if self.drift:
            s += "; DRIFT: " + "; ".join(self.drift)
        return s


def _kernel_classes(uplinks, netns):
    """{uplink: {handle: HtbClass}} or {uplink: None} when it is not a device
    here; (result, problem sentence or None, {uplink: root qdisc handle})."""
    try:
        from qos_hooks.kernel import tc
        ports = tc.read_ports(uplinks, netns=netns)
    except Exception as e:   # kernel read-back is a cross-check, not a requirement
        return {}, "kernel tc state unreadable: %s" % e, {}
    return ({u: (kp.classes if kp.exists else None) for u, kp in ports.items()}, None,
            {u: kp.root_handle for u, kp in ports.items()})


#: status' drift sentence for VDSM's own qdisc on an uplink, with the fix
VDSM_QDISC_DRIFT = ("kernel: VDSM's hfsc (root qdisc 1389:) is on %s instead of the OVS "
                    "queues: setupNetworks applied hostQos itself (a switch type change "
                    "skips before_network_setup); fix: qos-hooks resync")


def status(applied, remote, timeout, netns=None):
    """Compare ``applied`` (the state file) with OVSDB, the bridge's flows and
    the uplink's htb classes in the kernel (network namespace ``netns``)."""
    if not _entries_by_uplink(applied):
        return []
    dl = _Deadline(timeout)
    db = Db(remote, timeout)
    try:
        rows = []
        ports = _port_by_name(db)
        bridge_of = _bridge_of_port(db)
        by_uplink = _entries_by_uplink(applied)
        kernel, kernel_problem, roots = _kernel_classes(sorted(by_uplink), netns)
        for up in sorted(by_uplink):
            bridge = bridge_of.get(up)
            rate = _link_rate(db, up) or DEFAULT_LINK_RATE
            plan = plan_uplink(up, by_uplink[up], rate, bridge,
                               _bridge_ports(db, bridge) if bridge else ())
            port = ports.get(up)
            qos = port.qos[0] if port is not None and port.qos else None
            ours = qos is not None and qos.external_ids.get(QOS_OWNER_KEY) == up
            flows = ()
            flow_err = None
            if bridge:
                try:
                    flows = tuple(dump_flows(bridge, remote, max(1, dl.left_ms() / 1000.0)))
                except (ApplyError, BackendUnavailable) as e:
                    flow_err = str(e)
            for qp in plan.queues:
                drift = []
                desired = {"min-rate": qp.min_rate, "max-rate": qp.max_rate}
                actual = {}
                if port is None:
                    drift.append("uplink port %s is not on any bridge" % up)
                elif qos is None:
                    drift.append("Port %s has no QoS" % up)
                elif not ours:
                    drift.append("Port %s QoS is not qos-hooks' (external_ids %s)"
                                 % (up, dict(qos.external_ids)))
                else:
                    row = qos.queues.get(qp.queue_id)
                    if row is None:
                        drift.append("queue %d missing" % qp.queue_id)
                    else:
                        oc = row.other_config
                        actual = {"min-rate": int(oc["min-rate"]) if "min-rate" in oc else None,
                                  "max-rate": int(oc["max-rate"]) if "max-rate" in oc else None}
                        for k in ("min-rate", "max-rate"):
                            if actual[k] != desired[k]:
                                drift.append("%s %s, want %s" % (
                                    k, actual[k], desired[k]))
                classes = kernel.get(up)
                handle = "1:%x" % (qp.queue_id + 1)
                if kernel_problem:
                    drift.append(kernel_problem)
                elif roots.get(up) == VDSM_ROOT_HANDLE:
                    drift.append(VDSM_QDISC_DRIFT % up)
                elif classes is None:
                    drift.append("uplink %s is not a network device here" % up)
                elif handle not in classes:
                    drift.append("kernel: no htb class %s on %s" % (handle, up))
                else:
                    ceil = classes[handle].ceil * 8
                    actual["kernel-ceil"] = ceil
                    if qp.max_rate and abs(ceil - qp.max_rate) > qp.max_rate // 100:
                        drift.append("kernel: htb class %s ceil %d bit/s, want %d"
                                     % (handle, ceil, qp.max_rate))
                mine = tuple(f for f in flows if "set_queue:%d," % qp.queue_id in f)
                if qp.vlan is not None:
                    if flow_err:
                        drift.append("flows unreadable: %s" % flow_err)
                    elif not any("dl_vlan=%d" % qp.vlan in f for f in mine):
                        drift.append("steering flow for vlan %d missing" % qp.vlan)
                rows.append(HostNetStatus(
                    network=qp.network, uplink=up, bridge=bridge, vlan=qp.vlan,
                    queue_id=qp.queue_id, desired=desired, actual=actual, flows=mine,
                    drift=tuple(drift)))
        return rows
    finally:
        db.close()


__all__ = ["COOKIE", "OWNER_KEY", "QOS_OWNER_KEY", "HostNetStatus", "QueuePlan",
           "UplinkPlan", "plan_uplink", "reconcile", "status", "gc_orphans",
           "install_flows", "dump_flows"]


# -- the state file's networks: status and resync ------------------------------------

def status_rows(remote, timeout, state_file=None, netns=None):
    """Per host network: desired (the state file) versus actual (OVSDB rows,
    OpenFlow flows, the uplink's htb classes in the kernel).

    Returns a list of ``qos_hooks.hostnet.ovs.HostNetStatus`` (``network``,
    ``uplink``, ``bridge``, ``vlan``, ``queue_id``, ``desired``, ``actual``,
    ``flows``, ``drift``: a tuple of sentences, empty when as desired;
    ``ok``; ``to_dict()``; ``describe()``).  No OVSDB connection is made when
    no host network has QoS on OVS.  Raises BackendUnavailable /
    BackendTimeout when OVSDB cannot be read within ``timeout``.
    """
    from qos_hooks.hostnet.state import State, state_path
    st = State.load(state_file or state_path())
    return status(st.applied, remote, timeout, netns=netns)


def status_section(remote, timeout, state_file=None, netns=None):
    """What ``qos-hooks status`` adds for host networks: (lines, json list, drift?).

    ``lines`` are ready to print ("ok   host network ..." / "DRIFT host
    network ..."); a backend error becomes one "problem:" line and counts as
    drift, so status never hides it.
    """
    try:
        rows = status_rows(remote, timeout, state_file, netns)
    except QosHooksError as e:
        return ["problem: host networks: %s" % e], [{"problem": str(e)}], True
    lines = ["%s %s" % ("ok   " if r.ok else "DRIFT", r.describe()) for r in rows]
    return lines, [r.to_dict() for r in rows], any(not r.ok for r in rows)


def resync_host_networks(remote, timeout, state_file=None, logger=None):
    """Re-apply the remembered host network QoS on OVS (after an ovs-vswitchd
    restart, which loses OpenFlow flows); returns the per-uplink results."""
    from qos_hooks.hostnet.state import State, StateLock, state_path
    path = state_file or state_path()
    with StateLock(path):
        st = State.load(path)
        return resync(st.applied, remote, timeout, logger=logger)
