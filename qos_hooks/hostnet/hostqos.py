"""Host network QoS: the ``hostQos`` model, its validation, and the ``host.*``
keys of a profile.

VDSM's ``setupNetworks`` takes a per-network ``hostQos`` and applies it as an
hfsc class on the network's NIC or bond without validating it (FIELD_NOTES
section 3; vdsm lib/vdsm/network/configurators/qos.py).  This module parses
and validates it, fixes what is safely fixable (``FIXES``), and parses the
``host.*`` keys of a ``[profile NAME]`` section: the policy parser
(qos_hooks.core.policy) keeps those keys as written and never imports this module,
so a VM hook never pays for host networks.

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

import json
import re
from dataclasses import dataclass
from typing import Optional

from qos_hooks.core import policy
from qos_hooks.core import units
from qos_hooks.core.errors import ConfigError, InputError

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


#: ``host.*`` profile keys -> parser (qos_hooks.core.policy dispatches to this).
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

    The policy parser keeps those keys as written (key, value, line); they
    are parsed here, for the network hooks and ``qos-hooks check`` only.
    Raises ConfigError (file, line, profile, key, value, allowed) for an
    unknown key, a value that does not parse, or keys that do not make a
    valid curve set.
    """
    if not profile.host:
        return None
    raw, keys, where = {}, {}, {}
    for key, text, line in profile.host:
        where[key] = (text, line)
        parser = PROFILE_KEY_PARSERS.get(key)
        if parser is None:
            raise ConfigError("unknown host network key", path=path, line=line,
                              profile=profile.name, key=key, value=units.clip(text),
                              allowed=", ".join(sorted(PROFILE_KEY_PARSERS)))
        try:
            value = parser(text)
        except units.UnitError as e:
            raise ConfigError(str(e), path=path, line=line, profile=profile.name, key=key,
                              value=units.clip(text), allowed=e.allowed)
        _, curve, k = key.split(".")
        raw.setdefault(curve, {})[k] = value
        keys["[out][%s][%s]" % (curve, k)] = key
    try:
        return parse_host_qos("<profile>", {DIRECTION: raw})
    except InputError as e:
        key = _profile_key_for(str(e), keys, profile)
        text, line = where.get(key, (None, None))
        raise ConfigError(_strip_net_prefix(str(e)), path=path, line=line,
                          profile=profile.name, key=key, value=text)


def _profile_key_for(message, keys, profile):
    for p, key in sorted(keys.items(), key=lambda kv: -len(kv[0])):
        if p in message:
            return key
    m = re.search(r"\[out\]\[(ls|ul|rt)\]", message)
    if m:
        for key, _, _ in profile.host:
            if key.startswith("host.%s." % m.group(1)):
                return key
    return None


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
