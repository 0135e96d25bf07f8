"""Host network QoS: the VDSM ``before_network_setup`` / ``after_network_setup`` hooks.

VDSM's ``setupNetworks`` takes a per-network ``hostQos`` and applies it as an
hfsc class on the network's NIC or bond without validating it (FIELD_NOTES
section 3; vdsm lib/vdsm/network/configurators/qos.py).  This module

* validates every network's ``hostQos`` before VDSM sees it, fixes what is
  safely fixable (see ``FIXES``) and otherwise fails with a message that names
  the network, the value and what would be accepted;
* fills ``hostQos`` from the profile named by the network custom property
  ``qos_profile`` (``host.*`` keys of a ``[profile NAME]`` section);
* for networks of the OVS switch type (``"switch": "ovs"``), for which oVirt
  has no host QoS, takes ``hostQos`` out of the request, remembers it in a
  state file, and after VDSM has built the network applies the equivalent on
  the OVS bridge (qos_hooks.hostnet_ovs).

The hook protocol (vdsm lib/vdsm/common/hooks.py ``_runHooksDir`` and
``before_network_setup``/``after_network_setup``): ``$_hook_json`` names a
file holding ``json.dumps({"request": {"networks": ..., "bondings": ...,
"options": ...}})``; a hook rewrites it in place; exit 0 ok, 1 error, 2 error
and skip the remaining scripts.  A non-zero exit of a ``before_network_setup``
script makes VDSM raise HookError, so ``setupNetworks`` fails before anything
is configured; ``after_network_setup`` failures are only logged.  Both run
as root inside supervdsmd, after VDSM canonicalised the request
(lib/vdsm/network/api.py ``setupNetworks``/``_setup_networks``): every
network that is not being removed carries ``switch`` ("legacy" or "ovs").
``after_network_setup`` receives the request as VDSM had it BEFORE the
before-hooks changed it (api.py passes its own copy), so the values that
were stripped or filled come from the state file, not from that request.

The request is edited in place, byte for byte: only the ``hostQos`` member
of the networks that change is replaced, inserted or deleted; every other
byte of the file stays as it was, and the file is not rewritten at all when
nothing changes (``JsonEditor``).

hostQos shape (engine -> VDSM): ``{"out": {"ls"|"ul"|"rt": {"m1", "d", "m2"}}}``.
``m1``/``m2`` in bit/s (``ls.m2`` as the engine sends it is a weight: the
engine's "link share" 1..100, only its ratio to other networks matters to
hfsc), ``d`` in microseconds.  The kernel's ``struct tc_service_curve``
(include/uapi/linux/pkt_sched.h) holds m1/m2 as u32 BYTES per second and d as
u32 microseconds, so rates above (2^32-1)*8 bit/s (34359 Mbit/s) cannot be
expressed.  The engine caps the upper limit and the real-time rate at half of
that, ``MaxAverageNetworkQoSValue`` = 17179 Mbit/s (``ENGINE_MAX_AVERAGE_BPS``);
34359 Mbit/s is its cap for a vNIC's peak, not for host QoS.
"""

import fcntl
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from . import hookbase
from . import log as _log
from . import policy, units
from .errors import ApplyError, ConfigError, InputError, QosHooksError

# -- constants -----------------------------------------------------------------

CURVES = ("ls", "ul", "rt")          # link-share, upper-limit, real-time
CURVE_KEYS = ("m1", "d", "m2")
CURVE_NAMES = {"ls": "link-share", "ul": "upper limit", "rt": "real-time"}
DIRECTION = "out"                     # VDSM supports outbound host QoS only

# struct tc_service_curve: __u32 m1, d, m2 with m1/m2 in bytes/s (pkt_sched.h)
MAX_RATE_BPS = (2 ** 32 - 1) * 8
MAX_D_US = 2 ** 32 - 1
# The engine's ceiling for a host network QoS upper limit and real-time rate:
# ovirt-engine HostNetworkQosProperties puts @ConfiguredRange(min = 1,
# maxConfigValue = MaxAverageNetworkQoSValue) on outAverageUpperlimit and
# outAverageRealtime (Mbit/s; HostNetworkQosMapper sends them to VDSM as m2
# times 1000*1000), and MaxAverageNetworkQoSValue defaults to 17179
# (packaging/dbscripts/upgrade/pre_upgrade/0000_config.sql; 34359 is
# MaxPeakNetworkQoSValue, a vNIC's peak).
ENGINE_MAX_AVERAGE_MBPS = 17179
ENGINE_MAX_AVERAGE_BPS = ENGINE_MAX_AVERAGE_MBPS * 1000 * 1000

