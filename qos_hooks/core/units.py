"""Units: parse human quantities exactly and convert between libvirt, tc and OVS.

The facts (../shared/FIELD_NOTES.md section 1, read from libvirt
src/util/virnetdevbandwidth.c and Open vSwitch lib/netdev-linux.c):

==========================  =====================  ==========================
quantity                    unit                   in bits
==========================  =====================  ==========================
libvirt average/peak/floor  "KB/s" = 1000 B/s      8000 bit/s (tc ``kbps``)
libvirt burst               KiB = 1024 B           8192 bit   (tc ``kb``)
OVS ingress_policing_rate   kbit/s                 1000 bit/s
OVS ingress_policing_burst  kbit (x1024/8 bytes)   1024 bit
OVS QoS/Queue max/min-rate  bit/s                  1 bit/s
OVS Queue burst             bit                    1 bit
VDSM hostQos m1/m2          bit/s                  1 bit/s
==========================  =====================  ==========================

Every conversion here is exact integer arithmetic.  Parsing refuses a
quantity that is not a whole number of the target unit and says what the
nearest exact values are, instead of rounding silently.
"""

import re

# bits per libvirt unit
LIBVIRT_RATE_BITS = 8000   # average, peak, floor: kilobytes (1000) per second
LIBVIRT_BURST_BITS = 8192  # burst: kibibytes

_SI = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12}
_IEC = {"ki": 2 ** 10, "mi": 2 ** 20, "gi": 2 ** 30, "ti": 2 ** 40}

_QTY = re.compile(r"\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z/]*)\s*")

# Every number read from text (policy file, domain XML, hook JSON strings)
# goes through parse_decimal / parse_int: ASCII digits only (Python's int()
# and str.isdigit() also take '٤', '²', '５'), and at most MAX_DIGITS of them,
# so a 5000-digit value is an input or config error with a location instead
# of Python's "Exceeds the limit (4300 digits)" ValueError.  Every bound in
# this project is below 10**20 (qemu's 1e15 is the largest).
MAX_DIGITS = 20
_DECIMAL = re.compile(r"(?P<sign>[-+]?)(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?")


class UnitError(ValueError):
    """A quantity could not be parsed; ``allowed`` says what would be accepted."""

    def __init__(self, message, allowed=None):
        self.allowed = allowed
        super().__init__(message)


def parse_decimal(text, signed=False):
    """The one parser of numbers written as text: ``[-]digits[.digits]`` in
    ASCII, at most MAX_DIGITS digits; returns the exact fraction
    ``(numerator, denominator)``.  Raises UnitError for anything else."""
    s = text.strip() if isinstance(text, str) else None
    m = _DECIMAL.fullmatch(s) if s is not None else None
    if not m or (m.group("sign") and not signed) or m.group("sign") == "+":
        raise UnitError("not a number: %r" % (clip(text),),
                        allowed="ASCII digits 0-9%s" % (", optionally negative" if signed
                                                        else ""))
    whole, frac = m.group("whole"), m.group("frac") or ""
    if len(whole) + len(frac) > MAX_DIGITS:
        raise UnitError("number with %d digits is too long" % (len(whole) + len(frac)),
                        allowed="at most %d digits" % MAX_DIGITS)
    num = int(whole + frac)
    return (-num if m.group("sign") == "-" else num), 10 ** len(frac)


def parse_int(text, signed=False):
    """A whole number written as text (ASCII digits, at most MAX_DIGITS)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    num, den = parse_decimal(text, signed)
    if den != 1:
        raise UnitError("not a whole number: %r" % (clip(text),), allowed="an integer")
    return num


def clip(text, limit=40):
    """A value for an error message: bounded, so a 5000-digit input does not
    become a 5000-character message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "...(%d characters)" % len(text)


def _split(text):
    if isinstance(text, int) and not isinstance(text, bool):
        return text, 1, ""
    text = str(text)
    m = _QTY.fullmatch(text)
    if not m:
        if text.strip().startswith("-"):
            raise UnitError("not a quantity: %r: negative values are not allowed" % clip(text),
                            allowed="a whole number >= 1 in the key's unit (e.g. 12500), or "
                                    "a number with a unit (e.g. 100Mbit, 12MB/s, 1MiB)")
        raise UnitError("not a quantity: %r" % clip(text),
                        allowed="a whole number in the key's unit (e.g. 12500), or a number "
                                "with a unit (e.g. 100Mbit, 12MB/s, 1MiB)")
    num, den = parse_decimal(m.group("num"))
    return num, den, m.group("unit")


