"""Per-vNIC QoS metrics for Prometheus: what is configured, what passes, what the limiter did.

One collection (``collect``) reads, once per scrape:

* OVSDB (the ``ovs`` IDL, qos_hooks.ovs.ovsdb.Connection with Bridge and
  ``Interface.statistics`` replicated on top of what the backend reads): every
  Port that is a VM interface (its Interface carries libvirt's
  ``external_ids:attached-mac`` / ``vm-id``, or qos-hooks' own tags), its
  bridge, its configured limits (Interface ``ingress_policing_rate/burst``;
  the Port's linux-htb QoS and queue 0), and the Interface ``statistics``
  column (the fallback for the traffic counters, see below);
* the kernel through netlink (pyroute2; never ``tc -s`` text): per device the
  link counters (``IFLA_STATS64``), the htb classes with their statistics
  (``TCA_STATS2``: sent bytes/packets, drops, overlimits, backlog) and the
  ``ingress`` qdisc, whose drop counter counts the packets its police filter
  shot (net/core/dev.c ``tc_run``, called by ``sch_handle_ingress``; before
  Linux 6.6 ``sch_handle_ingress`` itself: ``TC_ACT_SHOT`` ->
  ``mini_qdisc_qstats_cpu_drop``);
* libvirt (read-only connection, or domain XML documents handed in): domain
  names, and the taps of interfaces that are NOT on OVS, whose tc state libvirt
  itself installs (qos_hooks.kernel.tap_status);
* the host network state file (qos_hooks.hostnet.state): the queues qos-hooks put on
  OVS uplinks for host networks, compared by qos_hooks.hostnet.ovs.status.

Traffic counters come from the kernel device when this process sees it (the
OVSDB ``statistics`` column of a kernel device is ovs-vswitchd's copy of the
same netlink counters, refreshed every ``stats-update-interval``, at least
5 s: too coarse for ``qos-hooks top``'s one-second view); from the OVSDB
``statistics`` column otherwise (DPDK / vhost-user ports, or a port device in
a network namespace this process was not pointed at).

Directions are the VM's (FIELD_NOTES section 1): ``inbound`` = into the guest
= the port device's transmit side (OVS linux-htb / libvirt's root htb shape
it), ``outbound`` = out of the guest = the device's receive side (the ingress
police filter limits it).  Units: bytes and bytes per second (Prometheus base
units); libvirt's KB/s and OVS's bit/s and kbit/s are converted.

Ways out (prometheus_client): ``HostCollector`` (mount it in any registry:
``qos-hooks agent`` does), ``serve(address, port)`` (``qos-hooks metrics
--listen``), ``write_textfile(path)`` (``qos-hooks metrics --textfile``, the
node_exporter textfile-collector format, written atomically).  The metric
reference is docs/observability.md.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from qos_hooks.core import log as _log
from qos_hooks.core.errors import BackendUnavailable, QosHooksError

LOG = _log.get("metrics")

DEFAULT_ADDRESS = "127.0.0.1"
# Prometheus' port allocation list (github.com/prometheus/prometheus wiki
# "Default port allocations") has had its 9100-9999 range fully allocated
# since 2023, so a new exporter cannot pick a free number there: 10144 is
# outside it and in no /etc/services entry.  --listen changes it.
DEFAULT_PORT = 10144
DEFAULT_LIBVIRT_URI = "qemu:///system"
DIRECTIONS = ("inbound", "outbound")
BACKEND_OVS, BACKEND_TAP = "ovs", "tap"

# OVSDB columns replicated on top of qos_hooks.ovs.ovsdb.COLUMNS
EXTRA_COLUMNS = {"Bridge": ("name", "ports"), "Interface": ("statistics",)}
# Interface external_ids that mark a VM interface (libvirt, VDSM, qos-hooks)
VM_KEYS = ("attached-mac", "vm-id", "vm-uuid", "iface-id")
OVS_DEFAULT_POLICING_BURST_KBIT = 8000     # ovs vswitch.xml: 0 means 8000 kbit


# -- records ------------------------------------------------------------------------

@dataclass(frozen=True)
class Limit:
    """One direction's configured limit: bytes/s and bytes (None: not set)."""

    average: Optional[int] = None
    peak: Optional[int] = None
    burst: Optional[int] = None


