"""Desired state: what QoS each OVS-attached interface of a domain should have.

This is the typed hand-off between the pure core (domain XML + policy) and the
backends (OVSDB, tc) and the privileged helper: small immutable records (qos_hooks.core.records) of
simple types, serialisable to and from JSON.

Bandwidth stays in libvirt's units and libvirt's (guest) point of view:
``inbound`` is traffic into the guest.  Backends convert (qos_hooks.core.units).
"""

from __future__ import annotations

from qos_hooks.core.records import Record
from qos_hooks.core.policy import Bandwidth, Rate, RATE_FIELDS

# annotations are strings (PEP 563): typing is never imported at run time
# (it costs 3-6 ms of every hook start, bench/bench_hooks.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple  # noqa: F401


class InterfaceQos(Record):
    """The QoS one OVS-attached interface should have."""

    mac: Optional[str]            # lower-case, "52:54:00:..."
    target_dev: Optional[str]     # "vnet0"; None in VDSM's after_nic_hotplug
    bandwidth: Bandwidth          # empty Bandwidth() = no QoS wanted

    @property
    def label(self):
        return "/".join(x for x in (self.mac, self.target_dev) if x) or "?"

    def to_dict(self):
        return {"mac": self.mac, "target_dev": self.target_dev,
                "bandwidth": bandwidth_to_dict(self.bandwidth)}

    @classmethod
    def from_dict(cls, d):
        return cls(mac=d.get("mac"), target_dev=d.get("target_dev"),
                   bandwidth=bandwidth_from_dict(d.get("bandwidth") or {}))


class DomainQos(Record):
    """The QoS of a domain's OVS-attached interfaces."""

    uuid: Optional[str]
    name: Optional[str]
    interfaces: Tuple[InterfaceQos, ...] = ()

    def to_dict(self):
        return {"uuid": self.uuid, "name": self.name,
                "interfaces": [i.to_dict() for i in self.interfaces]}

    @classmethod
    def from_dict(cls, d):
        return cls(uuid=d.get("uuid"), name=d.get("name"),
                   interfaces=tuple(InterfaceQos.from_dict(i) for i in d.get("interfaces") or ()))


def bandwidth_to_dict(bw):
    out = {}
    for direction in ("inbound", "outbound"):
        r = bw.direction(direction)
        if r is not None and not r.is_empty():
            out[direction] = dict(r.items())
    return out


def bandwidth_from_dict(d):
    kw = {}
    for direction in ("inbound", "outbound"):
        r = d.get(direction)
        if r:
            kw[direction] = Rate(**{f: r[f] for f in RATE_FIELDS if r.get(f) is not None})
    return Bandwidth(**kw)


def ovs_interfaces(doc, mac_lookup=None, not_ovs_bridge=None):
    """The interfaces of a DomainDoc that sit (or may sit) on Open vSwitch.

    ``<virtualport type='openvswitch'/>`` interfaces: that is how libvirt
    (and VDSM's OVS switch type) attach a tap to an OVS bridge, and the live
    XML libvirt gives (after_vm_start, the qemu hook) always says so.

    ``mac_lookup`` (default: for a lone ``<interface>`` document): also a
    ``type='bridge'`` interface with no ``<virtualport>`` and no ``<target
    dev>``, which the backend finds by ``external_ids:attached-mac``.  VDSM
    builds the XML of updateDevice and hotunplugNic with
    ``Interface.getXML()`` (oVirt vdsm lib/vdsm/virt/vmdevices/network.py):
    MAC, ``<source bridge='NETWORK'>``, ``<bandwidth>``, ``<alias>``, never
    ``<virtualport>`` nor ``<target dev>`` (lib/vdsm/virt/vm.py
    setLinkAndNetwork, hotunplugNic).  ``not_ovs_bridge(name)``, given by the
    caller at the edge, says a source bridge certainly is not OVS (a Linux
    bridge): such interfaces are left out, so a Linux-bridge vNIC never
    costs an OVSDB lookup.

    A domain with none of them never needs an OVSDB connection.
    """
    if mac_lookup is None:
        mac_lookup = doc.is_interface_only
    out = []
    for iface in doc.interfaces():
        if not iface.supports_bandwidth:
            continue
        if not iface.on_ovs:
            if not (mac_lookup and iface.type == "bridge" and iface.virtualport is None
                    and iface.target_dev is None and iface.mac):
                continue
            if not_ovs_bridge is not None and iface.bridge and not_ovs_bridge(iface.bridge):
                continue
        out.append(InterfaceQos(mac=iface.mac, target_dev=iface.target_dev,
                                bandwidth=iface.bandwidth or Bandwidth()))
    return tuple(out)


def domain_qos(doc, mac_lookup=None, not_ovs_bridge=None):
    """DomainQos for the OVS-attached interfaces of a (rewritten) DomainDoc
    (``mac_lookup``, ``not_ovs_bridge``: see :func:`ovs_interfaces`)."""
    return DomainQos(uuid=doc.uuid, name=doc.name,
                     interfaces=ovs_interfaces(doc, mac_lookup, not_ovs_bridge))
