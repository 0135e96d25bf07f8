"""What the network hooks decide for each network of a setupNetworks request:
validate its ``hostQos``, fill it from the network's ``qos_profile``, and
for networks of the OVS switch type (``"switch": "ovs"``, for which oVirt has
no host QoS) take it out of the request so that after_network_setup applies
the equivalent on the OVS bridge (qos_hooks.hostnet.ovs).

VDSM canonicalises the request before the hooks see it
(lib/vdsm/network/api.py ``setupNetworks``/``_setup_networks``): every network
that is not being removed carries ``switch`` ("legacy" or "ovs").
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from qos_hooks.core import policy
from qos_hooks.core import units
from qos_hooks.core.errors import ConfigError, InputError
from qos_hooks.hostnet.hostqos import HostQos, _Fixes, check_consistency, merge, parse_host_qos, profile_host_qos

SWITCH_OVS = "ovs"
PROFILE_PROPERTY = policy.PROFILE_PROPERTY     # network custom property "qos_profile"


# -- the request -----------------------------------------------------------------

def is_ovs(attrs):
    """VDSM's canonical switch type (canonicalize.py _canonicalize_switch_type_net:
    ``switch`` = "ovs" when set so or when custom property ``ovs`` is true)."""
    if attrs.get("switch") == SWITCH_OVS:
        return True
    custom = attrs.get("custom")
    if isinstance(custom, dict):
        v = custom.get("ovs")
        return str(v).lower() in ("true", "1", "yes", "on")
    return False


def _vlan(attrs):
    v = attrs.get("vlan")
    if v in (None, ""):
        return None
    try:
        return units.parse_int(v)
    except (TypeError, ValueError):
        return v


def _uplink(attrs):
    return attrs.get("nic") or attrs.get("bonding")


@dataclass(frozen=True)
class NetworkDecision:
    """What the before hook decided for one network."""

    network: str
    action: str                 # "keep", "set" (rewrite hostQos), "strip" (OVS)
    qos: Optional[HostQos]
    ovs: bool = False
    uplink: Optional[str] = None
    vlan: Optional[int] = None
    profile: Optional[str] = None
    fixes: Tuple[str, ...] = ()

    def describe(self):
        where = "OVS" if self.ovs else "legacy"
        s = "network %r (%s, uplink %s%s): " % (
            self.network, where, self.uplink or "?",
            ", vlan %s" % self.vlan if self.vlan is not None else "")
        if self.action == "clear":
            s += "no hostQos: host QoS qos-hooks applied on the OVS bridge is removed"
        elif self.action == "strip":
            s += "hostQos taken out of the request, applied on the OVS bridge after " \
                 "setup: %s" % (self.qos.describe() if self.qos else "none (clear)")
        elif self.action == "set":
            s += "hostQos set to %s" % self.qos.describe()
        else:
            s += "hostQos valid as sent: %s" % (self.qos.describe() if self.qos else "none")
        if self.profile:
            s += " (profile %r)" % self.profile
        return s


def _custom_profile(attrs):
    custom = attrs.get("custom")
    if isinstance(custom, dict):
        v = custom.get(PROFILE_PROPERTY)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def decide(networks, config):
    """Validate and fill every network of the request; return decisions.

    Raises InputError / ConfigError for the first network that is wrong
    (networks are visited in sorted order so the message is reproducible).
    """
    decisions = []
    if not isinstance(networks, dict):
        raise InputError("request.networks is not an object")
    for net in sorted(networks):
        attrs = networks[net]
        if not isinstance(attrs, dict):
            raise InputError("network %r: attributes are not an object" % net)
        if attrs.get("remove") in (True, "true", "True", 1, "1"):
            continue
        ovs = is_ovs(attrs)
        vlan = _vlan(attrs)
        fixes = _Fixes()
        raw = attrs.get("hostQos")
        req_qos = parse_host_qos(net, raw, fixes) if raw not in (None, {}) else None
        if raw == {}:
            req_qos = None
        prof_name = _custom_profile(attrs)
        prof_qos = None
        on_existing = policy.ON_EXISTING_FILL
        if prof_name:
            try:
                profile = config.profile(prof_name, "network %r custom property %s"
                                         % (net, PROFILE_PROPERTY))
            except ConfigError as e:
                raise InputError("network %r: %s" % (net, e.reason)
                                 + (" (allowed: %s)" % e.allowed if e.allowed else ""))
            prof_qos = profile_host_qos(profile, config.path)
            on_existing = profile.on_existing
            if prof_qos is None:
                prof_name = None  # a profile without host.* keys changes nothing
        qos = merge(req_qos, prof_qos, on_existing)
        if qos is not None:
            check_consistency(net, qos, vlan)
        changed_by_profile = prof_qos is not None and qos != req_qos
        if ovs:
            action = "strip" if (raw is not None or qos is not None) else "keep"
            if action == "keep":
                # an OVS network without host QoS: remember "none" so the after
                # hook clears what an earlier setup applied
                action = "clear"
        elif fixes.notes or changed_by_profile:
            action = "set"
        else:
            action = "keep"
        decisions.append(NetworkDecision(
            network=net, action=action, qos=qos, ovs=ovs, uplink=_uplink(attrs), vlan=vlan,
            profile=prof_name if changed_by_profile else None, fixes=tuple(fixes.notes)))
    return decisions
