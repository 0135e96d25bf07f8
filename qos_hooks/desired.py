"""Desired state: what QoS each OVS-attached interface of a domain should have.

This is the typed hand-off between the pure core (domain XML + policy) and the
backends (OVSDB, tc) and the privileged helper: small immutable records (qos_hooks._record) of
simple types, serialisable to and from JSON.

Bandwidth stays in libvirt's units and libvirt's (guest) point of view:
``inbound`` is traffic into the guest.  Backends convert (qos_hooks.units).
"""

from typing import Optional, Tuple

from ._record import Record
from .policy import Bandwidth, Rate, RATE_FIELDS


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


def ovs_interfaces(doc):
    """The interfaces of a DomainDoc that sit on Open vSwitch.

    Only ``<virtualport type='openvswitch'/>`` interfaces count: that is how
    libvirt (and VDSM's OVS switch type) attach a tap to an OVS bridge.  A
    domain with none of them never needs an OVSDB connection.
    """
    out = []
    for iface in doc.interfaces():
        if not iface.on_ovs or not iface.supports_bandwidth:
            continue
        out.append(InterfaceQos(mac=iface.mac, target_dev=iface.target_dev,
                                bandwidth=iface.bandwidth or Bandwidth()))
    return tuple(out)


def domain_qos(doc):
    """DomainQos for the OVS-attached interfaces of a (rewritten) DomainDoc."""
    return DomainQos(uuid=doc.uuid, name=doc.name, interfaces=ovs_interfaces(doc))
