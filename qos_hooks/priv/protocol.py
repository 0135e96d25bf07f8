"""The root helper's request format, shared by both sides of the privilege
boundary: the unprivileged client builds requests with ``build_request``,
the root helper (qos_hooks.priv.helper) accepts only what ``parse_request``
lets through.  Pure: no I/O.  The format and every check are described in
qos_hooks.priv.helper's docstring.
"""

import json
import re

from qos_hooks.core import policy
from qos_hooks.core.errors import InputError

REQUEST_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
MAX_INTERFACES = 64
ACTIONS = ("apply", "clear")
# Every pattern is applied with fullmatch (_whole): with re.match and "$", a
# trailing "\n" would pass ("$" also matches before a final newline) and end
# up in external_ids.
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{12}")
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
DEV_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# libvirt domain names: no '/', no control characters (virDomainDefParse
# rejects '/'); we also keep them short and printable for the logs.
NAME_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f/\u2028\u2029]{1,200}")
# JSON integers: no bound in the request is longer than this
MAX_INT_DIGITS = 20

TOP_KEYS = {"version", "action", "domain", "libvirt_leftovers"}
DOMAIN_KEYS = {"uuid", "name", "interfaces"}
IFACE_KEYS = {"mac", "target_dev", "bandwidth"}
DIRECTION_FIELDS = {"inbound": ("average", "peak", "burst", "floor"),
                    "outbound": ("average", "peak", "burst")}


class RequestError(InputError):
    """The request is malformed or not allowed: refused, nothing done."""


def _refuse(where, message):
    raise RequestError("request refused: %s: %s" % (where, message))


def _no_dupes(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            _refuse(k, "duplicate key")
        d[k] = v
    return d


def _bad_constant(name):
    _refuse(name, "not allowed in a request")


def _bad_float(text):
    _refuse(text[:40], "floating point numbers are not allowed")


def _bounded_int(text):
    # json hands over the digits as written (ASCII only by the JSON grammar);
    # bound them before int(), whose own limit raises a ValueError at 4300
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        _refuse("stdin", "integer with %d digits (at most %d)"
                % (len(text.lstrip("-")), MAX_INT_DIGITS))
    return int(text)


def _whole(pattern, value):
    """True when ``value`` is a str matched by ``pattern`` as a whole."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _keys(obj, allowed, required, where):
    if not isinstance(obj, dict):
        _refuse(where, "must be a JSON object")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        _refuse(where, "unknown key(s) %s" % ", ".join(repr(k) for k in unknown))
    missing = sorted(k for k in required if k not in obj)
    if missing:
        _refuse(where, "missing key(s) %s" % ", ".join(missing))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_rate(direction, obj, where):
    _keys(obj, set(DIRECTION_FIELDS[direction]), (), where)
    vals = {}
    for f, v in obj.items():
        if v is None:
            continue
        if not _is_int(v):
            _refuse("%s.%s" % (where, f), "must be an integer")
        lo, hi = ((policy.BW_BURST_MIN, policy.BW_BURST_MAX) if f == "burst"
                  else (policy.BW_RATE_MIN, policy.BW_RATE_MAX))
        if not lo <= v <= hi:
            _refuse("%s.%s" % (where, f), "%d out of range %d..%d" % (v, lo, hi))
        vals[f] = v
    rate = policy.Rate(**vals)
    try:
        policy.validate_rate(direction, rate, prefix=None)
    except policy.Problem as p:
        _refuse(where, "%s (%s)" % (p.message, p.key))
    return rate


def _check_interface(obj, where):
    _keys(obj, IFACE_KEYS, ("mac", "target_dev", "bandwidth"), where)
    mac, dev = obj["mac"], obj["target_dev"]
    if mac is not None and not _whole(MAC_RE, mac):
        _refuse(where + ".mac", "not a MAC address (xx:xx:xx:xx:xx:xx)")
    if dev is not None and not _whole(DEV_RE, dev):
        _refuse(where + ".target_dev", "not a device name (1-15 of A-Z a-z 0-9 _ . -)")
    if mac is None and dev is None:
        _refuse(where, "needs a mac or a target_dev")
    bw = obj["bandwidth"]
    _keys(bw, set(DIRECTION_FIELDS), (), where + ".bandwidth")
    for direction, rate in bw.items():
        _check_rate(direction, rate, "%s.bandwidth.%s" % (where, direction))
    return {"mac": mac.lower() if mac else None, "target_dev": dev, "bandwidth": bw}


def parse_request(data):
    """Validate request bytes; return (action, DomainQos, options dict).

    Raises RequestError (exit code 4) for anything that is not a valid request.
    """
    from qos_hooks.core.desired import DomainQos
    if not isinstance(data, bytes):
        _refuse("stdin", "not bytes")
    if len(data) > MAX_REQUEST_BYTES:
        _refuse("stdin", "request larger than %d bytes" % MAX_REQUEST_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _refuse("stdin", "not UTF-8")
    try:
        obj = json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_bad_constant,
                         parse_float=_bad_float, parse_int=_bounded_int)
    except RecursionError:
        _refuse("stdin", "nested too deeply")
    except ValueError as e:
        if isinstance(e, RequestError):
            raise
        _refuse("stdin", "not JSON: %s" % e)
    _keys(obj, TOP_KEYS, ("version", "action", "domain"), "request")
    if not _is_int(obj["version"]) or obj["version"] != REQUEST_VERSION:
        _refuse("version", "unsupported version %r (this helper speaks %d)"
                % (obj["version"], REQUEST_VERSION))
    action = obj["action"]
    if not isinstance(action, str) or action not in ACTIONS:
        _refuse("action", "%r is not one of %s" % (action, ", ".join(ACTIONS)))
    leftovers = obj.get("libvirt_leftovers", False)
    if not isinstance(leftovers, bool):
        _refuse("libvirt_leftovers", "must be true or false")
    if leftovers and action != "clear":
        _refuse("libvirt_leftovers", "only valid with action 'clear'")
    dom = obj["domain"]
    _keys(dom, DOMAIN_KEYS, ("uuid", "interfaces"), "domain")
    if not _whole(UUID_RE, dom["uuid"]):
        _refuse("domain.uuid", "not a UUID")
    name = dom.get("name")
    if name is not None and not (_whole(NAME_RE, name) and name.isprintable()):
        _refuse("domain.name", "not a valid domain name")
    ifaces = dom["interfaces"]
    if not isinstance(ifaces, list):
        _refuse("domain.interfaces", "must be a list")
    if len(ifaces) > MAX_INTERFACES:
        _refuse("domain.interfaces", "more than %d interfaces" % MAX_INTERFACES)
    clean = [_check_interface(i, "domain.interfaces[%d]" % n) for n, i in enumerate(ifaces)]
    dq = DomainQos.from_dict({"uuid": dom["uuid"].lower(), "name": name, "interfaces": clean})
    return action, dq, {"libvirt_leftovers": leftovers}


def build_request(action, dq, libvirt_leftovers=False):
    """The request bytes the unprivileged side sends (checked by parse_request)."""
    req = {"version": REQUEST_VERSION, "action": action, "domain": dq.to_dict()}
    if libvirt_leftovers:
        req["libvirt_leftovers"] = True
    return json.dumps(req, sort_keys=True).encode("utf-8")