SWITCH_OVS = "ovs"
PROFILE_PROPERTY = policy.PROFILE_PROPERTY     # network custom property "qos_profile"

STATE_ENV = "QOS_HOOKS_HOSTNET_STATE"
DEFAULT_STATE_PATH = "/var/lib/qos-hooks/hostnet.json"
STATE_VERSION = 1

HOOK_BEFORE = "before_network_setup"
HOOK_AFTER = "after_network_setup"
HOOK_AFTER_FAIL = "after_network_setup_fail"

# What a failure does when [settings] on_error.<hook_point> is not set.
#  before: fail -- a bad hostQos must stop setupNetworks before VDSM half-applies
#          it (VDSM raises HookError on a non-zero exit, nothing is configured yet).
#  after:  continue -- VDSM ignores after_* exit codes anyway (raiseError=False);
#          the error is logged and ``qos-hooks status`` shows the drift.
DEFAULT_ON_ERROR = {HOOK_BEFORE: "fail", HOOK_AFTER: "continue",
                    HOOK_AFTER_FAIL: "continue"}

# The exit code of a failure under on_error=fail: 2 for before_network_setup,
# so VDSM's HookError carries our stderr (it reports the LAST script run,
# lib/vdsm/common/hooks.py _runHooksDir; qos_hooks.hooks.FAIL_EXIT).
FAIL_EXIT = {HOOK_BEFORE: 2}

# Slack on top of ovsdb_timeout (which bounds each OVSDB call) for process
# start and the OpenFlow bundle: a network hook never runs longer than
# ovsdb_timeout + HOOK_MARGIN seconds, whatever OVSDB or ovs-vswitchd do.
HOOK_MARGIN = 10.0

# The safe fixes the before hook makes, in the words it logs them with.
FIXES = (
    "a rate or delay written as a string of digits (\"8000000\") or as an integral "
    "float (8000000.0) becomes the integer",
    "a rate written with a unit (\"10Mbit\", \"1.5Gbit\", \"125MB/s\") becomes exact "
    "bit/s; a delay with a unit (\"10ms\", \"500us\", \"1s\") becomes microseconds",
    "an unused first segment -- d = 0, or m1 = 0 without d (VDSM's running config "
    "drops zeros the same way) -- is removed",
    "a curve missing from the request is filled from the network's qos_profile "
    "(on_existing=fill); with on_existing=override the profile replaces hostQos",
)


# -- parsing of profile keys ---------------------------------------------------

