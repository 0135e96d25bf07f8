"""Status of the tc QoS libvirt itself puts on a tap that is NOT on Open vSwitch.

A VM on a Linux bridge (``<interface type='bridge'|'network'>`` without
``<virtualport type='openvswitch'/>``) gets its ``<bandwidth>`` from libvirt,
which runs ``tc`` on the tap when the interface starts
(src/util/virnetdevbandwidth.c ``virNetDevBandwidthSet``, called e.g. from
src/qemu/qemu_hotplug.c with ``hierarchical_class = false`` and ``swapped =
!virDomainNetTypeSharesHostView(net)``).  Nothing puts that state back when
someone runs ``tc qdisc del`` or a NIC driver resets it; ``qos-hooks status
DOMAIN_XML`` compares it here.

What libvirt installs (facts read from libvirt's sources and its own unit
test tests/virnetdevbandwidthtest.c; the tap's egress is the VM's inbound):

* VM inbound with ``average`` (egress of the tap): root qdisc ``htb`` with
  handle ``1:``, then an ``sfq`` leaf and an ``fw`` filter.  Two layouts exist
  in libvirt's history, told apart by the htb ``default`` class:

  - ``default 1`` (libvirt/libvirt at 01c357a4 and older trees):
    class ``1:1`` rate = average, ceil = peak (tc's default, = rate, without
    peak), burst = burst when given;
  - ``default 2`` (a newer tree: zippy2/libvirt at 1e1dba32, a libvirt
    maintainer's fork; which release first ships it is not verified here):
    class ``1:1`` rate = ceil = peak or average (burst), and the leaf class
    ``1:2`` under it with rate = average, ceil = peak or average, burst.

  Either way the class named by ``default`` carries average/peak/burst, so
  that is the one compared; with ``default 2`` the cap ``1:1`` is compared too.
  The ``sfq`` leaf and ``fw`` filter are not compared: this project's CI
  kernel has neither (FIELD_NOTES section 5), and they do not set the rate.
* VM outbound (ingress of the tap): an ``ingress`` qdisc and a u32 filter
  with a ``police`` action (rate = average, burst = burst or average KiB,
  ``mtu 64kb drop``).  The ingress qdisc is compared.  A missing police
  filter counts as drift only when the kernel is known to have ``act_police``;
  otherwise it is reported as "not enforced" (this project's CI kernel refuses
  the police action, as libvirt would find out).  The police parameters of a
  present filter are not compared.
* ``type='direct'`` (macvtap): libvirt passes ``swapped`` = true, so the VM's
  outbound is shaped by the htb and its inbound policed; handled.
* ``type='ethernet'``: whether libvirt swaps the directions depends on
  ``virDomainNetTypeSharesHostView``, which this project has not verified for
  ethernet: reported as "not checked" rather than guessed.

Units (FIELD_NOTES section 1): libvirt average/peak/floor are "KB/s" that
libvirt hands to tc as ``NNNkbps``, which tc reads as 1000 bytes/s
(``RATE_UNIT_BYTES``); burst is KiB, passed as ``NNNkb``, which tc reads as
1024 bytes (``BURST_UNIT_BYTES``).  The kernel reports htb rates in bytes/s;
it stores burst as a time (psched ticks), so the burst read back
(qos_hooks.kernel.tc) is compared with a tolerance (``BURST_TOLERANCE`` relative,
at least ``BURST_SLACK_BYTES``).

The pure part (``interface_checks``, ``expected``, ``compare``) takes no
netlink; ``status`` reads the kernel (qos_hooks.kernel.tc.read_ports) and joins.
"""

import os
from dataclasses import dataclass
from typing import Optional, Tuple

from qos_hooks.core.difference import Difference

RATE_UNIT_BYTES = 1000      # libvirt rate unit, as tc reads "kbps": bytes/s
BURST_UNIT_BYTES = 1024     # libvirt burst unit, as tc reads "kb": bytes
UINT_MAX = 2 ** 32 - 1
BURST_TOLERANCE = 0.02
BURST_SLACK_BYTES = 64
LAYER = "kernel"

# interface types whose tap qos-hooks compares, and whether libvirt swaps
# directions on them (virNetDevBandwidthSet's ``swapped`` argument)
SWAPPED = {"bridge": False, "network": False, "direct": True}
NOT_CHECKED = {
    "ethernet": "type='ethernet': libvirt decides the direction of its tc rules with "
                "virDomainNetTypeSharesHostView, which qos-hooks has not verified for "
                "ethernet",
}


@dataclass(frozen=True)
class Expected:
    """The tc state libvirt installs for one tap (bytes and bytes/s)."""

    htb: bool = False                    # root htb 1: expected
    rate: Optional[int] = None           # B/s of the default class
    ceil: Optional[int] = None           # B/s of the default class
    burst: Optional[int] = None          # B, None: tc's default (not compared)
    police: bool = False                 # ingress qdisc + police filter expected
    police_rate: Optional[int] = None    # B/s
    police_burst: Optional[int] = None   # B
    htb_from: str = ""                   # "inbound" / "outbound" (VM's view)
    police_from: str = ""

    def to_dict(self):
        return {"htb": self.htb, "rate": self.rate, "ceil": self.ceil, "burst": self.burst,
                "police": self.police, "police_rate": self.police_rate,
                "police_burst": self.police_burst, "htb_from": self.htb_from or None,
                "police_from": self.police_from or None}