@dataclass(frozen=True)
class ClassStats:
    """An htb class (or the ingress qdisc) as the kernel reports it."""

    handle: str
    rate: int = 0            # bytes/s (htb classes)
    ceil: int = 0
    bytes: int = 0
    packets: int = 0
    drops: int = 0
    overlimits: int = 0
    backlog_bytes: int = 0
    backlog_packets: int = 0


@dataclass(frozen=True)
class DevStats:
    """Kernel view of one device: link counters, htb classes, ingress qdisc."""

    name: str
    exists: bool
    link: Dict[str, int] = field(default_factory=dict)
    classes: Dict[str, ClassStats] = field(default_factory=dict)
    htb_default: Optional[int] = None
    ingress: Optional[ClassStats] = None
    time: float = 0.0        # time.monotonic() when the link counters were dumped


@dataclass(frozen=True)
class Counters:
    bytes: int
    packets: int
    dropped: int = 0


@dataclass(frozen=True)
class Vnic:
    """Everything exported for one VM interface."""

    domain: str
    domain_uuid: str
    mac: str
    ifname: str
    bridge: str
    backend: str                                   # ovs | tap
    limits: Dict[str, Limit] = field(default_factory=dict)          # by direction
    counters: Dict[str, Counters] = field(default_factory=dict)     # by direction
    counter_source: str = ""                       # kernel | ovsdb | ""
    shaper: Dict[str, ClassStats] = field(default_factory=dict)     # htb class by direction
    policer_dropped: Dict[str, int] = field(default_factory=dict)   # by direction
    drift: bool = False
    time: float = 0.0          # time.monotonic() when the counters were read

    def labels(self):
        return (self.domain, self.domain_uuid, self.mac, self.ifname, self.bridge, self.backend)

    def to_dict(self):
        return {"domain": self.domain, "domain_uuid": self.domain_uuid, "mac": self.mac,
                "ifname": self.ifname, "bridge": self.bridge, "backend": self.backend,
                "limits": {d: vars(v) for d, v in self.limits.items()},
                "counters": {d: vars(v) for d, v in self.counters.items()},
                "counter_source": self.counter_source,
                "shaper": {d: vars(v) for d, v in self.shaper.items()},
                "policer_dropped": dict(self.policer_dropped), "drift": self.drift,
                "time": self.time}


@dataclass(frozen=True)
class HostClass:
    """One host network's queue (hostQos class) on an OVS uplink."""

    network: str
    uplink: str
    bridge: str
    vlan: str
    queue: int
    min_rate: Optional[int] = None       # bytes/s
    max_rate: Optional[int] = None       # bytes/s
    shaper: Optional[ClassStats] = None
    drift: bool = False

    def labels(self):
        return (self.network, self.uplink, self.bridge, self.vlan, str(self.queue))


@dataclass(frozen=True)
class HostSample:
    """One collection: monotonic time, vNICs, host classes, per-source health."""

    time: float
    vnics: Tuple[Vnic, ...] = ()
    hostnets: Tuple[HostClass, ...] = ()
    up: Dict[str, bool] = field(default_factory=dict)       # source -> reachable
    problems: Tuple[str, ...] = ()
    seconds: float = 0.0


# -- kernel (netlink) ------------------------------------------------------------------

def _stats2(msg):
    """(bytes, packets, drops, overlimits, backlog, qlen) of a tc message."""
    st = msg.get_attr("TCA_STATS2")
    basic, queue = {}, {}
    if st is not None:
        basic = st.get_attr("TCA_STATS_BASIC") or {}
        queue = st.get_attr("TCA_STATS_QUEUE") or {}
    else:
        old = msg.get_attr("TCA_STATS") or {}
        basic = {"bytes": old.get("bytes", 0), "packets": old.get("packets", 0)}
        queue = {"drops": old.get("drop", 0), "overlimits": old.get("overlimits", 0),
                 "backlog": old.get("backlog", 0), "qlen": old.get("qlen", 0)}
    return (int(basic.get("bytes", 0)), int(basic.get("packets", 0)), int(queue.get("drops", 0)),
            int(queue.get("overlimits", 0)), int(queue.get("backlog", 0)),
            int(queue.get("qlen", 0)))


