"""The Open vSwitch mapping and the OVS part of the plan (pure: no I/O here).

Mapping (guest point of view in, switch point of view out; docs/ovs-mapping.md
has the measurements behind it):

* VM **outbound** (traffic out of the guest = into the switch):
  Interface ``ingress_policing_rate`` = average * 8 (kbit/s) and
  ``ingress_policing_burst`` = burst * 8 (kbit; OVS multiplies by 1024/8 to get
  bytes, lib/netdev-linux.c tc_add_policer).  A policer has one rate: ``peak``
  is ignored with a warning (libvirt does the same).
* VM **inbound** (traffic into the guest = out of the switch port): a
  ``linux-htb`` QoS owned by qos-hooks with ``other_config:max-rate`` = peak
  (or average without peak), bit/s, always set (without it OVS uses the link
  speed); its queue 0 (the default class ``1:1``) with ``min-rate`` =
  ``max-rate`` = average * 8000 bit/s and ``burst`` = burst * 8192 bit.

  Why not libvirt's ``min-rate=average, max-rate=peak``: htb lends the parent's
  spare rate, so a lone VM sustains ``peak`` (measured: 1.9x average).  With
  ``min-rate = max-rate = average`` the class never borrows: the sustained rate
  is ``average`` and only ``burst`` bytes can go above it.  OVS's htb cannot
  cap the *rate of that burst* at ``peak``: a leaf class that still has tokens
  sends without asking its parent (net/sched/sch_htb.c, HTB_CAN_SEND), so the
  root class ``1:fffe`` (rate = ceil = QoS max-rate = peak) does not slow the
  burst down.  ``peak`` is kept as the root ceiling and reported in a warning.
* ``floor`` has no OVS equivalent: warned, ignored.

Ownership (external_ids keys):

* Rows qos-hooks creates (QoS, Queue) carry ``qos-hooks-vm-id`` (domain UUID),
  ``qos-hooks-mac`` and ``qos-hooks-ifname``.  A row is ours if and only if it
  has ``qos-hooks-vm-id``.
* Port and Interface rows belong to libvirt/VDSM; qos-hooks writes only
  ``Port.qos``, ``Interface.ingress_policing_rate/burst`` and its own
  ``qos-hooks-*`` keys in ``Interface.external_ids`` (marking policing it set).
* libvirt (>= 7.10) tags its QoS/Queue rows with ``vm-id``/``ifname``; Neutron
  tags its rows with ``id``/``_type``.  A QoS on a Port that is not ours is
  replaced only when libvirt made it for THIS domain (``vm-id`` == domain
  UUID) and the ``replace_libvirt`` mode is on (default); libvirt's rows are
  then destroyed in the same transaction.  Neutron's or untagged QoS: never
  touched, reported (OwnershipError).
* Non-zero policing on an Interface that is neither ours nor libvirt's for
  this domain is never touched either.

Every op renders as the ``ovs-vsctl`` command an operator could paste.
"""

from __future__ import annotations

from qos_hooks.core.records import Record, default
from qos_hooks.core import policy
from qos_hooks.core import units
from qos_hooks.core.difference import Difference
from qos_hooks.core.errors import InputError, PortRefused
from qos_hooks.core.plan import BACKEND_OVSDB, Op, Plan, sh

# annotations are strings (PEP 563): typing is never imported at run time
# (it costs 3-6 ms of every hook start, bench/bench_hooks.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple  # noqa: F401


# -- external_ids keys ------------------------------------------------------
OWNER_KEY = "qos-hooks-vm-id"
MAC_KEY = "qos-hooks-mac"
IFNAME_KEY = "qos-hooks-ifname"
OWN_KEYS = (OWNER_KEY, MAC_KEY, IFNAME_KEY)
LIBVIRT_VM_KEY = "vm-id"            # libvirt src/util/virnetdevopenvswitch.c
LIBVIRT_IFNAME_KEY = "ifname"
ATTACHED_MAC_KEY = "attached-mac"   # set on the Interface by libvirt and VDSM
NEUTRON_KEYS = ("id", "_type")      # neutron/agent/common/ovs_lib.py _update_queue/_update_qos

OWNER_QOS_HOOKS = "qos-hooks"
OWNER_LIBVIRT = "libvirt"
OWNER_NEUTRON = "neutron"
OWNER_UNKNOWN = "untagged"

QOS_TYPE = "linux-htb"
UINT32_MAX = 2 ** 32 - 1
# OVS keeps htb rates in bytes/s in a uint32 (lib/netdev-linux.c struct htb_class)
OVS_HTB_MAX_BPS = UINT32_MAX * 8

REMOTE_PLACEHOLDER = "unix:/run/openvswitch/db.sock"


def owner_of(external_ids):
    """Who made a QoS/Queue row, from its external_ids."""
    if OWNER_KEY in external_ids:
        return OWNER_QOS_HOOKS
    if any(k in external_ids for k in NEUTRON_KEYS):
        return OWNER_NEUTRON
    if LIBVIRT_VM_KEY in external_ids:
        return OWNER_LIBVIRT
    return OWNER_UNKNOWN


# -- snapshot: plain data read from OVSDB ------------------------------------

class QosRow(Record):
    uuid: str
    type: str
    other_config: Dict[str, str]
    queues: Dict[int, str]
    external_ids: Dict[str, str]

    @property
    def owner(self):
        return owner_of(self.external_ids)


class QueueRow(Record):
    uuid: str
    other_config: Dict[str, str]
    external_ids: Dict[str, str]

    @property
    def owner(self):
        return owner_of(self.external_ids)


class InterfaceRow(Record):
    uuid: str
    name: str
    type: str
    policing_rate: int
    policing_burst: int
    external_ids: Dict[str, str]


class PortRow(Record):
    uuid: str
    name: str
    qos: Optional[str]
    interfaces: Tuple[str, ...]
    external_ids: Dict[str, str]