@dataclass(frozen=True)
class TapCheck:
    """One domain interface to compare: the tap, what to expect, or why not."""

    dev: Optional[str]
    mac: Optional[str]
    type: str
    expected: Optional[Expected]         # None: not checked
    reason: str = ""                     # why not checked

    @property
    def label(self):
        return self.dev or self.mac or "?"


@dataclass(frozen=True)
class TapStatus:
    dev: str
    mac: Optional[str]
    type: str
    expected: Optional[Expected]
    kernel: dict
    differences: Tuple[Difference, ...] = ()
    reason: str = ""                     # set when not checked

    @property
    def checked(self):
        return self.expected is not None

    @property
    def drift(self):
        return any(d.fatal for d in self.differences)

    def to_dict(self):
        return {"dev": self.dev, "mac": self.mac, "type": self.type, "checked": self.checked,
                "not_checked_reason": self.reason or None,
                "desired": self.expected.to_dict() if self.expected else None,
                "kernel": self.kernel, "drift": self.drift,
                "differences": [d.to_dict() for d in self.differences]}


# -- pure: desired <bandwidth> -> expected tc values ---------------------------------

def expected(bandwidth, swapped=False):
    """Expected tc values for a libvirt Bandwidth (libvirt units, VM's view)."""
    if bandwidth is None:
        return Expected()
    # virNetDevBandwidthSet: tx (the tap's egress, htb) is the VM's inbound
    # unless swapped; rx (the tap's ingress, police) the VM's outbound
    tx_name, rx_name = ("outbound", "inbound") if swapped else ("inbound", "outbound")
    tx, rx = bandwidth.direction(tx_name), bandwidth.direction(rx_name)
    kw = {}
    if tx is not None and tx.average:
        top = tx.peak or tx.average
        kw.update(htb=True, rate=tx.average * RATE_UNIT_BYTES, ceil=top * RATE_UNIT_BYTES,
                  burst=tx.burst * BURST_UNIT_BYTES if tx.burst else None, htb_from=tx_name)
    if rx is not None and rx.average:
        # without burst libvirt polices with burst = average KiB, capped so the
        # byte count fits tc's unsigned int
        burst = rx.burst or min(rx.average, UINT_MAX // BURST_UNIT_BYTES)
        kw.update(police=True, police_rate=rx.average * RATE_UNIT_BYTES,
                  police_burst=burst * BURST_UNIT_BYTES, police_from=rx_name)
    return Expected(**kw)


def interface_checks(interfaces):
    """TapCheck per domain interface whose tc state libvirt owns.

    ``interfaces``: qos_hooks.core.domxml.InterfaceInfo records.  Counted: not on
    OVS, a bandwidth-capable type, a non-empty ``<bandwidth>``.  Without a
    ``<target dev>`` (an inactive domain's XML) there is nothing to read.
    """
    out = []
    for i in interfaces:
        if i.on_ovs or not i.supports_bandwidth or i.bandwidth is None or i.bandwidth.is_empty():
            continue
        if i.type in NOT_CHECKED:
            out.append(TapCheck(i.target_dev, i.mac, i.type, None, NOT_CHECKED[i.type]))
        elif not i.target_dev:
            out.append(TapCheck(None, i.mac, i.type, None,
                                "no <target dev> in the XML (pass the live XML: "
                                "virsh dumpxml NAME)"))
        else:
            out.append(TapCheck(i.target_dev, i.mac, i.type,
                                expected(i.bandwidth, SWAPPED[i.type])))
    return tuple(out)


def _burst_ok(want, got):
    return abs(got - want) <= max(want * BURST_TOLERANCE, BURST_SLACK_BYTES)


def compare(dev, exp, kport, police_available=None):
    """Differences between Expected and a qos_hooks.kernel.tc.KernelPort.

    ``police_available``: True / False / None (unknown) whether this kernel
    has the tc police action; only True makes a missing police filter drift.
    """
    out = []
    if not kport.exists:
        return [Difference(dev, LAYER, "device", "present", "absent",
                           note="no such device here: domain not running, or another "
                                "network namespace (--netns); its QoS is not in force")]
    if exp.htb:
        if kport.root_kind != "htb" or kport.root_handle != "1:0":
            out.append(Difference(dev, LAYER, "root qdisc", "htb 1:",
                                  "%s %s" % (kport.root_kind, kport.root_handle)
                                  if kport.root_kind else "none (kernel default)"))
        else:
            out.extend(_classes(dev, exp, kport))
    if exp.police:
        if not kport.ingress:
            out.append(Difference(dev, LAYER, "ingress qdisc", "present", "absent",
                                  note="VM %s traffic is not policed" % exp.police_from))
        elif not kport.ingress_filters:
            fatal = police_available is True
            why = ("this kernel has the police action, so the filter was removed"
                   if fatal else
                   "this kernel refuses tc 'police'" if police_available is False else
                   "cannot tell whether this kernel has tc 'police' (act_police); "
                   "libvirt's filter fails without it")
            out.append(Difference(dev, LAYER, "ingress police filter",
                                  "rate %d B/s burst %d B" % (exp.police_rate, exp.police_burst),
                                  "no filter", fatal=fatal,
                                  note="%s: VM %s traffic is NOT limited" % (why, exp.police_from)))
    return out


def _classes(dev, exp, kport):
    out = []
    default = kport.htb_default
    leaf_id = "1:%x" % default if default else None
    leaf = kport.classes.get(leaf_id) if leaf_id else None
    if leaf is None:
        out.append(Difference(dev, LAYER, "htb default class %s" % (leaf_id or "(none)"),
                              "rate %d ceil %d B/s" % (exp.rate, exp.ceil), "absent"))
        return out
    if (leaf.rate, leaf.ceil) != (exp.rate, exp.ceil):
        out.append(Difference(dev, LAYER, "class %s rate/ceil (B/s)" % leaf_id,
                              (exp.rate, exp.ceil), (leaf.rate, leaf.ceil)))
    if exp.burst is not None and not _burst_ok(exp.burst, leaf.burst):
        out.append(Difference(dev, LAYER, "class %s burst (B)" % leaf_id, exp.burst, leaf.burst))
    if leaf_id != "1:1":
        # newer libvirt: 1:1 caps the tap at peak (or average)
        cap = kport.classes.get("1:1")
        if cap is None:
            out.append(Difference(dev, LAYER, "class 1:1", "present", "absent"))
        elif cap.ceil != exp.ceil:
            out.append(Difference(dev, LAYER, "class 1:1 ceil (B/s)", exp.ceil, cap.ceil))
    return out


# -- kernel facts ----------------------------------------------------------------------

def police_available(root="/"):
    """Whether the kernel has the tc police action: True, False or None (unknown).

    Loaded (or built in with parameters): /sys/module/act_police.  Otherwise
    the kernel's module tree says whether it is loadable or built in; a kernel
    without a module tree (like this project's CI VM) gives None.
    """
    if os.path.isdir(os.path.join(root, "sys/module/act_police")):
        return True
    moddir = os.path.join(root, "lib/modules", os.uname().release)
    if not os.path.isdir(moddir):
        return None
    for name in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(moddir, name)) as f:
                if "act_police.ko" in f.read():
                    return True
        except OSError:
            return None
    return False