def _prefix_factor(prefix):
    p = prefix.lower()
    if p in _IEC:
        return _IEC[p]
    if p in _SI:
        return _SI[p]
    return None


# the unit lists of docs/policy.md section 5 (every form the parser accepts)
_RATE_HELP = ("a whole number in the default unit, or a number with a unit: "
              "bit/s forms 'kbit', 'Mbit', 'Gbit', 'Tbit', 'Kibit', 'Mibit', 'Gibit' "
              "(optionally '/s'); byte/s forms 'B/s', 'kB/s', 'MB/s', 'GB/s', 'KiB/s', "
              "'MiB/s', 'GiB/s'")
_SIZE_HELP = ("a whole number in the default unit, or a number with a unit: "
              "'B', 'kB', 'KiB', 'MB', 'MiB', 'GB', 'GiB', or bit forms "
              "'kbit', 'Kibit', 'Mbit', 'Mibit'")


def _unit_suggestion(num_text, unit, rate):
    """A hint for a unit that is almost one: '1G', '100M', '100Mb'."""
    m = re.match(r"^([kKmMgGtT]i?)(b?)$", unit)
    if not m:
        return ""
    p = m.group(1)
    p = p if p[0] != "K" or p.endswith("i") else "k"
    p = p if p[0] not in "mgt" else p.upper()
    if rate:
        forms = "%s%sbit (bits/s) or %s%sB/s (bytes/s)" % (num_text, p, num_text, p)
    else:
        forms = "%s%sB (bytes) or %s%sbit (bits)" % (num_text, p, num_text, p)
    what = "'b' could be bits or bytes" if m.group(2) else "it has no 'bit' or 'B'"
    return ": %s; write %s" % (what, forms)


def _rate_bits_per_second(num, den, unit):
    """Return the rate in bit/s as a fraction (numerator, denominator)."""
    u = unit
    if u.endswith("/s"):
        u = u[:-2]
        per_second = True
    elif u.lower().endswith("ps"):
        # 'Mbps' means megabits to people and megaBYTES to tc: refuse it.
        raise UnitError("%r is ambiguous (tc reads 'mbps' as megabytes/s, people "
                        "mean megabits/s): write 'Mbit' or 'MB/s'" % unit,
                        allowed=_RATE_HELP)
    else:
        per_second = False
    m = re.match(r"^([kKmMgGtT]i?)?(bit|B)$", u)
    if not m:
        raise UnitError("unknown rate unit %r" % unit, allowed=_RATE_HELP)
    if m.group(2) == "B" and not per_second:
        raise UnitError("%r is a size, not a rate: write %r" % (unit, unit + "/s"),
                        allowed=_RATE_HELP)
    factor = _prefix_factor(m.group(1) or "")
    bits = 8 if m.group(2) == "B" else 1
    return num * factor * bits, den


def _size_bits(num, den, unit):
    m = re.match(r"^([kKmMgGtT]i?)?(bit|B)$", unit)
    if not m:
        raise UnitError("unknown size unit %r" % unit, allowed=_SIZE_HELP)
    factor = _prefix_factor(m.group(1) or "")
    bits = 8 if m.group(2) == "B" else 1
    return num * factor * bits, den