class Snapshot(Record):
    ports: Dict[str, PortRow] = default(dict)          # by name
    interfaces: Dict[str, InterfaceRow] = default(dict)  # by uuid
    qos: Dict[str, QosRow] = default(dict)
    queues: Dict[str, QueueRow] = default(dict)
    cur_cfg: int = 0
    next_cfg: int = 0
    bridges: frozenset = frozenset()    # Bridge names (their local ports' names too)

    def interface_of(self, port):
        """The port's interface (VM ports have exactly one)."""
        for u in port.interfaces:
            if u in self.interfaces:
                return self.interfaces[u]
        return None

    def ports_by_mac(self, mac, domain_uuid=None):
        """Ports whose Interface carries ``external_ids:attached-mac`` == mac;
        with ``domain_uuid``, only those whose ``vm-id`` (where libvirt set
        one) is that domain's.  Reads the snapshot apply already took: no
        extra OVSDB round trip."""
        out = []
        for port in self._by_mac().get((mac or "").lower(), ()):
            iface = self.interface_of(port)
            vm = iface.external_ids.get(LIBVIRT_VM_KEY)
            if domain_uuid is not None and vm and vm.lower() != domain_uuid.lower():
                continue
            out.append(port)
        return sorted(out, key=lambda p: p.name)

    def _by_mac(self):
        """{attached-mac: [ports]}, built once per snapshot contents (one pass
        over the ports however many interfaces a request looks up)."""
        key = (len(self.ports), len(self.interfaces))
        cached = self.__dict__.get("_mac_index")
        if cached is None or cached[0] != key:
            index = {}
            for port in self.ports.values():
                iface = self.interface_of(port)
                if iface is not None:
                    m = (iface.external_ids.get(ATTACHED_MAC_KEY) or "").lower()
                    index.setdefault(m, []).append(port)
            cached = (key, index)
            object.__setattr__(self, "_mac_index", cached)
        return cached[1]

    def ports_using_qos(self, qos_uuid):
        return sorted((p for p in self.ports.values() if p.qos == qos_uuid), key=lambda p: p.name)

    def qos_using_queue(self, queue_uuid):
        return [q for q in self.qos.values() if queue_uuid in q.queues.values()]


# -- the mapping ----------------------------------------------------------------

class OvsSettings(Record):
    """What one interface's bandwidth becomes in OVSDB (None/0 = nothing)."""

    policing_rate: int = 0                 # kbit/s
    policing_burst: int = 0                # kbit
    qos_max_rate: Optional[int] = None     # bit/s; None: no inbound QoS
    queue_min_rate: Optional[int] = None   # bit/s
    queue_max_rate: Optional[int] = None   # bit/s
    queue_burst: Optional[int] = None      # bit; None: OVS's minimum

    @property
    def has_inbound(self):
        return self.qos_max_rate is not None

    @property
    def has_outbound(self):
        return self.policing_rate > 0

    def qos_other_config(self):
        return {"max-rate": str(self.qos_max_rate)}

    def queue_other_config(self):
        d = {"min-rate": str(self.queue_min_rate), "max-rate": str(self.queue_max_rate)}
        if self.queue_burst is not None:
            d["burst"] = str(self.queue_burst)
        return d


def map_bandwidth(bw, label="interface"):
    """(OvsSettings, warnings) for a policy.Bandwidth in libvirt units."""
    warnings = []
    kw = {}
    out = bw.outbound if bw is not None else None
    if out is not None and not out.is_empty() and out.average:
        kw["policing_rate"] = units.libvirt_rate_to_ovs_kbps(out.average)
        kw["policing_burst"] = units.libvirt_burst_to_ovs_kbit(out.burst) if out.burst else 0
        for col in ("policing_rate", "policing_burst"):
            if kw[col] > UINT32_MAX:
                raise InputError("%s: outbound %s is above what OVS can store in "
                                 "ingress_%s (%d > %d)" % (label, col.split("_")[1], col,
                                                           kw[col], UINT32_MAX))
        if out.peak is not None:
            warnings.append("%s: outbound peak %s ignored: OVS ingress policing has one "
                            "rate (average) and a burst" % (label, units.format_libvirt_rate(out.peak)))
    elif out is not None and not out.is_empty():
        warnings.append("%s: outbound without average: nothing to police" % label)
    inb = bw.inbound if bw is not None else None
    if inb is not None and inb.floor is not None:
        warnings.append("%s: inbound floor %s has no Open vSwitch equivalent: ignored "
                        "(libvirt supports floor only on <interface type='network'>)"
                        % (label, units.format_libvirt_rate(inb.floor)))
    if inb is not None and inb.average:
        avg = units.libvirt_rate_to_bps(inb.average)
        top = units.libvirt_rate_to_bps(inb.peak) if inb.peak else avg
        top = max(top, avg)
        if top > OVS_HTB_MAX_BPS:
            raise InputError("%s: inbound rate %s is above what OVS linux-htb can store "
                             "(%s)" % (label, units.format_bps(top), units.format_bps(OVS_HTB_MAX_BPS)))
        kw.update(qos_max_rate=top, queue_min_rate=avg, queue_max_rate=avg,
                  queue_burst=units.libvirt_burst_to_bits(inb.burst) if inb.burst else None)
        if inb.peak is not None and inb.peak > inb.average:
            warnings.append(
                "%s: inbound peak %s is the QoS max-rate (root class ceiling) but OVS "
                "linux-htb cannot cap the burst's own rate at it: the burst (%s) leaves "
                "at line rate, then the rate is held at average %s "
                "(docs/ovs-mapping.md)" % (label, units.format_libvirt_rate(inb.peak),
                                          units.format_libvirt_burst(inb.burst) if inb.burst
                                          else "OVS minimum", units.format_libvirt_rate(inb.average)))
    warnings.extend(policy.burst_warnings(bw, label))   # bursts below one MTU
    return OvsSettings(**kw), tuple(warnings)


# -- ops ----------------------------------------------------------------------------

def _tags(domain_uuid, mac, ifname):
    return tuple((k, v) for k, v in ((OWNER_KEY, domain_uuid or ""), (MAC_KEY, mac or ""),
                                     (IFNAME_KEY, ifname or "")))


def _vsctl(remote, *parts):
    argv = ["ovs-vsctl", "--db=" + (remote or REMOTE_PLACEHOLDER)]
    return argv + list(parts)


def _kv(col, d):
    return ["%s:%s=%s" % (col, k, _q(v)) for k, v in d]