# -- the read ----------------------------------------------------------------------------

def status(checks, netns=None):
    """TapStatus per TapCheck: read the taps through netlink (one socket), compare."""
    from qos_hooks.kernel import tc
    devs = sorted({c.dev for c in checks if c.expected is not None})
    kernel = tc.read_ports(devs, netns) if devs else {}
    police = police_available() if any(c.expected.police for c in checks
                                       if c.expected is not None) else None
    out = []
    for c in checks:
        if c.expected is None:
            out.append(TapStatus(c.label, c.mac, c.type, None, {}, (), c.reason))
            continue
        k = kernel[c.dev]
        out.append(TapStatus(c.dev, c.mac, c.type, c.expected, k.to_dict(),
                             tuple(compare(c.dev, c.expected, k, police))))
    return tuple(out)


def _rate(bps):
    from qos_hooks.core.units import format_bps
    return "-" if not bps else format_bps(bps * 8)


def render(taps):
    """Text lines for ``qos-hooks status`` (no trailing newline)."""
    lines = []
    for t in taps:
        if not t.checked:
            lines.append("-     tap %s  mac %s  type %s" % (t.dev, t.mac or "-", t.type))
            lines.append("  not checked: %s" % t.reason)
        else:
            lines.append("%s tap %s  mac %s  type %s (libvirt tc, not OVS)" % (
                "DRIFT" if t.drift else "ok   ", t.dev, t.mac or "-", t.type))
            e, k = t.expected, t.kernel
            if e.htb:
                lines.append("  VM %-9s desired: htb 1: rate %s ceil %s burst %s" % (
                    e.htb_from, _rate(e.rate), _rate(e.ceil),
                    "%dB" % e.burst if e.burst is not None else "(tc default)"))
                cls = k.get("htb_classes") or {}
                lines.append("               kernel:  root %s %s default %s; %s" % (
                    k.get("root_qdisc") or "-", k.get("root_handle") or "",
                    k.get("htb_default") if k.get("htb_default") is not None else "-",
                    ", ".join("%s rate %s ceil %s burst %dB" % (h, _rate(c["rate"]),
                                                                _rate(c["ceil"]), c["burst"])
                              for h, c in sorted(cls.items())) or "no htb classes"))
            if e.police:
                lines.append("  VM %-9s desired: police %s burst %dB; kernel: ingress qdisc %s, "
                             "%d filter(s)" % (e.police_from, _rate(e.police_rate), e.police_burst,
                                               "yes" if k.get("ingress_qdisc") else "no",
                                               k.get("ingress_filters", 0)))
        for d in t.differences:
            lines.append("  %s %s" % ("DRIFT:" if d.fatal else "not enforced:", d))
    return lines
