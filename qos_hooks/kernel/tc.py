"""Read kernel traffic control state through pyroute2 (netlink; no ``tc`` text parsing).

Used to verify what ovs-vswitchd actually did to a port device:

* VM inbound: OVS linux-htb puts root qdisc ``1:`` htb, class ``1:fffe``
  (rate = ceil = QoS max-rate) and class ``1:(N+1)`` per Queue N
  (lib/netdev-linux.c htb_tc_install / htb_class_set).
* VM outbound: OVS installs an ``ingress`` qdisc with a ``police`` filter
  (lib/netdev-linux.c tc_add_policer).  A kernel without the ``police``
  action (like this project's CI machine) refuses the filter: OVSDB holds the
  rate, the kernel holds nothing.  The verification says so as a non-fatal,
  loudly reported difference instead of pretending.

The same read serves qos_hooks.kernel.tap_status, which compares the tc state
libvirt itself puts on taps that are not on OVS (root htb ``default`` class
included for that: ``htb_default``).

htb ``buffer`` is in psched ticks (/proc/net/psched: ticks per microsecond =
t2us / us2t); burst bytes = buffer / ticks_per_us * rate / 1e6.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional

from qos_hooks.core.errors import BackendUnavailable
from qos_hooks.core.difference import Difference

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
INGRESS_HANDLE = 0xFFFF0000
BURST_TOLERANCE = 0.02


def handle_str(h):
    return "%x:%x" % (h >> 16, h & 0xFFFF)


@dataclass(frozen=True)
class HtbClass:
    handle: str
    parent: str
    rate: int      # bytes/s
    ceil: int      # bytes/s
    burst: int     # bytes
    cburst: int    # bytes


@dataclass(frozen=True)
class KernelPort:
    name: str
    exists: bool
    root_kind: Optional[str] = None
    root_handle: Optional[str] = None
    ingress: bool = False
    ingress_filters: int = 0
    classes: Dict[str, HtbClass] = field(default_factory=dict)
    htb_default: Optional[int] = None   # root htb's "default" class minor (libvirt: 1 or 2)

    def to_dict(self):
        return {"exists": self.exists, "root_qdisc": self.root_kind,
                "root_handle": self.root_handle, "htb_default": self.htb_default,
                "ingress_qdisc": self.ingress,
                "ingress_filters": self.ingress_filters,
                "htb_classes": {k: vars(v) for k, v in sorted(self.classes.items())}}


def _ticks_per_us():
    try:
        with open("/proc/net/psched") as f:
            t2us, us2t = [int(x, 16) for x in f.read().split()[:2]]
        return t2us / us2t
    except (OSError, ValueError, ZeroDivisionError):  # pragma: no cover
        return 15.625


def _iproute(netns):
    try:
        from pyroute2 import IPRoute
    except ImportError as e:  # pragma: no cover
        raise BackendUnavailable("pyroute2 is missing (pip 'pyroute2', EL 'python3-pyroute2'): %s" % e)
    try:
        return IPRoute(netns=netns) if netns else IPRoute()
    except OSError as e:
        raise BackendUnavailable("netlink%s: %s" % (" in netns %s" % netns if netns else "", e))


def read_ports(names, netns=None):
    """{name: KernelPort} for the given devices, one netlink socket for all.

    Links and qdiscs are dumped once for the namespace (a per-device lookup
    dumps everything each time: quadratic with 256 ports); classes and
    filters are dumped per device (the kernel filters those dumps by ifindex).
    """
    out = {}
    tpu = _ticks_per_us()
    ipr = _iproute(netns)
    try:
        index = {}
        for link in ipr.get_links():
            index[link.get_attr("IFLA_IFNAME")] = link["index"]
        qdiscs = {}
        wanted = {index[n] for n in names if n in index}
        for q in ipr.get_qdiscs():
            if q["index"] in wanted:
                qdiscs.setdefault(q["index"], []).append(q)
        for name in names:
            if name not in index:
                out[name] = KernelPort(name, False)
            else:
                out[name] = _read(ipr, name, index[name], qdiscs.get(index[name], ()), tpu)
    finally:
        ipr.close()
    return out


def _read(ipr, name, idx, qdiscs, tpu):
    root_kind = root_handle = htb_default = None
    ingress = False
    for q in qdiscs:
        if q["parent"] == TC_H_ROOT:
            root_kind, root_handle = q.get_attr("TCA_KIND"), handle_str(q["handle"])
            if root_kind == "htb":
                htb_default = _htb_default(q)
        elif q["parent"] == TC_H_INGRESS or q.get_attr("TCA_KIND") in ("ingress", "clsact"):
            ingress = True
    filters = 0
    if ingress:
        try:
            filters = len([f for f in ipr.get_filters(index=idx, parent=INGRESS_HANDLE)
                           if f.get_attr("TCA_KIND")])
        except Exception:  # pragma: no cover - netlink dump quirks
            filters = 0
    classes = {}
    if root_kind == "htb":
        for c in ipr.get_classes(index=idx):
            if c.get_attr("TCA_KIND") != "htb":
                continue
            opts = c.get_attr("TCA_OPTIONS")
            p = opts.get_attr("TCA_HTB_PARMS") if opts else None
            if not p:
                continue
            rate = opts.get_attr("TCA_HTB_RATE64") or p["rate"]
            ceil = opts.get_attr("TCA_HTB_CEIL64") or p["ceil"]
            h = handle_str(c["handle"])
            classes[h] = HtbClass(h, handle_str(c["parent"]), rate, ceil,
                                  int(round(p["buffer"] / tpu * rate / 1e6)),
                                  int(round(p["cbuffer"] / tpu * ceil / 1e6)))
    return KernelPort(name, True, root_kind, root_handle, ingress, filters, classes, htb_default)


def _htb_default(qdisc):
    """The htb qdisc's default class minor (TCA_HTB_INIT defcls), or None."""
    opts = qdisc.get_attr("TCA_OPTIONS")
    init = opts.get_attr("TCA_HTB_INIT") if opts else None
    try:
        return int(init["defcls"]) if init else None
    except (KeyError, TypeError, ValueError):  # pragma: no cover - pyroute2 versions
        return None