def _q(v):
    v = str(v)
    if v == "" or any(c in v for c in ' :,="{}[]'):
        return '"%s"' % v.replace('"', '\\"')
    return v


def _port_ref(port, mac):
    if port:
        return port
    # MAC-only interface and OVSDB not read: let the shell find the port
    return "$(ovs-vsctl --bare --columns=name find Interface external_ids:attached-mac=%s)" % _q(mac)


def _render(argv):
    # keep a $(...) port lookup unquoted so the pasted line works
    out = []
    for a in argv:
        out.append(a if a.startswith("$(") else sh(a))
    return " ".join(out)


class SetInboundQos(Op):
    """Give a Port a qos-hooks linux-htb QoS (create rows, or update ours in place)."""

    backend = BACKEND_OVSDB
    port: Optional[str]
    mac: Optional[str]
    domain_uuid: Optional[str]
    qos_max_rate: int
    queue_min_rate: int
    queue_max_rate: int
    queue_burst: Optional[int] = None
    existing_qos: Optional[str] = None     # our QoS row, updated in place
    existing_queue: Optional[str] = None   # its queue 0
    supersedes: Tuple[str, ...] = ()       # libvirt QoS rows replaced (destroyed)
    superseded_queues: Tuple[str, ...] = ()
    remote: Optional[str] = None

    @property
    def settings(self):
        return OvsSettings(qos_max_rate=self.qos_max_rate, queue_min_rate=self.queue_min_rate,
                           queue_max_rate=self.queue_max_rate, queue_burst=self.queue_burst)

    def tags(self):
        return _tags(self.domain_uuid, self.mac, self.port)

    def describe(self):
        burst = ("burst %d bit (%s)" % (self.queue_burst, units.format_bytes(self.queue_burst // 8))
                 if self.queue_burst is not None else "OVS minimum burst")
        how = ("update qos-hooks QoS %s in place" % self.existing_qos if self.existing_qos
               else "create a qos-hooks QoS + Queue")
        text = ("VM inbound on port %s (%s): %s: linux-htb max-rate %s, queue 0 "
                "min-rate = max-rate %s (sustained), %s"
                % (self.port or "?", self.mac or "no MAC", how,
                   units.format_bps(self.qos_max_rate), units.format_bps(self.queue_min_rate),
                   burst))
        if self.supersedes:
            text += "; replaces libvirt's QoS %s (destroyed with its queues %s)" % (
                ", ".join(self.supersedes), ", ".join(self.superseded_queues) or "-")
        # what ovs-vswitchd then does in the kernel (lib/netdev-linux.c htb_*)
        text += ("; ovs-vswitchd then puts on %s: htb 1:, class 1:fffe rate=ceil %s, "
                 "class 1:1 rate=ceil %s" % (self.port or "the port",
                                             units.format_bps(self.qos_max_rate),
                                             units.format_bps(self.queue_max_rate)))
        return text

    def commands(self):
        qcfg = sorted(self.settings.queue_other_config().items())
        if self.existing_qos:
            argv = _vsctl(self.remote, "--", "set", "QoS", self.existing_qos, "type=" + QOS_TYPE,
                          "other_config:max-rate=%d" % self.qos_max_rate,
                          "--", "set", "Queue", self.existing_queue or "QUEUE", *_kv("other_config", qcfg))
            if self.queue_burst is None:
                argv += ["--", "remove", "Queue", self.existing_queue or "QUEUE", "other_config", "burst"]
            argv += ["--", "set", "Port", _port_ref(self.port, self.mac),
                     "qos=" + self.existing_qos]
        else:
            argv = _vsctl(self.remote, "--", "set", "Port", _port_ref(self.port, self.mac), "qos=@qos",
                          "--", "--id=@qos", "create", "QoS", "type=" + QOS_TYPE,
                          "other_config:max-rate=%d" % self.qos_max_rate, "queues:0=@q0",
                          *_kv("external_ids", self.tags()),
                          "--", "--id=@q0", "create", "Queue", *_kv("other_config", qcfg),
                          *_kv("external_ids", self.tags()))
        for u in self.supersedes:
            argv += ["--", "destroy", "QoS", u]
        for u in self.superseded_queues:
            argv += ["--", "destroy", "Queue", u]
        return (_render(argv),)


class SetPolicing(Op):
    """Set (or reset to 0) an Interface's ingress policing: the VM's outbound limit."""

    backend = BACKEND_OVSDB
    interface: Optional[str]
    mac: Optional[str]
    domain_uuid: Optional[str]
    rate: int            # kbit/s, 0 = off
    burst: int           # kbit
    previous_rate: int = 0
    previous_burst: int = 0
    remote: Optional[str] = None

    def tags(self):
        return _tags(self.domain_uuid, self.mac, self.interface)

    def describe(self):
        who = "interface %s (%s)" % (self.interface or "?", self.mac or "no MAC")
        if self.rate == 0:
            return ("VM outbound on %s: turn ingress policing off (was %d kbit/s, burst %d "
                    "kbit) and drop the qos-hooks marks" % (who, self.previous_rate, self.previous_burst))
        return ("VM outbound on %s: ingress_policing_rate %d kbit/s (%s), ingress_policing_burst "
                "%d kbit%s (was %d/%d)" % (who, self.rate, units.format_bps(self.rate * 1000),
                                           self.burst, " = OVS default 8000 kbit" if not self.burst else "",
                                           self.previous_rate, self.previous_burst))

    def commands(self):
        ref = _port_ref(self.interface, self.mac)
        argv = _vsctl(self.remote, "--", "set", "Interface", ref,
                      "ingress_policing_rate=%d" % self.rate,
                      "ingress_policing_burst=%d" % self.burst)
        if self.rate:
            argv += _kv("external_ids", self.tags())
        else:
            argv += ["--", "remove", "Interface", ref, "external_ids"] + list(OWN_KEYS)
        return (_render(argv),)


class DestroyQos(Op):
    """Destroy a QoS row (and its queues no other QoS uses), unhooking a Port first."""

    backend = BACKEND_OVSDB
    qos_uuid: str
    queue_uuids: Tuple[str, ...]
    owner: str
    port: Optional[str] = None          # Port whose ``qos`` points at it (cleared)
    reason: str = ""
    domain_uuid: Optional[str] = None
    remote: Optional[str] = None
    also_ports: Tuple[str, ...] = ()    # further Ports pointing at it (cleared too)

    @property
    def ports(self):
        return ((self.port,) if self.port else ()) + self.also_ports

    def describe(self):
        text = "destroy %s QoS %s" % (self.owner, self.qos_uuid)
        if self.queue_uuids:
            text += " and Queue %s" % ", ".join(self.queue_uuids)
        if self.ports:
            text += " after clearing Port %s qos" % ", ".join(self.ports)
        return text + (" (%s)" % self.reason if self.reason else "")

    def commands(self):
        argv = _vsctl(self.remote)
        for port in self.ports:
            argv += ["--", "clear", "Port", port, "qos"]
        argv += ["--", "destroy", "QoS", self.qos_uuid]
        for q in self.queue_uuids:
            argv += ["--", "destroy", "Queue", q]
        return (_render(argv),)


class DestroyQueue(Op):
    """Destroy an orphaned Queue row (no QoS refers to it)."""

    backend = BACKEND_OVSDB
    queue_uuid: str
    owner: str
    reason: str = ""
    remote: Optional[str] = None

    def describe(self):
        return "destroy orphaned %s Queue %s (%s)" % (self.owner, self.queue_uuid, self.reason)

    def commands(self):
        return (_render(_vsctl(self.remote, "--", "destroy", "Queue", self.queue_uuid)),)


class ReattachQos(Op):
    """Make ovs-vswitchd reinstall a port's htb that someone removed from the kernel.

    ovs-vswitchd caches the qdisc it installed and does not notice a
    ``tc qdisc del`` (measured: neither a link flap nor an MTU change brings it
    back); OVSDB is right, the kernel is not.  Unhooking the QoS (one
    transaction, wait for ovs-vswitchd) and hooking it back (a second one)
    makes it query the kernel and install the htb again.  Only planned after
    verification found exactly this; the rows themselves are unchanged.
    """

    backend = BACKEND_OVSDB
    port: str
    qos_uuid: str
    reason: str = ""
    remote: Optional[str] = None

    def describe(self):
        return ("repair port %s: the kernel lost the htb ovs-vswitchd made for QoS %s (%s); "
                "unhook and re-hook the QoS so ovs-vswitchd installs it again"
                % (self.port, self.qos_uuid, self.reason or "removed behind its back"))

    def commands(self):
        return (_render(_vsctl(self.remote, "clear", "Port", self.port, "qos")),
                _render(_vsctl(self.remote, "set", "Port", self.port, "qos=" + self.qos_uuid)))


OVS_OPS = (SetInboundQos, SetPolicing, DestroyQos, DestroyQueue, ReattachQos)


def plan_repair(snapshot, differences, remote=None):
    """ReattachQos ops for ports whose OVSDB state is right and whose kernel
    lacks (or has a wrong) OVS htb."""
    ovsdb_bad = {d.port for d in differences if d.layer == "ovsdb"}
    ops = []
    for port_name in sorted({d.port for d in differences
                             if d.layer == "kernel" and d.fatal and d.port not in ovsdb_bad
                             and (d.key == "root qdisc" or d.key.startswith("class "))}):
        port = snapshot.ports.get(port_name)
        if port is None or not port.qos:
            continue
        what = "; ".join("%s: desired %s, actual %s" % (d.key, d.desired, d.actual)
                         for d in differences if d.port == port_name and d.layer == "kernel"
                         and d.fatal)
        ops.append(ReattachQos(port_name, port.qos, what, remote=remote))
    return Plan(tuple(ops))


# -- per-interface outcome -------------------------------------------------------

class PortOutcome(Record):
    mac: Optional[str]
    target_dev: Optional[str]
    port: Optional[str]
    action: str          # applied|unchanged|cleared|not-found|refused|ambiguous|planned|not-on-ovs
    detail: str = ""

    @property
    def ok(self):
        return self.action in ("applied", "unchanged", "cleared", "planned", "not-on-ovs")

    def to_dict(self):
        return {"mac": self.mac, "target_dev": self.target_dev, "port": self.port,
                "action": self.action, "detail": self.detail}


# -- resolving interfaces to ports ---------------------------------------------

def resolve(snapshot, iface, domain_uuid=None):
    """(PortRow or None, problem or None) for an InterfaceQos.

    With a target dev: the Port of that name.  Without (VDSM's
    after_nic_hotplug, and the ``Interface.getXML()`` documents of
    after_update_device / after_nic_hotunplug): the one Port whose Interface
    has ``attached-mac`` == the MAC and, where libvirt set ``vm-id``, that
    ``vm-id`` == ``domain_uuid``.  Whether the port found may be touched is
    :func:`port_refusal`'s question.
    """
    if iface.target_dev:
        port = snapshot.ports.get(iface.target_dev)
        if port is None:
            return None, "no OVS Port named %s" % iface.target_dev
        return port, None
    if not iface.mac:
        return None, "interface has neither a target dev nor a MAC"
    found = snapshot.ports_by_mac(iface.mac, domain_uuid)
    if not found:
        return None, NOT_ON_OVS % (iface.mac, domain_uuid or "-")
    if len(found) > 1:
        return None, "several OVS Interfaces carry attached-mac=%s (%s): refusing to guess" % (
            iface.mac, ", ".join(p.name for p in found))
    return found[0], None


NOT_ON_OVS = ("no OVS Interface with external_ids:attached-mac=%s (and vm-id %s or none): "
              "not an Open vSwitch vNIC, nothing to do")

# Interface types a VM's own port can have: "" / system (a tap libvirt made and
# added), tap, and DPDK vhost-user ports (refused later as unsupported, with
# their own message).  internal (every bridge's local port), patch, and the
# tunnel types (gre, vxlan, geneve, stt, erspan, ...) never are
# (vswitchd/vswitch.xml, Interface "type").
VM_INTERFACE_TYPES = ("", "system", "tap", "dpdkvhostuser", "dpdkvhostuserclient")


def port_refusal(snapshot, port, mac, domain_uuid):
    """Why ``port`` is not the VM's own (a sentence naming it), or None.

    The VM's own port: one Interface; of a VM's type; not a bridge's local
    port; its ``external_ids:attached-mac`` equals the request's MAC; and
    where libvirt set ``external_ids:vm-id`` (virNetDevOpenvswitchAddPort,
    libvirt src/util/virnetdevopenvswitch.c, sets attached-mac, iface-id and
    vm-id on every port it adds) it equals the request's domain UUID.
    """
    what = "port %s" % port.name
    if port.name in snapshot.bridges:
        return "%s is bridge %s's own local port, not a VM's" % (what, port.name)
    if len(port.interfaces) != 1:
        return "%s has %d interfaces (a bond?), a VM's tap port has one" % (
            what, len(port.interfaces))
    iface = snapshot.interface_of(port)
    if iface is None:
        return "%s has no Interface row" % what
    if iface.type not in VM_INTERFACE_TYPES:
        return "%s: Interface %s is of type %s, never a VM's" % (what, iface.name, iface.type)
    have_mac = (iface.external_ids.get(ATTACHED_MAC_KEY) or "").lower()
    if not mac:
        return "%s: the request carries no MAC, so it cannot show the port is the VM's" % what
    if have_mac != mac.lower():
        return "%s: Interface %s has external_ids:attached-mac=%s, the request's MAC is %s" % (
            what, iface.name, have_mac or "(none)", mac)
    vm = iface.external_ids.get(LIBVIRT_VM_KEY)
    if vm and vm.lower() != (domain_uuid or "").lower():
        return "%s: Interface %s belongs to domain %s (external_ids:vm-id), not to %s" % (
            what, iface.name, vm, domain_uuid or "(no UUID)")
    return None


def check_unique(dq):
    """Refuse a request naming the same target dev or MAC twice (QoS and Queue
    are root tables: a second plan for one port would leak rows)."""
    seen = {}
    for n, i in enumerate(dq.interfaces):
        for key, value in (("target_dev", i.target_dev), ("mac", (i.mac or "").lower() or None)):
            if value is None:
                continue
            if (key, value) in seen:
                raise PortRefused("request refused: %s %s appears twice in one request "
                                  "(interfaces %d and %d): nothing was changed"
                                  % (key, value, seen[(key, value)], n))
            seen[(key, value)] = n


# -- comparisons (shared by planning, verification and status) -------------------

def ovsdb_actual(snapshot, port):
    """What OVSDB holds for a port, in the OvsSettings vocabulary, plus owners."""
    iface = snapshot.interface_of(port)
    qos = snapshot.qos.get(port.qos) if port.qos else None
    queue = snapshot.queues.get(qos.queues.get(0)) if qos is not None and 0 in qos.queues else None
    d = {
        "ingress_policing_rate": iface.policing_rate if iface else None,
        "ingress_policing_burst": iface.policing_burst if iface else None,
        "qos": qos.uuid if qos else None,
        "qos.owner": qos.owner if qos else None,
        "qos.type": qos.type if qos else None,
        "qos.max-rate": _int(qos.other_config.get("max-rate")) if qos else None,
        "queues": tuple(sorted(qos.queues)) if qos else None,
        "queue0.min-rate": _int(queue.other_config.get("min-rate")) if queue else None,
        "queue0.max-rate": _int(queue.other_config.get("max-rate")) if queue else None,
        "queue0.burst": _int(queue.other_config.get("burst")) if queue else None,
    }
    return d


def _int(s):
    try:
        return int(s) if s is not None else None
    except ValueError:
        return s


def ovsdb_desired(settings):
    d = {"ingress_policing_rate": settings.policing_rate,
         "ingress_policing_burst": settings.policing_burst}
    if settings.has_inbound:
        d.update({"qos.owner": OWNER_QOS_HOOKS, "qos.type": QOS_TYPE,
                  "qos.max-rate": settings.qos_max_rate, "queues": (0,),
                  "queue0.min-rate": settings.queue_min_rate,
                  "queue0.max-rate": settings.queue_max_rate,
                  "queue0.burst": settings.queue_burst})
    else:
        d["qos.owner"] = None   # no qos-hooks QoS wanted (foreign QoS is left alone)
    return d


def ovsdb_differences(snapshot, port, settings):
    actual = ovsdb_actual(snapshot, port)
    desired = ovsdb_desired(settings)
    out = []
    for k, want in desired.items():
        have = actual.get(k)
        if k == "qos.owner" and want is None:
            if have == OWNER_QOS_HOOKS:
                out.append(Difference(port.name, "ovsdb", k, None, have))
            continue
        if have != want:
            out.append(Difference(port.name, "ovsdb", k, want, have))
    return out


# -- planning -----------------------------------------------------------------------

def _queues_to_destroy(snapshot, qos, also_destroyed=()):
    """Queues of ``qos`` that no other (surviving) QoS uses."""
    out = []
    for q in sorted(set(qos.queues.values())):
        users = [x.uuid for x in snapshot.qos_using_queue(q)
                 if x.uuid != qos.uuid and x.uuid not in also_destroyed]
        if not users and q in snapshot.queues:
            out.append(q)
    return tuple(out)


def _policing_owner(iface, domain_uuid):
    if OWNER_KEY in iface.external_ids:
        return OWNER_QOS_HOOKS
    if iface.policing_rate == 0 and iface.policing_burst == 0:
        return None
    if domain_uuid and iface.external_ids.get(LIBVIRT_VM_KEY) == domain_uuid:
        return OWNER_LIBVIRT
    return OWNER_UNKNOWN


def plan_apply(snapshot, dq, *, replace_libvirt=True, remote=None):
    """(Plan, outcomes) that bring dq's interfaces to their mapped OVS settings.

    ``snapshot`` None plans without reading OVSDB (dry-run without --ovsdb):
    every port is assumed to exist with no QoS.
    """
    check_unique(dq)
    if snapshot is not None:
        _refuse_foreign_ports(snapshot, dq)
    ops, warnings, notes, outcomes = [], [], [], []
    for iface in dq.interfaces:
        label = "interface %s" % iface.label
        settings, warns = map_bandwidth(iface.bandwidth, label)
        warnings.extend(warns)
        if snapshot is None:
            port_name = iface.target_dev
            if settings.has_inbound:
                ops.append(SetInboundQos(port_name, iface.mac, dq.uuid, settings.qos_max_rate,
                                         settings.queue_min_rate, settings.queue_max_rate,
                                         settings.queue_burst, remote=remote))
            if settings.has_outbound:
                ops.append(SetPolicing(port_name, iface.mac, dq.uuid, settings.policing_rate,
                                       settings.policing_burst, remote=remote))
            outcomes.append(PortOutcome(iface.mac, iface.target_dev, port_name, "planned"))
            continue
        port, problem = resolve(snapshot, iface, dq.uuid)
        if port is None and not settings.has_inbound and not settings.has_outbound:
            # nothing wanted and no port: nothing of ours can be there either
            outcomes.append(PortOutcome(iface.mac, iface.target_dev, None, "unchanged",
                                        "no QoS wanted; %s" % problem))
            continue
        if (port is None and not iface.target_dev and iface.mac
                and not snapshot.ports_by_mac(iface.mac, dq.uuid)):
            # found by MAC only (VDSM's getXML() documents carry neither
            # <virtualport> nor <target dev>): a MAC no OVS Interface carries
            # is a vNIC on something else (a Linux bridge): nothing to do
            notes.append("%s: %s" % (label, problem))
            outcomes.append(PortOutcome(iface.mac, None, None, "not-on-ovs", problem))
            continue
        if port is None:
            warnings.append("%s: %s" % (label, problem))
            outcomes.append(PortOutcome(iface.mac, iface.target_dev, None,
                                        "ambiguous" if "several" in problem else "not-found",
                                        problem))
            continue
        p_ops, refusals = _plan_port(snapshot, port, iface, settings, dq.uuid,
                                     replace_libvirt, remote)
        p_ops.extend(_own_orphans(snapshot, port, iface, dq.uuid, p_ops, remote))
        ops.extend(p_ops)
        for r in refusals:
            warnings.append("%s (port %s): %s" % (label, port.name, r))
        if refusals:
            outcomes.append(PortOutcome(iface.mac, iface.target_dev, port.name, "refused",
                                        "; ".join(refusals)))
        else:
            outcomes.append(PortOutcome(iface.mac, iface.target_dev, port.name,
                                        "applied" if p_ops else "unchanged"))
    if snapshot is None:
        notes.append("OVSDB was not read (no --ovsdb and no local socket): the OVS steps "
                     "assume each port exists and carries no QoS yet")
    return Plan(tuple(ops), tuple(warnings), tuple(notes)), tuple(outcomes)


def _refuse_foreign_ports(snapshot, dq):
    """Raise PortRefused naming every port of the request that is not the
    VM's own (port_refusal): the whole request is refused, nothing written."""
    reasons = []
    for iface in dq.interfaces:
        port, _ = resolve(snapshot, iface, dq.uuid)
        if port is None:
            continue
        why = port_refusal(snapshot, port, iface.mac, dq.uuid)
        if why is not None:
            reasons.append("interface %s: %s" % (iface.label, why))
    if reasons:
        raise PortRefused("request refused for domain %s: %s; nothing was changed"
                          % (dq.uuid or "?", "; ".join(reasons)))


def _plan_port(snapshot, port, iface, settings, domain_uuid, replace_libvirt, remote):
    ops, refusals = [], []
    qos = snapshot.qos.get(port.qos) if port.qos else None
    iface_row = snapshot.interface_of(port)
    if iface_row is not None and iface_row.type.startswith("dpdk") and (
            settings.has_inbound or settings.has_outbound):
        # lib/netdev-dpdk.c offers egress-policer / trtcm-policer, not linux-htb,
        # and its ingress policing is not tc: this mapping does not hold there
        refusals.append("Interface %s is of type %s (DPDK): the linux-htb / tc mapping does "
                        "not apply; not supported by qos-hooks" % (iface_row.name, iface_row.type))
        return ops, refusals
    # inbound -------------------------------------------------------------------
    if settings.has_inbound:
        if qos is not None and qos.owner == OWNER_QOS_HOOKS:
            queue_uuid = qos.queues.get(0)
            queue = snapshot.queues.get(queue_uuid) if queue_uuid else None
            extra = len(qos.queues) != 1 or queue is None or queue.owner != OWNER_QOS_HOOKS
            same = (not extra and qos.type == QOS_TYPE
                    and qos.other_config == settings.qos_other_config()
                    and queue.other_config == settings.queue_other_config()
                    and _tags_match(qos.external_ids, domain_uuid, iface.mac, port.name))
            if extra:
                # not the shape we make: replace it by a fresh pair of rows
                ops.append(SetInboundQos(port.name, iface.mac, domain_uuid, settings.qos_max_rate,
                                         settings.queue_min_rate, settings.queue_max_rate,
                                         settings.queue_burst, supersedes=(qos.uuid,),
                                         superseded_queues=_queues_to_destroy(snapshot, qos),
                                         remote=remote))
            elif not same:
                ops.append(SetInboundQos(port.name, iface.mac, domain_uuid, settings.qos_max_rate,
                                         settings.queue_min_rate, settings.queue_max_rate,
                                         settings.queue_burst, existing_qos=qos.uuid,
                                         existing_queue=queue_uuid, remote=remote))
        elif qos is not None and qos.owner == OWNER_LIBVIRT:
            if replace_libvirt and domain_uuid and qos.external_ids.get(LIBVIRT_VM_KEY) == domain_uuid:
                others = [p.name for p in snapshot.ports_using_qos(qos.uuid) if p.name != port.name]
                ops.append(SetInboundQos(
                    port.name, iface.mac, domain_uuid, settings.qos_max_rate,
                    settings.queue_min_rate, settings.queue_max_rate, settings.queue_burst,
                    supersedes=() if others else (qos.uuid,),
                    superseded_queues=() if others else _queues_to_destroy(snapshot, qos),
                    remote=remote))
            else:
                refusals.append("QoS %s was made by libvirt for domain %s, not this one (%s)%s: "
                                "not touched" % (qos.uuid, qos.external_ids.get(LIBVIRT_VM_KEY),
                                                 domain_uuid, "" if replace_libvirt
                                                 else " and replace_libvirt is off"))
        elif qos is not None:
            refusals.append("QoS %s is owned by %s (external_ids %s): not touched; VM inbound "
                            "is NOT limited by qos-hooks" % (qos.uuid, qos.owner,
                                                             _fmt_ids(qos.external_ids)))
        else:
            ops.append(SetInboundQos(port.name, iface.mac, domain_uuid, settings.qos_max_rate,
                                     settings.queue_min_rate, settings.queue_max_rate,
                                     settings.queue_burst, remote=remote))
    elif qos is not None and qos.owner == OWNER_QOS_HOOKS:
        ops.append(DestroyQos(qos.uuid, _queues_to_destroy(snapshot, qos), OWNER_QOS_HOOKS,
                              port=port.name, reason="no inbound QoS wanted any more",
                              domain_uuid=domain_uuid, remote=remote))
    # outbound ------------------------------------------------------------------
    iface_row = snapshot.interface_of(port)
    if iface_row is None:
        refusals.append("Port %s has no Interface row" % port.name)
        return ops, refusals
    owner = _policing_owner(iface_row, domain_uuid)
    want_rate, want_burst = settings.policing_rate, settings.policing_burst
    have = (iface_row.policing_rate, iface_row.policing_burst)
    if settings.has_outbound:
        if owner in (None, OWNER_QOS_HOOKS) or (owner == OWNER_LIBVIRT and replace_libvirt):
            if have != (want_rate, want_burst) or not _tags_match(
                    iface_row.external_ids, domain_uuid, iface.mac, iface_row.name):
                ops.append(SetPolicing(iface_row.name, iface.mac, domain_uuid, want_rate,
                                       want_burst, have[0], have[1], remote=remote))
        else:
            refusals.append("Interface %s already has ingress policing %d kbit/s burst %d "
                            "kbit that qos-hooks did not set: not touched; VM outbound is "
                            "NOT limited by qos-hooks" % (iface_row.name, have[0], have[1]))
    elif owner == OWNER_QOS_HOOKS:
        ops.append(SetPolicing(iface_row.name, iface.mac, domain_uuid, 0, 0, have[0], have[1],
                               remote=remote))
    return ops, refusals


def _own_orphans(snapshot, port, iface, domain_uuid, planned, remote):
    """qos-hooks QoS rows of this interface that no Port uses any more.

    libvirt (>= 7.10) changing a port's bandwidth itself (updateDevice,
    setInterfaceParameters) points Port.qos at a new QoS of its own and
    leaves ours unreferenced; apply then replaces libvirt's and removes ours
    in the same transaction, so one apply leaves one qos-hooks QoS per port.
    """
    superseded = {u for op in planned for u in getattr(op, "supersedes", ())}
    out = []
    gone = set(superseded)
    for qos in sorted(snapshot.qos.values(), key=lambda q: q.uuid):
        ids = qos.external_ids
        if qos.owner != OWNER_QOS_HOOKS or qos.uuid in superseded or qos.uuid == port.qos:
            continue
        if ids.get(OWNER_KEY) not in (domain_uuid or "", ""):
            continue
        if not ((iface.mac and ids.get(MAC_KEY) == iface.mac) or ids.get(IFNAME_KEY) == port.name):
            continue
        if snapshot.ports_using_qos(qos.uuid):
            continue
        gone.add(qos.uuid)
        out.append(DestroyQos(qos.uuid, _queues_to_destroy(snapshot, qos, gone), OWNER_QOS_HOOKS,
                              reason="orphaned qos-hooks QoS of this interface (no Port uses it)",
                              domain_uuid=domain_uuid, remote=remote))
    return out


def _tags_match(ids, domain_uuid, mac, ifname):
    return (ids.get(OWNER_KEY) == (domain_uuid or "") and ids.get(MAC_KEY) == (mac or "")
            and ids.get(IFNAME_KEY) == (ifname or ""))


def _fmt_ids(ids):
    return "{%s}" % ", ".join("%s=%s" % kv for kv in sorted(ids.items())) if ids else "{}"


def _owned_by(ids, domain_uuid, macs):
    if OWNER_KEY not in ids:
        return False
    if domain_uuid and ids.get(OWNER_KEY) == domain_uuid:
        return True
    return bool(ids.get(MAC_KEY)) and ids.get(MAC_KEY) in macs


def plan_clear(snapshot, dq, *, libvirt_leftovers=False, remote=None):
    """(Plan, outcomes) removing what qos-hooks owns for dq.

    With ``dq.interfaces`` empty, everything owned for ``dq.uuid`` goes.  With
    interfaces (a domain being destroyed, a hot-unplug), the rows of those
    interfaces (:func:`_row_of`: by MAC, and by interface name too when the
    XML has ``<target dev>``), plus every qos-hooks row of ``dq.uuid`` that
    no Port references (a NIC detached by plain libvirt, which runs no hook,
    leaves such rows).  When ``dq.uuid`` is known a row must also carry that
    uuid (or none): libvirt reuses ``vnetN`` names at once, and a late clear
    of a stopped domain must not hit the next domain's rows on the same name.
    Matching the interface name keeps a migration source's ``stopped`` away
    from the destination's fresh rows when both hosts share one OVSDB (same
    uuid and MAC, another port).  ``libvirt_leftovers``: also libvirt
    QoS/Queue rows with vm-id == dq.uuid that no Port uses.
    """
    check_unique(dq)
    ops, warnings, outcomes = [], [], []
    whole_domain = not dq.interfaces

    def selected(ids, unreferenced=False):
        if OWNER_KEY not in ids:
            return False
        if dq.uuid and ids.get(OWNER_KEY) not in (dq.uuid, ""):
            return False
        if whole_domain:
            return bool(dq.uuid)
        if any(_row_of(ids, i) for i in dq.interfaces):
            return True
        return unreferenced and bool(dq.uuid) and ids.get(OWNER_KEY) == dq.uuid

    destroyed_qos = set()
    for qos in sorted(snapshot.qos.values(), key=lambda q: q.uuid):
        users = snapshot.ports_using_qos(qos.uuid)
        if not selected(qos.external_ids, unreferenced=not users):
            continue
        if len(users) > 1:
            warnings.append("qos-hooks QoS %s is used by several ports (%s): clearing all of them"
                            % (qos.uuid, ", ".join(p.name for p in users)))
        destroyed_qos.add(qos.uuid)
        ops.append(DestroyQos(qos.uuid, _queues_to_destroy(snapshot, qos, destroyed_qos),
                              OWNER_QOS_HOOKS, port=users[0].name if users else None,
                              reason="clear for domain %s%s" % (
                                  dq.uuid or "?", "" if users else " (no Port uses it)"),
                              domain_uuid=dq.uuid, remote=remote,
                              also_ports=tuple(u.name for u in users[1:])))
    if dq.uuid and not whole_domain:
        queued = {q for op in ops for q in op.queue_uuids}
        for queue in sorted(snapshot.queues.values(), key=lambda q: q.uuid):
            if (queue.uuid in queued or queue.owner != OWNER_QOS_HOOKS
                    or queue.external_ids.get(OWNER_KEY) != dq.uuid):
                continue
            if [x for x in snapshot.qos_using_queue(queue.uuid) if x.uuid not in destroyed_qos]:
                continue
            ops.append(DestroyQueue(queue.uuid, OWNER_QOS_HOOKS,
                                    "clear for domain %s: no QoS uses it" % dq.uuid,
                                    remote=remote))
    for port in sorted(snapshot.ports.values(), key=lambda p: p.name):
        iface = snapshot.interface_of(port)
        if iface is None or not selected(iface.external_ids):
            continue
        ops.append(SetPolicing(iface.name, iface.external_ids.get(MAC_KEY), dq.uuid, 0, 0,
                               iface.policing_rate, iface.policing_burst, remote=remote))
    if libvirt_leftovers and dq.uuid:
        ops.extend(_libvirt_leftover_ops(snapshot, remote, lambda ids: ids.get(LIBVIRT_VM_KEY) == dq.uuid,
                                         destroyed_qos))
    for i in dq.interfaces:
        port = None
        if i.target_dev and i.target_dev in snapshot.ports:
            port = i.target_dev
        elif i.mac:
            found = snapshot.ports_by_mac(i.mac, dq.uuid)
            port = found[0].name if len(found) == 1 else None
        outcomes.append(PortOutcome(i.mac, i.target_dev, port, "cleared"))
    return Plan(tuple(_dedupe(ops)), tuple(warnings), ()), tuple(outcomes)


def _row_of(ids, iface):
    """Whether a qos-hooks row's tags name this interface of the request.

    By MAC; when the request has a ``<target dev>`` too, the row's
    ``qos-hooks-ifname`` must be that name (a row of the same MAC on another
    port is another host's copy of the domain: a migration destination).  A
    request without a MAC matches by name alone.
    """
    row_mac, row_if = ids.get(MAC_KEY) or "", ids.get(IFNAME_KEY) or ""
    if iface.target_dev and row_if and row_if != iface.target_dev:
        return False
    if iface.mac and row_mac and row_mac != iface.mac:
        return False
    return bool((iface.mac and row_mac == iface.mac)
                or (iface.target_dev and row_if == iface.target_dev))


def _libvirt_leftover_ops(snapshot, remote, match, already=()):
    """libvirt QoS rows matching ``match`` that no Port uses, and their queues."""
    ops = []
    gone = set(already)
    for qos in sorted(snapshot.qos.values(), key=lambda q: q.uuid):
        if qos.uuid in gone or qos.owner != OWNER_LIBVIRT or not match(qos.external_ids):
            continue
        if snapshot.ports_using_qos(qos.uuid):
            continue
        gone.add(qos.uuid)
        ops.append(DestroyQos(qos.uuid, _queues_to_destroy(snapshot, qos, gone), OWNER_LIBVIRT,
                              reason="libvirt leftover: vm-id %s, no Port uses it"
                              % qos.external_ids.get(LIBVIRT_VM_KEY), remote=remote))
    queued = {q for op in ops for q in op.queue_uuids}
    for queue in sorted(snapshot.queues.values(), key=lambda q: q.uuid):
        if queue.uuid in queued or queue.owner != OWNER_LIBVIRT or not match(queue.external_ids):
            continue
        if [x for x in snapshot.qos_using_queue(queue.uuid) if x.uuid not in gone]:
            continue
        ops.append(DestroyQueue(queue.uuid, OWNER_LIBVIRT, "libvirt leftover: no QoS uses it",
                                remote=remote))
    return ops


def plan_gc(snapshot, *, libvirt_leftovers=False, remote=None):
    """Plan removing qos-hooks rows whose port is gone (and, opt-in, libvirt's leftovers)."""
    ops = []
    gone = set()
    for qos in sorted(snapshot.qos.values(), key=lambda q: q.uuid):
        if qos.owner != OWNER_QOS_HOOKS or snapshot.ports_using_qos(qos.uuid):
            continue
        gone.add(qos.uuid)
        ops.append(DestroyQos(qos.uuid, _queues_to_destroy(snapshot, qos, gone), OWNER_QOS_HOOKS,
                              reason="orphaned: port %s is gone"
                              % (qos.external_ids.get(IFNAME_KEY) or "?"),
                              domain_uuid=qos.external_ids.get(OWNER_KEY), remote=remote))
    queued = {q for op in ops for q in op.queue_uuids}
    for queue in sorted(snapshot.queues.values(), key=lambda q: q.uuid):
        if queue.owner != OWNER_QOS_HOOKS or queue.uuid in queued:
            continue
        if [x for x in snapshot.qos_using_queue(queue.uuid) if x.uuid not in gone]:
            continue
        ops.append(DestroyQueue(queue.uuid, OWNER_QOS_HOOKS, "orphaned: no QoS uses it",
                                remote=remote))
    if libvirt_leftovers:
        ops.extend(_libvirt_leftover_ops(snapshot, remote, lambda ids: True, gone))
    return Plan(tuple(ops), (), ())


def _dedupe(ops):
    seen, out = set(), []
    for op in ops:
        if op in seen:
            continue
        seen.add(op)
        out.append(op)
    return out


# -- dry-run entry point ------------------------------------------------------------