def read_devices(names, netns=None):
    """{name: DevStats} for the given devices, one netlink socket for all."""
    from qos_hooks.kernel import tc
    names = sorted(set(n for n in names if n))
    if not names:
        return {}
    out = {}
    ipr = tc._iproute(netns)
    try:
        links = {}
        for link in ipr.get_links():
            links[link.get_attr("IFLA_IFNAME")] = link
        read_at = time.monotonic()
        wanted = {links[n]["index"] for n in names if n in links}
        qdiscs = {}
        for q in ipr.get_qdiscs():
            if q["index"] in wanted:
                qdiscs.setdefault(q["index"], []).append(q)
        for name in names:
            link = links.get(name)
            if link is None:
                out[name] = DevStats(name, False)
                continue
            idx = link["index"]
            counters = dict(link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS") or {})
            root_htb, ingress, default = False, None, None
            for q in qdiscs.get(idx, ()):
                kind = q.get_attr("TCA_KIND")
                if q["parent"] == tc.TC_H_ROOT and kind == "htb":
                    root_htb, default = True, tc._htb_default(q)
                elif kind in ("ingress", "clsact"):
                    b, p, d, o, bl, ql = _stats2(q)
                    ingress = ClassStats("ffff:", 0, 0, b, p, d, o, bl, ql)
            classes = {}
            if root_htb:
                for c in ipr.get_classes(index=idx):
                    if c.get_attr("TCA_KIND") != "htb":
                        continue
                    opts = c.get_attr("TCA_OPTIONS")
                    parms = opts.get_attr("TCA_HTB_PARMS") if opts else None
                    rate = ceil = 0
                    if parms:
                        rate = opts.get_attr("TCA_HTB_RATE64") or parms["rate"]
                        ceil = opts.get_attr("TCA_HTB_CEIL64") or parms["ceil"]
                    h = tc.handle_str(c["handle"])
                    b, p, d, o, bl, ql = _stats2(c)
                    classes[h] = ClassStats(h, int(rate), int(ceil), b, p, d, o, bl, ql)
            out[name] = DevStats(name, True, counters, classes, default, ingress, read_at)
    finally:
        ipr.close()
    return out


def _kernel_counters(dev):
    """VM-view Counters from a device's link counters: the device transmits
    what enters the guest and receives what leaves it."""
    s = dev.link
    return {"inbound": Counters(int(s.get("tx_bytes", 0)), int(s.get("tx_packets", 0)),
                                int(s.get("tx_dropped", 0))),
            "outbound": Counters(int(s.get("rx_bytes", 0)), int(s.get("rx_packets", 0)),
                                 int(s.get("rx_dropped", 0)))}


def _ovsdb_counters(stats):
    """The same from an OVSDB Interface ``statistics`` column (switch-port view:
    the port's tx is the guest's inbound), or None when the column is empty."""
    if not stats or "rx_bytes" not in stats:
        return None
    g = lambda k: int(stats.get(k, 0))  # noqa: E731
    return {"inbound": Counters(g("tx_bytes"), g("tx_packets"), g("tx_dropped")),
            "outbound": Counters(g("rx_bytes"), g("rx_packets"), g("rx_dropped"))}


# -- sources -------------------------------------------------------------------------------

def libvirt_domain_xmls(uri=DEFAULT_LIBVIRT_URI):
    """Live XML of every running domain, through a read-only libvirt connection."""
    try:
        import libvirt
    except ImportError as e:
        raise BackendUnavailable("libvirt-python is missing: %s" % e)
    libvirt.registerErrorHandler(lambda *a: None, None)
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as e:
        raise BackendUnavailable("libvirt %s: %s" % (uri, e))
    try:
        return [d.XMLDesc(0) for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
    except libvirt.libvirtError as e:
        raise BackendUnavailable("libvirt %s: %s" % (uri, e))
    finally:
        conn.close()


def _docs(xmls):
    from qos_hooks.core.domxml import DomainDoc
    out = []
    for i, x in enumerate(xmls):
        data = x.encode("utf-8") if isinstance(x, str) else x
        out.append(DomainDoc(data, "<domain %d>" % i))
    return out


def _ovs_limits(snap, port, iface):
    """Configured limits of an OVS port, from its OVSDB rows (bytes, bytes/s)."""
    limits = {}
    qos = snap.qos.get(port.qos) if port.qos else None
    if qos is not None and qos.type == "linux-htb":
        queue = snap.queues.get(qos.queues.get(0)) if 0 in qos.queues else None
        oc = queue.other_config if queue is not None else {}

        def num(d, k):
            try:
                return int(d[k]) // 8 if k in d else None
            except (TypeError, ValueError):
                return None
        avg = num(oc, "min-rate")
        top = num(qos.other_config, "max-rate") or num(oc, "max-rate")
        if avg or top:
            limits["inbound"] = Limit(avg, top, num(oc, "burst"))
    if iface is not None and iface.policing_rate:
        burst = iface.policing_burst or OVS_DEFAULT_POLICING_BURST_KBIT
        limits["outbound"] = Limit(iface.policing_rate * 1000 // 8, None, burst * 1024 // 8)
    return limits


def _ovs_drift(snap, port, kport, bandwidth=None):
    """What ``qos-hooks status`` says for this port: against the domain XML's
    ``<bandwidth>`` when the domain is known (as ``status DOMAIN_XML``), else
    against qos-hooks' own rows on the port (as ``status``); a port with
    neither is not compared."""
    from qos_hooks.ovs import backend as ovs_backend
    from qos_hooks.kernel import tc
    from qos_hooks.ovs.mapping import map_bandwidth, ovsdb_differences
    if bandwidth is not None:
        settings, _ = map_bandwidth(bandwidth, port.name)
    else:
        settings, owner = ovs_backend._owned_settings(snap, port)
        if owner is None:
            return False
    diffs = ovsdb_differences(snap, port, settings) + tc.kernel_differences(
        port.name, settings, kport)
    return any(d.fatal for d in diffs)


def collect_ovs(remote, timeout, netns, by_dev, problems, desired=None):
    """[Vnic] for the VM ports on OVS (``by_dev``: target dev -> (name, uuid, mac);
    ``desired``: target dev -> the domain XML's Bandwidth of OVS interfaces)."""
    desired = desired or {}
    from qos_hooks.ovs import ovsdb
    from qos_hooks.kernel import tc
    from qos_hooks.ovs.mapping import IFNAME_KEY, MAC_KEY, OWNER_KEY
    deadline = ovsdb.Deadline(timeout)
    with ovsdb.Connection(remote, deadline, extra_columns=EXTRA_COLUMNS) as conn:
        snap = conn.snapshot()
        bridge_of, stats = {}, {}
        for row in conn.idl.tables["Bridge"].rows.values():
            for p in row.ports:
                bridge_of[p.name] = row.name
        for row in conn.idl.tables["Interface"].rows.values():
            stats[row.name] = {k: int(v) for k, v in dict(row.statistics or {}).items()}
        ovsdb_at = time.monotonic()
    picked = []
    for port in sorted(snap.ports.values(), key=lambda p: p.name):
        iface = snap.interface_of(port)
        ids = dict(iface.external_ids) if iface is not None else {}
        qos = snap.qos.get(port.qos) if port.qos else None
        qids = dict(qos.external_ids) if qos is not None else {}
        if not (port.name in by_dev or any(k in ids for k in VM_KEYS + (OWNER_KEY,))
                or OWNER_KEY in qids or "vm-id" in qids):
            continue
        picked.append((port, iface, ids, qids))
    if not picked:
        return []
    names = [p.name for p, _, _, _ in picked]
    devs = read_devices(names, netns)
    kports = tc.read_ports(names, netns)
    out = []
    for port, iface, ids, qids in picked:
        dom, uuid, mac = by_dev.get(port.name, ("", "", ""))
        uuid = uuid or ids.get(OWNER_KEY) or ids.get("vm-id") or qids.get(OWNER_KEY) \
            or qids.get("vm-id") or ""
        mac = mac or ids.get("attached-mac") or ids.get(MAC_KEY) or qids.get(MAC_KEY) or ""
        ifname = ids.get(IFNAME_KEY) or port.name
        dev = devs[port.name]
        read_at = dev.time
        if dev.exists:
            counters, source = _kernel_counters(dev), "kernel"
        else:
            read_at = ovsdb_at
            counters = _ovsdb_counters(stats.get(iface.name if iface else port.name))
            counters, source = (counters, "ovsdb") if counters else ({}, "")
        shaper = {"inbound": dev.classes["1:1"]} if "1:1" in dev.classes else {}
        policer = {"outbound": dev.ingress.drops} if dev.ingress is not None else {}
        try:
            drift = _ovs_drift(snap, port, kports[port.name], desired.get(port.name))
        except Exception as e:   # a status bug must not hide the counters
            problems.append("drift of %s: %s" % (port.name, e))
            drift = False
        out.append(Vnic(by_dev.get(port.name, ("",))[0] or dom, uuid, mac.lower(), ifname,
                        bridge_of.get(port.name, ""), BACKEND_OVS,
                        _ovs_limits(snap, port, iface), counters, source, shaper, policer,
                        drift, read_at))
    return out


def collect_taps(docs, netns):
    """[Vnic] for the domains' interfaces that are not on OVS (libvirt's own tc)."""
    from qos_hooks.kernel import tap_status
    entries = []
    for doc in docs:
        checks = tap_status.interface_checks(doc.interfaces())
        bridges = {i.target_dev: i.bridge for i in doc.interfaces() if i.target_dev}
        for st in tap_status.status([c for c in checks if c.expected is not None], netns):
            entries.append((doc, st, bridges.get(st.dev) or ""))
    devs = read_devices([st.dev for _, st, _ in entries], netns)
    out = []
    for doc, st, bridge in entries:
        e, dev = st.expected, devs[st.dev]
        limits = {}
        if e.htb:
            limits[e.htb_from] = Limit(e.rate, e.ceil, e.burst)
        if e.police:
            limits[e.police_from] = Limit(e.police_rate, None, e.police_burst)
        shaper, policer = {}, {}
        if dev.exists and e.htb and dev.htb_default:
            leaf = dev.classes.get("1:%x" % dev.htb_default)
            if leaf is not None:
                shaper[e.htb_from] = leaf
        if dev.exists and e.police and dev.ingress is not None:
            policer[e.police_from] = dev.ingress.drops
        counters = _kernel_counters(dev) if dev.exists else {}
        if counters and st.type in tap_status.SWAPPED and tap_status.SWAPPED[st.type]:
            counters = {"inbound": counters["outbound"], "outbound": counters["inbound"]}
        out.append(Vnic(doc.name or "", doc.uuid or "", (st.mac or "").lower(), st.dev,
                        bridge, BACKEND_TAP, limits, counters, "kernel" if counters else "",
                        shaper, policer, st.drift, dev.time))
    return out


def collect_hostnets(remote, timeout, netns, state_file):
    """[HostClass] for the host networks qos-hooks shapes on OVS uplinks."""
    from qos_hooks.hostnet import ovs as hostnet_ovs
    rows = hostnet_ovs.status_rows(remote, timeout, state_file, netns)
    devs = read_devices([r.uplink for r in rows if r.uplink], netns) if rows else {}
    out = []
    for r in rows:
        dev = devs.get(r.uplink)
        cls = dev.classes.get("1:%x" % (r.queue_id + 1)) if dev is not None else None
        mn, mx = r.desired.get("min-rate"), r.desired.get("max-rate")
        out.append(HostClass(r.network, r.uplink or "", r.bridge or "",
                             "" if r.vlan is None else str(r.vlan), r.queue_id,
                             mn // 8 if mn else None, mx // 8 if mx else None, cls, not r.ok))
    return out


def collect(remote, timeout, netns=None, domain_xmls=None, libvirt_uri=DEFAULT_LIBVIRT_URI,
            state_file=None, log_problems=True):
    """One HostSample.  Never raises for an unreachable source: it is marked
    down in ``up`` and named in ``problems``.

    ``domain_xmls``: live domain XML documents to use instead of asking libvirt
    (None: ask ``libvirt_uri``; an empty list: no libvirt at all).
    """
    t0 = time.monotonic()
    up, problems = {}, []
    docs = []
    try:
        if domain_xmls is None:
            domain_xmls = libvirt_domain_xmls(libvirt_uri)
            up["libvirt"] = True
        docs = _docs(domain_xmls)
    except QosHooksError as e:
        up["libvirt"] = False
        problems.append("libvirt: %s" % e)
    by_dev, desired = {}, {}
    for doc in docs:
        for i in doc.interfaces():
            if i.target_dev:
                by_dev[i.target_dev] = (doc.name or "", doc.uuid or "", i.mac or "")
                if i.on_ovs and i.supports_bandwidth:
                    from qos_hooks.core.policy import Bandwidth
                    desired[i.target_dev] = i.bandwidth or Bandwidth()
    vnics = []
    ovs_present = not (remote.startswith("unix:") and not os.path.exists(remote[5:]))
    if ovs_present:
        try:
            vnics += collect_ovs(remote, timeout, netns, by_dev, problems, desired)
            up["ovsdb"] = True
        except QosHooksError as e:
            up["ovsdb"] = False
            problems.append("ovsdb: %s" % e)
    try:
        vnics += collect_taps(docs, netns)
        up["netlink"] = True
    except QosHooksError as e:
        up["netlink"] = False
        problems.append("netlink: %s" % e)
    hostnets = []
    try:
        hostnets = collect_hostnets(remote, timeout, netns, state_file)
        up["hostnet"] = True
    except QosHooksError as e:
        up["hostnet"] = False
        problems.append("host networks: %s" % e)
    for p in problems if log_problems else ():
        LOG.warning("metrics: %s", p)
    return HostSample(time.monotonic(), tuple(vnics), tuple(hostnets), up, tuple(problems),
                      time.monotonic() - t0)


# -- Prometheus --------------------------------------------------------------------------

VNIC_LABELS = ("domain", "domain_uuid", "mac", "ifname", "bridge", "backend")
HOSTNET_LABELS = ("network", "uplink", "bridge", "vlan", "queue")

# (name, type, help): the reference table of docs/observability.md is checked
# against this list by tests/observe/test_metrics.py
VNIC_METRICS = (
    ("qos_hooks_vnic_limit_average_bytes_per_second", "gauge",
     "Configured average rate of the vNIC's limit in this direction, as applied."),
    ("qos_hooks_vnic_limit_peak_bytes_per_second", "gauge",
     "Configured peak rate (OVS: QoS max-rate; tap: htb ceil), as applied."),
    ("qos_hooks_vnic_limit_burst_bytes", "gauge",
     "Configured burst (token bucket size), as applied."),
    ("qos_hooks_vnic_bytes", "counter", "Bytes through the vNIC in this direction."),
    ("qos_hooks_vnic_packets", "counter", "Packets through the vNIC in this direction."),
    ("qos_hooks_vnic_dropped_packets", "counter",
     "Packets the port device dropped in this direction (device counters)."),
    ("qos_hooks_vnic_shaper_sent_bytes", "counter",
     "Bytes the htb class shaping this direction sent."),
    ("qos_hooks_vnic_shaper_sent_packets", "counter",
     "Packets the htb class shaping this direction sent."),
    ("qos_hooks_vnic_shaper_dropped_packets", "counter",
     "Packets dropped by the htb class shaping this direction."),
    ("qos_hooks_vnic_shaper_overlimits", "counter",
     "Times the htb class shaping this direction was over its limit (overlimits)."),
    ("qos_hooks_vnic_shaper_backlog_bytes", "gauge",
     "Bytes queued in the htb class shaping this direction."),
    ("qos_hooks_vnic_shaper_backlog_packets", "gauge",
     "Packets queued in the htb class shaping this direction."),
    ("qos_hooks_vnic_policer_dropped_packets", "counter",
     "Packets dropped by the ingress policer limiting this direction."),
    ("qos_hooks_vnic_drift", "gauge",
     "1 when 'qos-hooks status' would report DRIFT for this vNIC, else 0."),
)
HOSTNET_METRICS = (
    ("qos_hooks_hostnet_limit_min_bytes_per_second", "gauge",
     "Guaranteed rate of the host network's queue on its OVS uplink (min-rate)."),
    ("qos_hooks_hostnet_limit_max_bytes_per_second", "gauge",
     "Upper limit of the host network's queue on its OVS uplink (max-rate)."),
    ("qos_hooks_hostnet_shaper_sent_bytes", "counter", "Bytes the queue's htb class sent."),
    ("qos_hooks_hostnet_shaper_sent_packets", "counter", "Packets the queue's htb class sent."),
    ("qos_hooks_hostnet_shaper_dropped_packets", "counter",
     "Packets dropped by the queue's htb class."),
    ("qos_hooks_hostnet_shaper_overlimits", "counter",
     "Times the queue's htb class was over its limit (overlimits)."),
    ("qos_hooks_hostnet_shaper_backlog_bytes", "gauge", "Bytes queued in the queue's htb class."),
    ("qos_hooks_hostnet_drift", "gauge",
     "1 when 'qos-hooks status' reports DRIFT for this host network, else 0."),
)
COLLECTOR_METRICS = (
    ("qos_hooks_collector_up", "gauge",
     "1 when the source (ovsdb, netlink, libvirt, hostnet) could be read at this scrape."),
    ("qos_hooks_collector_duration_seconds", "gauge", "Time the last collection took."),
)
ALL_METRICS = VNIC_METRICS + HOSTNET_METRICS + COLLECTOR_METRICS


def families(sample):
    """prometheus_client metric families for one HostSample."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    fam = {}
    for name, kind, help_ in VNIC_METRICS + HOSTNET_METRICS:
        labels = (VNIC_LABELS if name.startswith("qos_hooks_vnic_") else HOSTNET_LABELS)
        if not name.endswith("_drift") and not name.startswith("qos_hooks_hostnet_"):
            labels = labels + ("direction",)
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        fam[name] = cls(name, help_, labels=labels)
    v = "qos_hooks_vnic_"
    for n in sample.vnics:
        lab = n.labels()
        for d, lim in sorted(n.limits.items()):
            for key, val in (("average", lim.average), ("peak", lim.peak)):
                if val is not None:
                    fam[v + "limit_%s_bytes_per_second" % key].add_metric(lab + (d,), val)
            if lim.burst is not None:
                fam[v + "limit_burst_bytes"].add_metric(lab + (d,), lim.burst)
        for d, c in sorted(n.counters.items()):
            fam[v + "bytes"].add_metric(lab + (d,), c.bytes)
            fam[v + "packets"].add_metric(lab + (d,), c.packets)
            fam[v + "dropped_packets"].add_metric(lab + (d,), c.dropped)
        for d, s in sorted(n.shaper.items()):
            _shaper(fam, v + "shaper_", lab + (d,), s, packets_backlog=True)
        for d, drops in sorted(n.policer_dropped.items()):
            fam[v + "policer_dropped_packets"].add_metric(lab + (d,), drops)
        fam[v + "drift"].add_metric(lab, 1 if n.drift else 0)
    h = "qos_hooks_hostnet_"
    for c in sample.hostnets:
        lab = c.labels()
        if c.min_rate is not None:
            fam[h + "limit_min_bytes_per_second"].add_metric(lab, c.min_rate)
        if c.max_rate is not None:
            fam[h + "limit_max_bytes_per_second"].add_metric(lab, c.max_rate)
        if c.shaper is not None:
            _shaper(fam, h + "shaper_", lab, c.shaper, packets_backlog=False)
        fam[h + "drift"].add_metric(lab, 1 if c.drift else 0)
    up = GaugeMetricFamily(COLLECTOR_METRICS[0][0], COLLECTOR_METRICS[0][2], labels=("source",))
    for src, ok in sorted(sample.up.items()):
        up.add_metric((src,), 1 if ok else 0)
    dur = GaugeMetricFamily(COLLECTOR_METRICS[1][0], COLLECTOR_METRICS[1][2],
                            value=round(sample.seconds, 6))
    return [fam[name] for name, _, _ in VNIC_METRICS + HOSTNET_METRICS] + [up, dur]


def _shaper(fam, prefix, lab, s, packets_backlog):
    fam[prefix + "sent_bytes"].add_metric(lab, s.bytes)
    fam[prefix + "sent_packets"].add_metric(lab, s.packets)
    fam[prefix + "dropped_packets"].add_metric(lab, s.drops)
    fam[prefix + "overlimits"].add_metric(lab, s.overlimits)
    fam[prefix + "backlog_bytes"].add_metric(lab, s.backlog_bytes)
    if packets_backlog:
        fam[prefix + "backlog_packets"].add_metric(lab, s.backlog_packets)


class HostCollector:
    """A prometheus_client collector: one ``collect()`` per scrape.

    ``HostCollector(config)`` takes the OVSDB remote and timeout from a
    qos_hooks.core.policy Config (None: the defaults); keyword arguments override
    them.  Register it in any CollectorRegistry (the agent mounts it next to
    its own health metrics)."""

    def __init__(self, config=None, *, remote=None, timeout=None, netns=None,
                 domain_xmls=None, libvirt_uri=DEFAULT_LIBVIRT_URI, state_file=None):
        from qos_hooks.core.policy import DEFAULT_OVSDB, DEFAULT_OVSDB_TIMEOUT
        settings = config.settings if config is not None else None
        self.remote = remote or (settings.ovsdb if settings else DEFAULT_OVSDB)
        self.timeout = timeout or (settings.ovsdb_timeout if settings else DEFAULT_OVSDB_TIMEOUT)
        self.netns = netns
        self.domain_xmls = domain_xmls
        self.libvirt_uri = libvirt_uri
        self.state_file = state_file
        self.log_problems = True     # qos-hooks top shows them on its screen instead
        self.last = None

    def sample(self):
        self.last = collect(self.remote, self.timeout, self.netns, self.domain_xmls,
                            self.libvirt_uri, self.state_file, self.log_problems)
        return self.last

    def describe(self):
        return []      # no collection at registration time

    def collect(self):
        return families(self.sample())


def registry(collector, extra_collectors=(), process=False):
    from prometheus_client import CollectorRegistry
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    for c in extra_collectors:
        reg.register(c)
    if process:
        from prometheus_client import ProcessCollector
        ProcessCollector(registry=reg)
    return reg


def serve(address=DEFAULT_ADDRESS, port=DEFAULT_PORT, collector=None, extra_collectors=(),
          config=None):
    """Serve /metrics on ``address:port`` from a background thread; returns
    (server, thread): ``server.shutdown()`` stops it.  ``collector`` defaults
    to HostCollector(config); ``extra_collectors`` are registered beside it
    (the agent passes its own health collector).  prometheus_client's
    MetricsHandler on the standard library's threading HTTP server, so it
    works with the prometheus_client of EL9 as well as a current one."""
    import socket
    import threading
    from http.server import ThreadingHTTPServer
    from prometheus_client.exposition import MetricsHandler
    reg = registry(collector or HostCollector(config), extra_collectors, process=True)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server = Server((address, port), MetricsHandler.factory(reg))
    thread = threading.Thread(target=server.serve_forever, name="qos-hooks-metrics",
                              daemon=True)
    thread.start()
    return server, thread


def render(collector):
    """The exposition text (Prometheus text format 0.0.4) of one collection."""
    from prometheus_client import generate_latest
    return generate_latest(registry(collector)).decode("utf-8")


def write_textfile(path, collector):
    """Write the node_exporter textfile-collector format atomically
    (qos_hooks.core.fileio.write_atomic: a temporary ``.qos-hooks-*`` file in
    the same directory, which node_exporter never reads since it reads only
    ``*.prom``, fsync, rename over ``path``)."""
    from qos_hooks.core.fileio import write_atomic
    text = render(collector)
    write_atomic(path, text.encode("utf-8"), mode=0o644)
    return text


# -- the command ----------------------------------------------------------------------

def parse_listen(value, option="--listen"):
    """``ADDR:PORT``, ``[V6ADDR]:PORT`` or ``PORT`` -> (address, port)."""
    from qos_hooks.core.errors import UsageError
    v = value.strip()
    host, port = DEFAULT_ADDRESS, v
    if v.startswith("["):
        host, _, port = v[1:].partition("]:")
    elif ":" in v:
        host, _, port = v.rpartition(":")
    try:
        p = int(port)
        if not 0 < p < 65536:
            raise ValueError
    except ValueError:
        raise UsageError("%s %r: want ADDR:PORT with PORT 1..65535 (default %s:%d)"
                         % (option, value, DEFAULT_ADDRESS, DEFAULT_PORT))
    return host or DEFAULT_ADDRESS, p


def collector_from_args(args):
    from qos_hooks.core import policy
    config = policy.load_config(getattr(args, "config", None), missing_ok=True)
    xmls = None
    if getattr(args, "domain_xml", None):
        xmls = []
        for p in args.domain_xml:
            with open(p, "rb") as f:
                xmls.append(f.read())
    return HostCollector(config, remote=getattr(args, "ovsdb", None),
                         timeout=getattr(args, "timeout", None),
                         netns=getattr(args, "netns", None), domain_xmls=xmls,
                         libvirt_uri=getattr(args, "connect", None) or DEFAULT_LIBVIRT_URI,
                         state_file=getattr(args, "hostnet_state", None))


def metrics_main(args):
    """``qos-hooks metrics``: serve /metrics (--listen), write a textfile
    (--textfile), or print one collection to stdout."""
    import sys
    collector = collector_from_args(args)
    if args.textfile:
        write_textfile(args.textfile, collector)
        return 0
    if args.listen is None:
        sys.stdout.write(render(collector))
        return 0
    address, port = parse_listen(args.listen)
    try:
        server, _ = serve(address, port, collector)
    except OSError as e:
        from qos_hooks.core.errors import UsageError
        raise UsageError("--listen %s:%d: cannot listen there: %s" % (address, port, e.strerror))
    LOG.info("serving /metrics on %s:%d", address, server.server_address[1])
    sys.stderr.write("qos-hooks metrics: serving http://%s:%d/metrics\n"
                     % (address if ":" not in address else "[%s]" % address,
                        server.server_address[1]))
    sys.stderr.flush()
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()