def kernel_differences(port, settings, kport, mtu=1500):
    """Differences between the mapped OvsSettings and what the kernel holds."""
    out = []
    if not kport.exists:
        return [Difference(port, "kernel", "device", "present", "absent", fatal=False,
                           note="not a kernel device here (or another namespace): kernel not checked")]
    if settings.has_inbound:
        if kport.root_kind != "htb" or kport.root_handle != "1:0":
            out.append(Difference(port, "kernel", "root qdisc", "htb 1:",
                                  "%s %s" % (kport.root_kind, kport.root_handle)))
            return out + _policer(port, settings, kport)
        top = settings.qos_max_rate // 8
        root = kport.classes.get("1:fffe")
        if root is None or (root.rate, root.ceil) != (top, top):
            out.append(Difference(port, "kernel", "class 1:fffe rate/ceil (B/s)", (top, top),
                                  (root.rate, root.ceil) if root else "absent"))
        # lib/netdev-linux.c htb_parse_class_details__: min-rate >= MTU, <= root
        rate = min(max(settings.queue_min_rate // 8, mtu), top)
        ceil = min(max(settings.queue_max_rate // 8, rate), top)
        leaf = kport.classes.get("1:1")
        if leaf is None:
            out.append(Difference(port, "kernel", "class 1:1", "present", "absent"))
        else:
            if (leaf.rate, leaf.ceil) != (rate, ceil):
                out.append(Difference(port, "kernel", "class 1:1 rate/ceil (B/s)", (rate, ceil),
                                      (leaf.rate, leaf.ceil)))
            if settings.queue_burst is not None:
                want = settings.queue_burst // 8
                if leaf.burst < want * (1 - BURST_TOLERANCE):
                    out.append(Difference(port, "kernel", "class 1:1 burst (B)", want, leaf.burst))
    elif kport.root_kind == "htb" and kport.root_handle == "1:0" and "1:fffe" in kport.classes:
        out.append(Difference(port, "kernel", "root qdisc", "no OVS htb", "htb 1: with 1:fffe",
                              note="ovs-vswitchd has not removed the htb yet"))
    return out + _policer(port, settings, kport)


def _policer(port, settings, kport):
    if settings.has_outbound and not (kport.ingress and kport.ingress_filters):
        return [Difference(
            port, "kernel", "ingress policer", "%d kbit/s" % settings.policing_rate,
            "ingress qdisc %s, %d filter(s)" % ("present" if kport.ingress else "absent",
                                               kport.ingress_filters),
            fatal=False,
            note="OVSDB holds ingress_policing_rate but the kernel has no policer: this "
                 "kernel refuses tc 'police' (ovs-vswitchd logs it), so VM outbound traffic "
                 "is NOT limited on this host")]
    return []