def parse_microseconds(text):
    """Parse a delay for a curve's ``d``: bare integer = microseconds, or with
    a unit ``us``, ``ms``, ``s``.  Exact: ``1.5ms`` -> 1500, ``0.5us`` refused."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(us|ms|s)?\s*", str(text))
    if not m:
        raise units.UnitError("not a delay: %r" % (units.clip(text),),
                              allowed="whole microseconds, or a number with us, ms or s")
    factor = {"us": 1, "ms": 1000, "s": 1000000, None: 1}[m.group(2)]
    n, den = units.parse_decimal(m.group(1))    # ASCII, at most units.MAX_DIGITS
    if (n * factor) % den:
        raise units.UnitError("%r is not a whole number of microseconds" % (text,),
                              allowed="whole microseconds")
    return n * factor // den


def _parse_rate(text):
    return units.parse_bits_per_second(text)


#: ``host.*`` profile keys -> parser (qos_hooks.policy dispatches to this).
#: ``host.ls.m2`` is a weight (a count) like the engine's link share; the
#: rates are bit/s (``100Mbit``, ``12MB/s`` or a bare number of bit/s);
#: ``d`` is microseconds (``10ms``).
PROFILE_KEY_PARSERS = {}
for _c in CURVES:
    PROFILE_KEY_PARSERS["host.%s.m1" % _c] = _parse_rate
    PROFILE_KEY_PARSERS["host.%s.d" % _c] = parse_microseconds
    PROFILE_KEY_PARSERS["host.%s.m2" % _c] = units.parse_count if _c == "ls" else _parse_rate
del _c


# -- the model -----------------------------------------------------------------

@dataclass(frozen=True)
class Curve:
    """One hfsc service curve: ``m1`` bit/s for ``d`` microseconds, then ``m2``."""

    m2: int
    m1: Optional[int] = None
    d: Optional[int] = None

    def to_json(self):
        d = {}
        if self.m1 is not None:
            d["m1"] = self.m1
            d["d"] = self.d
        d["m2"] = self.m2
        return d

    def initial_rate(self):
        return self.m1 if self.m1 is not None and self.d else self.m2


@dataclass(frozen=True)
class HostQos:
    """Validated outbound host QoS of one network."""

    ls: Optional[Curve] = None
    ul: Optional[Curve] = None
    rt: Optional[Curve] = None

    def curves(self):
        return [(c, getattr(self, c)) for c in CURVES if getattr(self, c) is not None]

    def is_empty(self):
        return not self.curves()

    def to_json(self):
        """The VDSM shape: ``{"out": {curve: {m1, d, m2}}}`` in ls, ul, rt order."""
        return {DIRECTION: {c: cv.to_json() for c, cv in self.curves()}}

    def describe(self):
        parts = []
        for c, cv in self.curves():
            if c == "ls":
                s = "link-share weight %d" % cv.m2
            else:
                s = "%s %s" % (CURVE_NAMES[c], units.format_bps(cv.m2))
            if cv.m1 is not None:
                s += " (first %dus at %s)" % (cv.d, units.format_bps(cv.m1))
            parts.append(s)
        return ", ".join(parts) or "none"


# -- validation ----------------------------------------------------------------

class _Fixes:
    def __init__(self):
        self.notes = []

    def add(self, what):
        self.notes.append(what)


def _bad(net, path, value, why, allowed=None):
    msg = "network %r: hostQos%s = %s: %s" % (net, path, json.dumps(value), why)
    if allowed:
        msg += " (allowed: %s)" % allowed
    return InputError(msg)


def _number(net, path, value, key, fixes):
    """Coerce one m1/d/m2 value to a non-negative int, or raise InputError."""
    if isinstance(value, bool) or value is None:
        raise _bad(net, path, value, "not a number",
                   "a non-negative integer (%s)" % ("microseconds" if key == "d" else "bit/s"))
    if isinstance(value, int):
        v = value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise _bad(net, path, value, "not a whole number",
                       "a non-negative integer")
        v = int(value)
        fixes.add("%s: %r -> %d" % (path, value, v))
    elif isinstance(value, str):
        s = value.strip()
        try:
            if re.fullmatch(r"[0-9]+", s):
                v = units.parse_int(s)          # at most units.MAX_DIGITS
            elif key == "d":
                v = parse_microseconds(s)
            elif key == "m2" and path.startswith("[out][ls]"):
                raise units.UnitError("a link-share weight has no unit")
            else:
                v = units.parse_bits_per_second(s)
        except units.UnitError as e:
            raise _bad(net, path, value, str(e),
                       e.allowed or "a non-negative integer")
        fixes.add("%s: %s -> %d" % (path, json.dumps(value), v))
    else:
        raise _bad(net, path, value, "not a number", "a non-negative integer")
    if v < 0:
        raise _bad(net, path, value, "negative", "0..%d" % (MAX_D_US if key == "d"
                                                            else MAX_RATE_BPS))
    top = MAX_D_US if key == "d" else MAX_RATE_BPS
    if v > top:
        raise _bad(net, path, value,
                   "too large for the kernel's hfsc service curve (u32 %s)"
                   % ("microseconds" if key == "d" else "bytes/s"), "0..%d" % top)
    return v


def _curve(net, name, raw, fixes):
    path = "[out][%s]" % name
    if not isinstance(raw, dict):
        raise _bad(net, path, raw, "a curve must be an object", "{\"m1\", \"d\", \"m2\"}")
    unknown = sorted(set(raw) - set(CURVE_KEYS))
    if unknown:
        raise _bad(net, path + "[%s]" % unknown[0], raw[unknown[0]], "unknown curve key",
                   "m1, d, m2")
    vals = {k: _number(net, "%s[%s]" % (path, k), raw[k], k, fixes) for k in raw}
    m1, d, m2 = vals.get("m1"), vals.get("d"), vals.get("m2")
    if d == 0 or (m1 == 0 and d is None):
        # an unused first segment: VDSM strips zeros the same way
        # (lib/vdsm/network/kernelconfig.py _remove_zero_values_in_net_qos)
        fixes.add("%s: dropped the empty first segment m1=%s d=%s" % (path, m1, d))
        m1 = d = None
    if m2 is None:
        raise _bad(net, path, raw, "m2 is required (the long-term rate)",
                   "set %s[m2]" % path)
    if (m1 is None) != (d is None):
        which = "m1" if m1 is not None else "d"
        other = "d" if which == "m1" else "m1"
        raise _bad(net, path + "[%s]" % which, vals[which],
                   "%s needs %s (hfsc: m1 applies for d microseconds)" % (which, other),
                   "set both m1 and d, or neither")
    if m2 == 0:
        if name == "ls":
            raise _bad(net, path + "[m2]", m2, "a link-share weight of 0 takes no share",
                       "1..%d" % MAX_RATE_BPS)
        raise _bad(net, path + "[m2]", m2, "a %s of 0 bit/s stops the network"
                   % CURVE_NAMES[name], "1..%d bit/s" % ENGINE_MAX_AVERAGE_BPS)
    if name != "ls" and m2 > ENGINE_MAX_AVERAGE_BPS:
        raise _bad(net, path + "[m2]", m2,
                   "%s %s is above the engine's ceiling for host network QoS "
                   "(ovirt-engine MaxAverageNetworkQoSValue = %d Mbit/s)"
                   % (CURVE_NAMES[name], units.format_bps(m2), ENGINE_MAX_AVERAGE_MBPS),
                   "1..%d bit/s" % ENGINE_MAX_AVERAGE_BPS)
    return Curve(m2=m2, m1=m1, d=d)


def parse_host_qos(net, raw, fixes=None):
    """Validate a request's ``hostQos`` for network ``net``; return HostQos.

    Raises InputError naming the network and the offending value.
    """
    fixes = fixes if fixes is not None else _Fixes()
    if not isinstance(raw, dict):
        raise _bad(net, "", raw, "hostQos must be an object", "{\"out\": {...}}")
    unknown = sorted(set(raw) - {DIRECTION})
    if unknown:
        raise _bad(net, "[%s]" % unknown[0], raw[unknown[0]],
                   "VDSM applies host QoS to outbound traffic only", "\"out\"")
    out = raw.get(DIRECTION, {})
    if not isinstance(out, dict):
        raise _bad(net, "[out]", out, "must be an object", "{\"ls\", \"ul\", \"rt\"}")
    unknown = sorted(set(out) - set(CURVES))
    if unknown:
        raise _bad(net, "[out][%s]" % unknown[0], out[unknown[0]], "unknown curve",
                   "ls (link-share), ul (upper limit), rt (real-time)")
    return HostQos(**{c: _curve(net, c, out[c], fixes) for c in CURVES if c in out})


def check_consistency(net, qos, vlan=None):
    """The cross-curve rules; raise InputError naming the network.

    * the upper limit may not be below the real-time curve: neither its
      long-term rate (m2) nor its initial rate (the engine refuses
      realtime > upperlimit; hfsc would cap the guarantee at the limit);
    * a VLAN network needs a link-share curve: VDSM builds the default class
      from it (configurators/qos.py ``_fresh_qdisc_conf_out`` reads
      ``qos['ls']``) and fails without it;
    * a class needs a real-time or link-share curve: the kernel refuses an
      hfsc class with only an upper limit (sch_hfsc.c hfsc_change_class:
      ``rsc == NULL && fsc == NULL`` -> EINVAL).
    """
    if qos.is_empty():
        return
    if qos.ul is not None and qos.rt is not None:
        if qos.ul.m2 < qos.rt.m2:
            raise _bad(net, "[out][ul][m2]", qos.ul.m2,
                       "upper limit %s is below the real-time rate %s"
                       % (units.format_bps(qos.ul.m2), units.format_bps(qos.rt.m2)),
                       "%d..%d bit/s" % (qos.rt.m2, ENGINE_MAX_AVERAGE_BPS))
        if qos.ul.initial_rate() < qos.rt.initial_rate():
            raise _bad(net, "[out][ul]", qos.ul.to_json(),
                       "upper limit starts at %s, below the real-time curve's %s"
                       % (units.format_bps(qos.ul.initial_rate()),
                          units.format_bps(qos.rt.initial_rate())),
                       "an upper limit at or above the real-time curve")
    if qos.ls is None:
        if vlan is not None:
            raise _bad(net, "[out]", qos.to_json()[DIRECTION],
                       "VLAN network (vlan %s) has no link-share curve 'ls': VDSM "
                       "fails to build its default class without one" % vlan,
                       "add \"ls\": {\"m2\": WEIGHT}, or name a qos_profile with host.ls.m2")
        if qos.rt is None:
            raise _bad(net, "[out]", qos.to_json()[DIRECTION],
                       "an upper limit alone is not a class: the kernel needs a "
                       "link-share or real-time curve", "add \"ls\": {\"m2\": WEIGHT}")


# -- profiles --------------------------------------------------------------------

def profile_host_qos(profile, path=None):
    """The HostQos of a profile's ``host.*`` keys, or None if it has none.

    Raises ConfigError (file, profile, key, value, allowed) when the keys do
    not make a valid curve set.
    """
    if not profile.host:
        return None
    raw = {}
    keys = {}
    for key, value in profile.host:
        _, curve, k = key.split(".")
        raw.setdefault(curve, {})[k] = value
        keys["[out][%s][%s]" % (curve, k)] = key
    try:
        return parse_host_qos("<profile>", {DIRECTION: raw})
    except InputError as e:
        key, value = _profile_key_for(str(e), keys, profile)
        raise ConfigError(_strip_net_prefix(str(e)), path=path, profile=profile.name,
                          key=key, value=value)


def _profile_key_for(message, keys, profile):
    for p, key in sorted(keys.items(), key=lambda kv: -len(kv[0])):
        if p in message:
            return key, dict(profile.host).get(key)
    m = re.search(r"\[out\]\[(ls|ul|rt)\]", message)
    if m:
        for key, value in profile.host:
            if key.startswith("host.%s." % m.group(1)):
                return key, value
    return None, None


def _strip_net_prefix(msg):
    return re.sub(r"^network '<profile>': ", "", msg)


def merge(request_qos, profile_qos, on_existing):
    """Combine the request's hostQos with the profile's, per curve."""
    if profile_qos is None:
        return request_qos
    if request_qos is None or on_existing == policy.ON_EXISTING_OVERRIDE:
        return profile_qos
    return HostQos(**{c: getattr(request_qos, c) if getattr(request_qos, c) is not None
                      else getattr(profile_qos, c) for c in CURVES})


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


# -- byte-preserving JSON edits ----------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JsonEditor:
    """Edit members of objects inside a JSON text without touching other bytes.

    Spans come from the stdlib decoder (``raw_decode`` and ``scanstring``), so
    the text is parsed exactly as ``json.loads`` parses it.  New values are
    written with ``json.dumps`` defaults, the same settings VDSM uses to write
    the file (vdsm lib/vdsm/common/hooks.py: ``json.dumps(data)``).
    """

    def __init__(self, text):
        self.text = text
        self.edits = []      # (start, end, replacement)

    def _members(self, start):
        """Members of the object starting at ``start``: [(key, kstart, vstart,
        vend)], and the index of its closing brace."""
        s = self.text
        if s[start] != "{":
            raise InputError("expected a JSON object at offset %d" % start)
        i = _WS.match(s, start + 1).end()
        members = []
        if s[i] == "}":
            return members, i
        while True:
            if s[i] != '"':
                raise InputError("malformed JSON object at offset %d" % i)
            key, kend = json.decoder.scanstring(s, i + 1)
            j = _WS.match(s, kend).end()
            if s[j] != ":":
                raise InputError("malformed JSON object at offset %d" % j)
            vstart = _WS.match(s, j + 1).end()
            _, vend = _DECODER.raw_decode(s, vstart)
            members.append((key, i, vstart, vend))
            k = _WS.match(s, vend).end()
            if s[k] == "}":
                return members, k
            if s[k] != ",":
                raise InputError("malformed JSON object at offset %d" % k)
            i = _WS.match(s, k + 1).end()

    def find(self, path):
        """The start offset of the value at ``path`` (a list of keys), or None."""
        pos = _WS.match(self.text, 0).end()
        for key in path:
            if self.text[pos] != "{":
                return None
            members, _ = self._members(pos)
            hits = [m for m in members if m[0] == key]
            if not hits:
                return None
            pos = hits[-1][2]   # json.loads keeps the last duplicate
        return pos

    def set_member(self, obj_start, key, value):
        members, close = self._members(obj_start)
        new = json.dumps(value)
        hits = [m for m in members if m[0] == key]
        if hits:
            _, _, vstart, vend = hits[-1]
            if self.text[vstart:vend] != new:
                self.edits.append((vstart, vend, new))
            return
        member = "%s: %s" % (json.dumps(key), new)
        if members:
            self.edits.append((members[-1][3], members[-1][3], ", " + member))
        else:
            self.edits.append((close, close, member))

    def delete_member(self, obj_start, key):
        members, close = self._members(obj_start)
        for idx, (k, kstart, vstart, vend) in enumerate(members):
            if k != key:
                continue
            if idx > 0:       # from the end of the previous value
                self.edits.append((members[idx - 1][3], vend, ""))
            elif len(members) > 1:  # up to the next key
                self.edits.append((kstart, members[1][1], ""))
            else:
                self.edits.append((kstart, vend, ""))

    @property
    def changed(self):
        return bool(self.edits)

    def result(self):
        out = self.text
        for start, end, rep in sorted(self.edits, key=lambda e: (e[0], e[1]), reverse=True):
            out = out[:start] + rep + out[end:]
        return out


def edit_request(text, decisions):
    """Apply the decisions to the hook JSON text; return the new text (equal
    to ``text`` when nothing changes)."""
    ed = JsonEditor(text)
    for d in decisions:
        if d.action not in ("set", "strip"):
            continue
        pos = ed.find(["request", "networks", d.network])
        if pos is None:
            raise InputError("network %r not found in the request" % d.network)
        if d.action == "set":
            ed.set_member(pos, "hostQos", d.qos.to_json())
        else:
            ed.delete_member(pos, "hostQos")
    return ed.result() if ed.changed else text


# -- the state file (OVS networks) --------------------------------------------------

def state_path(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get(STATE_ENV) or DEFAULT_STATE_PATH


@dataclass
class State:
    """``{"version": 1, "pending": {net: entry}, "applied": {net: entry}}``.

    An entry: ``{"hostQos": {...} | null, "uplink": "eth1", "vlan": 10 | null,
    "profile": "gold" | null}``.  ``pending`` is written by the before hook
    (what this setupNetworks asks for), ``applied`` by the after hook (what is
    on the OVS bridges and what ``status`` compares against).
    """

    path: str
    pending: Dict[str, dict] = field(default_factory=dict)
    applied: Dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path):
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as e:
            raise QosHooksError("cannot read host network QoS state %s: %s" % (path, e))
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise QosHooksError("host network QoS state %s: unknown format" % path)
        return cls(path, dict(data.get("pending") or {}), dict(data.get("applied") or {}))

    def save(self):
        """Write atomically: a temporary file in the same directory, fsync,
        rename (qos_hooks.fileio.write_atomic)."""
        from .fileio import write_atomic
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, mode=0o700, exist_ok=True)
        data = json.dumps({"version": STATE_VERSION, "pending": self.pending,
                           "applied": self.applied}, indent=1, sort_keys=True) + "\n"
        write_atomic(self.path, data.encode("utf-8"), mode=0o600)


class StateLock:
    """An exclusive lock next to the state file (supervdsmd serialises
    setupNetworks already; this guards against ``qos-hooks`` run by hand)."""

    def __init__(self, path):
        self.path = path + ".lock"
        self.fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _entry(decision):
    qos = decision.qos if decision.qos is not None and not decision.qos.is_empty() else None
    return {"hostQos": qos.to_json() if qos else None,
            "uplink": decision.uplink, "vlan": decision.vlan, "profile": decision.profile}


# -- hook handlers --------------------------------------------------------------------

def _read_hook_json(env):
    path = env.get("_hook_json")
    if not path:
        raise InputError("$_hook_json is not set: not run by VDSM?")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError("cannot read $_hook_json %s: %s" % (path, e.strerror))
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except ValueError as e:
        raise InputError("$_hook_json %s is not JSON: %s" % (path, e))
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
        raise InputError("$_hook_json %s has no \"request\" object" % path)
    return path, text, data["request"]


def before_network_setup(env, config, logger):
    path, text, request = _read_hook_json(env)
    decisions = decide(request.get("networks") or {}, config)
    for d in decisions:
        for fx in d.fixes:
            logger.warning("network %r: fixed hostQos%s", d.network, fx)
        if d.action != "keep" or d.qos is not None:
            logger.info("%s", d.describe())
        if d.ovs and d.qos is not None:
            dropped = [c for c, cv in d.qos.curves() if cv.m1 is not None]
            if dropped:
                logger.warning("network %r: OVS has no service curves; m1/d of %s are "
                               "not applied (only m2)", d.network, ", ".join(dropped))
    new = edit_request(text, decisions)
    ovs = [d for d in decisions if d.ovs]
    spath = state_path(env)
    if ovs or os.path.exists(spath):
        # pending always describes THIS setupNetworks (a stale one, left by a
        # supervdsmd crash between the hooks, is replaced)
        with StateLock(spath):
            st = State.load(spath)
            st.pending = {d.network: _entry(d) for d in ovs}
            st.save()
    if new != text:
        hookbase.replace_hook_file(path, new.encode("utf-8"))
    return 0


def vdsm_applied_host_qos(attrs):
    """Whether VDSM's ``_setup_qos`` applies this network's ``hostQos`` itself
    (lib/vdsm/network/netswitch/configurator.py ``_get_qos_out``: a non-empty
    ``hostQos["out"]``), which it does whenever before_network_setup did not
    take it out."""
    q = attrs.get("hostQos") if isinstance(attrs, dict) else None
    return isinstance(q, dict) and bool(q.get("out"))


def _removed(attrs):
    return isinstance(attrs, dict) and attrs.get("remove") in (True, "true", "True", 1, "1")


def after_network_setup(env, config, logger):
    """Move this setupNetworks' pending OVS entries to ``applied`` and make the
    OVS bridges match; networks removed, or set up again without hostQos,
    lose the QoS qos-hooks gave them."""
    _, _, request = _read_hook_json(env)
    networks = request.get("networks") or {}
    spath = state_path(env)
    with StateLock(spath):
        st = State.load(spath)
        touched = set()
        for net, attrs in sorted(networks.items()):
            old = st.applied.get(net)
            if _removed(attrs):
                if old is not None:
                    touched.add(old.get("uplink"))
                    del st.applied[net]
                st.pending.pop(net, None)
                continue
            if not isinstance(attrs, dict) or not is_ovs(attrs):
                if old is not None:      # moved to the legacy switch
                    touched.add(old.get("uplink"))
                    del st.applied[net]
                continue
            entry = st.pending.pop(net, None)
            if entry is None:
                # the before hook did not see this network: a setupNetworks that
                # changes the switch type takes _change_switch_type
                # (lib/vdsm/network/api.py), which skips before_network_setup,
                # or the hook was not installed then.  VDSM's _setup_qos
                # (netswitch/configurator.py) then applied hostQos itself, as
                # hfsc on the uplink, although the network is on OVS: apply the
                # OVS equivalent and remove VDSM's qdisc (reconcile evict_vdsm).
                if vdsm_applied_host_qos(attrs):
                    logger.warning(
                        "network %r: before_network_setup did not see this setupNetworks "
                        "(VDSM skips it when the switch type changes): VDSM applied its "
                        "hostQos itself as hfsc on %s; qos-hooks moves it to the OVS "
                        "switch", net, _uplink(attrs))
                # validate what VDSM was asked for
                d = [x for x in decide({net: attrs}, config) if x.network == net]
                entry = _entry(d[0]) if d else {"hostQos": None, "uplink": _uplink(attrs),
                                                "vlan": _vlan(attrs), "profile": None}
            if old is not None:
                touched.add(old.get("uplink"))
            touched.add(entry.get("uplink"))
            if entry.get("hostQos"):
                st.applied[net] = entry
            else:
                st.applied.pop(net, None)
        st.pending = {}
        st.save()
        touched.discard(None)
        if not touched:
            return 0
        from . import hostnet_ovs
        remote = config.settings.ovsdb
        timeout = config.settings.ovsdb_timeout
        results = hostnet_ovs.reconcile(st.applied, sorted(touched), remote, timeout,
                                        logger=logger, evict_vdsm=True)
    failed = [r for r in results if r.error]
    for r in results:
        if r.error:
            logger.error("%s", r)
        else:
            logger.info("%s", r)
    if failed:
        raise ApplyError("host network QoS not applied on %s (see above; 'qos-hooks status' "
                         "shows the drift)" % ", ".join(r.uplink for r in failed))
    return 0


def after_network_setup_fail(env, config, logger):
    """setupNetworks failed: forget what the before hook remembered."""
    spath = state_path(env)
    if not os.path.exists(spath):
        return 0
    with StateLock(spath):
        st = State.load(spath)
        if st.pending:
            logger.info("setupNetworks failed: dropping pending host QoS of %s",
                        ", ".join(sorted(st.pending)))
            st.pending = {}
            st.save()
    return 0


def drop_unvalidated_host_qos(env, config, logger):
    """on_error=continue in before_network_setup: take ``hostQos`` off every
    network whose host QoS does not validate (byte-preserving edit, atomic
    write), and say so; VDSM then sets those networks up without host QoS
    instead of applying values nobody validated.  A file that cannot be read
    is left as it is (logged)."""
    try:
        path, text, request = _read_hook_json(env)
        networks = request.get("networks") or {}
        bad = []
        for net in sorted(networks) if isinstance(networks, dict) else ():
            attrs = networks[net]
            if not isinstance(attrs, dict) or "hostQos" not in attrs:
                continue
            try:
                decide({net: attrs}, config)
            except QosHooksError as e:
                bad.append((net, e))
        if not bad:
            return
        ed = JsonEditor(text)
        for net, _ in bad:
            ed.delete_member(ed.find(["request", "networks", net]), "hostQos")
        hookbase.replace_hook_file(path, ed.result().encode("utf-8"))
    except (OSError, ValueError, QosHooksError) as e:
        logger.error("on_error=continue: could not remove the unvalidated hostQos: %s; "
                     "the request goes on unchanged", e)
        return
    for net, e in bad:
        logger.warning("on_error=continue: removed the hostQos of network %r, which could "
                       "not be validated (%s): the network carries on without host QoS",
                       net, e)


HANDLERS = {HOOK_BEFORE: before_network_setup, HOOK_AFTER: after_network_setup,
            HOOK_AFTER_FAIL: after_network_setup_fail}


def vdsm_main(hook_point, environ=None):
    """Entry point of the network hook executables; returns the exit code.

    0 on success; on failure when the failure policy of the hook point is
    ``fail`` (``on_error.<hook_point>`` in [settings], defaults in
    DEFAULT_ON_ERROR: a bad hostQos stops setupNetworks before VDSM changes
    anything): 2 for before_network_setup (VDSM then reports our message and
    skips the scripts after ours, FAIL_EXIT), 1 for the after_* points.
    """
    env = os.environ if environ is None else environ
    logger = _log.setup({"hook": hook_point})
    loaded = {}

    def handler(config):
        loaded["config"] = config
        return HANDLERS[hook_point](env, config, logger)

    def on_failure(code):
        # on_error=continue: carry on WITHOUT the host QoS that failed validation
        if code == 0 and hook_point == HOOK_BEFORE and loaded.get("config") is not None:
            drop_unvalidated_host_qos(env, loaded["config"], logger)
    return hookbase.run(hook_point, handler, environ=env, logger=logger,
                        defaults=DEFAULT_ON_ERROR, margin=HOOK_MARGIN, on_failure=on_failure,
                        fail_exit=FAIL_EXIT)


# -- status -----------------------------------------------------------------------------

def status_rows(remote, timeout, state_file=None, netns=None):
    """Per host network: desired (the state file) versus actual (OVSDB rows,
    OpenFlow flows, the uplink's htb classes in the kernel).

    Returns a list of ``qos_hooks.hostnet_ovs.HostNetStatus`` (``network``,
    ``uplink``, ``bridge``, ``vlan``, ``queue_id``, ``desired``, ``actual``,
    ``flows``, ``drift``: a tuple of sentences, empty when as desired;
    ``ok``; ``to_dict()``; ``describe()``).  No OVSDB connection is made when
    no host network has QoS on OVS.  Raises BackendUnavailable /
    BackendTimeout when OVSDB cannot be read within ``timeout``.
    """
    from . import hostnet_ovs
    st = State.load(state_file or state_path())
    return hostnet_ovs.status(st.applied, remote, timeout, netns=netns)


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


def resync(remote, timeout, state_file=None, logger=None):
    """Re-apply the remembered host network QoS on OVS (after an ovs-vswitchd
    restart, which loses OpenFlow flows); returns the per-uplink results."""
    from . import hostnet_ovs
    path = state_file or state_path()
    with StateLock(path):
        st = State.load(path)
        return hostnet_ovs.resync(st.applied, remote, timeout, logger=logger)


def resync_main(args):
    """``qos-hooks resync``: re-apply the remembered host network QoS; exit 6
    when an uplink could not be brought back (named in the output)."""
    import sys
    from .errors import EXIT_APPLY, EXIT_OK
    config = policy.load_config(args.config, missing_ok=True)
    remote = args.ovsdb or config.settings.ovsdb
    timeout = args.timeout or config.settings.ovsdb_timeout
    results = resync(remote, timeout, logger=_log.get("hostnet"))
    if not results:
        sys.stdout.write("no host network QoS on Open vSwitch to re-apply\n")
    for r in results:
        sys.stdout.write("%s\n" % r)
    return EXIT_APPLY if any(r.error for r in results) else EXIT_OK

