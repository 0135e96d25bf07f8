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

from __future__ import annotations

from qos_hooks.core.records import Record, default

from qos_hooks.core.errors import BackendUnavailable
from qos_hooks.core.difference import Difference

# annotations are strings (PEP 563): typing is never imported at run time
# (it costs 3-6 ms of every hook start, bench/bench_hooks.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional  # noqa: F401


TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
INGRESS_HANDLE = 0xFFFF0000
BURST_TOLERANCE = 0.02


def handle_str(h):
    return "%x:%x" % (h >> 16, h & 0xFFFF)


class HtbClass(Record):
    handle: str
    parent: str
    rate: int      # bytes/s
    ceil: int      # bytes/s
    burst: int     # bytes
    cburst: int    # bytes


class KernelPort(Record):
    name: str
    exists: bool
    root_kind: Optional[str] = None
    root_handle: Optional[str] = None
    ingress: bool = False
    ingress_filters: int = 0
    classes: Dict[str, HtbClass] = default(dict)
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

    Read with qos_hooks.kernel.rtnl (the standard library's netlink socket;
    see there why not pyroute2): links by name in batches, the namespace's
    qdiscs in one dump filtered by ifindex here, then per device what the
    kernel only dumps per device: htb classes where the root qdisc is htb,
    filters where there is an ingress qdisc.  128 ports: 2 + 2x128 small
    round trips, about 10 ms.
    """
    from qos_hooks.kernel.rtnl import Rtnl
    out = {}
    tpu = _ticks_per_us()
    try:
        nl = Rtnl(netns)
    except OSError as e:
        raise BackendUnavailable("netlink%s: %s" % (" in netns %s" % netns if netns else "", e))
    try:
        index = nl.link_indexes(names)
        qdiscs = {}
        for q in nl.qdiscs(set(index.values())):
            qdiscs.setdefault(q[0], []).append(q)
        for name in names:
            if name not in index:
                out[name] = KernelPort(name, False)
            else:
                out[name] = _read(nl, name, index[name], qdiscs.get(index[name], ()), tpu)
    except OSError as e:
        raise BackendUnavailable("netlink read of tc state%s: %s"
                                 % (" in netns %s" % netns if netns else "", e))
    finally:
        nl.close()
    return out


def _read(nl, name, idx, qdiscs, tpu):
    root_kind = root_handle = htb_default = None
    ingress = False
    for _idx, handle, parent, kind, defcls in qdiscs:
        if parent == TC_H_ROOT:
            root_kind, root_handle = kind, handle_str(handle)
            if root_kind == "htb":
                htb_default = defcls
        elif parent == TC_H_INGRESS or kind in ("ingress", "clsact"):
            ingress = True
    filters = 0
    if ingress:
        try:
            filters = len(nl.filter_kinds(idx, INGRESS_HANDLE))
        except OSError:  # pragma: no cover - a kernel refusing the filter dump
            filters = 0
    classes = {}
    if root_kind == "htb":
        for handle, parent, rate, ceil, buf, cbuf in nl.htb_classes(idx):
            h = handle_str(handle)
            classes[h] = HtbClass(h, handle_str(parent), rate, ceil,
                                  int(round(buf / tpu * rate / 1e6)),
                                  int(round(cbuf / tpu * ceil / 1e6)))
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