# unit name -> (short name, how to show a value of it in bits), for the
# nearest exact values in an error: "12 KB/s = 96kbit/s"
def _bits_text(bits):
    for name, factor in (("Gbit", 10 ** 9), ("Mbit", 10 ** 6), ("kbit", 10 ** 3)):
        if bits >= factor and bits % factor == 0:
            return "%d%s" % (bits // factor, name)
    return "%dbit" % bits


_SHORT = {"KB/s units": ("KB/s", "/s"), "KiB units": ("KiB", ""),
          "bytes/s": ("B/s", "/s"), "bytes": ("B", ""), "bit/s": ("bit/s", "/s")}


def _exact(num_bits, den, per_unit_bits, unit_name, text):
    total_den = den * per_unit_bits
    if num_bits % total_den:
        lo = num_bits // total_den
        short, per_s = _SHORT.get(unit_name, (unit_name, ""))
        near = " and ".join("%d %s = %s%s" % (v, short, _bits_text(v * per_unit_bits), per_s)
                            for v in ((lo, lo + 1) if lo else (1,)))
        raise UnitError(
            "%r is not a whole number of %s (%d bit each); nearest exact "
            "values are %s" % (text, unit_name, per_unit_bits, near),
            allowed="whole multiples of %d bit" % per_unit_bits)
    return num_bits // total_den


def _parse(text, to_bits, per_unit_bits, unit_name, bare_msg):
    """A quantity in whole target units: a bare number is already in them;
    with a unit, ``to_bits`` converts and the result must be exact."""
    num, den, unit = _split(text)
    if not unit:
        if den != 1:
            raise UnitError("%r: %s" % (text, bare_msg))
        return num
    try:
        bits, den = to_bits(num, den, unit)
    except UnitError as e:
        written = str(text).strip()
        hint = _unit_suggestion(written[:len(written) - len(unit)].strip(), unit,
                                to_bits is _rate_bits_per_second)
        if hint and str(e).startswith("unknown"):
            raise UnitError(str(e) + hint, allowed=e.allowed)
        raise
    return _exact(bits, den, per_unit_bits, unit_name, text)


def parse_libvirt_rate(text):
    """Parse a rate into libvirt units (kilobytes/s, 1 = 8000 bit/s).

    A bare number is already in libvirt units.  ``100Mbit`` -> 12500,
    ``12MB/s`` -> 12000.
    """
    return _parse(text, _rate_bits_per_second, LIBVIRT_RATE_BITS, "KB/s units",
                  "libvirt rates are whole numbers of KB/s")


def parse_libvirt_burst(text):
    """Parse a size into libvirt burst units (KiB, 1 = 8192 bit).

    A bare number is already KiB.  ``1MiB`` -> 1024, ``512KiB`` -> 512.
    """
    return _parse(text, _size_bits, LIBVIRT_BURST_BITS, "KiB units",
                  "libvirt bursts are whole numbers of KiB")


def parse_bytes_per_second(text):
    """Parse a byte rate for ``<iotune>`` ``*_bytes_sec`` (bare number = B/s)."""
    return _parse(text, _rate_bits_per_second, 8, "bytes/s",
                  "bytes per second must be a whole number")


def parse_bytes(text):
    """Parse a size in bytes (``size_iops_sec``; bare number = bytes)."""
    return _parse(text, _size_bits, 8, "bytes", "bytes must be a whole number")


def parse_bits_per_second(text):
    """Parse a rate in bit/s (VDSM hostQos ``m1``/``m2``; bare number = bit/s)."""
    return _parse(text, _rate_bits_per_second, 1, "bit/s", "bit/s must be a whole number")


def parse_count(text):
    """Parse a plain non-negative integer (iops, seconds, percent, shares)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip()
    if s.endswith("%"):
        s = s[:-1].strip()
    try:
        return parse_int(s, signed=True)
    except UnitError as e:
        raise UnitError("not a whole number: %r" % (clip(text),),
                        allowed="an integer" if e.allowed.startswith("ASCII")
                        else e.allowed)


# -- conversions (exact) ------------------------------------------------------

def libvirt_rate_to_bps(rate):
    """libvirt KB/s -> bit/s (OVS QoS/Queue ``max-rate``/``min-rate``)."""
    return rate * LIBVIRT_RATE_BITS


def libvirt_rate_to_ovs_kbps(rate):
    """libvirt KB/s -> OVS ``ingress_policing_rate`` (kbit/s, 1000 bit)."""
    return rate * 8


def libvirt_burst_to_bits(burst):
    """libvirt KiB -> bits (OVS Queue ``burst``)."""
    return burst * LIBVIRT_BURST_BITS


def libvirt_burst_to_ovs_kbit(burst):
    """libvirt KiB -> OVS ``ingress_policing_burst``.

    OVS reads that column as kbit and multiplies by 1024/8 to get bytes
    (lib/netdev-linux.c, tc_add_policer), so KiB * 8 is exact.
    """
    return burst * 8


def libvirt_burst_to_bytes(burst):
    return burst * 1024


def format_bps(bps):
    """Human rendering of bit/s, exact where possible: 100000000 -> '100Mbit/s'."""
    for name, factor in (("Gbit/s", 10 ** 9), ("Mbit/s", 10 ** 6), ("kbit/s", 10 ** 3)):
        if bps >= factor and bps % factor == 0:
            return "%d%s" % (bps // factor, name)
    for name, factor in (("Gbit/s", 10 ** 9), ("Mbit/s", 10 ** 6), ("kbit/s", 10 ** 3)):
        if bps >= factor:
            return "%.3f%s" % (bps / factor, name)
    return "%dbit/s" % bps


def format_libvirt_rate(rate):
    return "%s (%d KB/s)" % (format_bps(libvirt_rate_to_bps(rate)), rate)


def format_bytes(n):
    for name, factor in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= factor and n % factor == 0:
            return "%d%s" % (n // factor, name)
    return "%dB" % n


def format_libvirt_burst(burst):
    return "%s" % format_bytes(libvirt_burst_to_bytes(burst))
