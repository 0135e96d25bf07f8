"""Policy: named QoS profiles from an INI file, validated against libvirt's limits.

File format (INI, configparser's dialect with ``=`` only; ``#`` and ``;``
comments, also after whitespace at the end of a line; see read_ini)::

    [settings]
    default_profile = gold            ; used when nothing else names one
    ovsdb = unix:/run/openvswitch/db.sock
    ovsdb_timeout = 5                 ; seconds, whole operation

    [profile gold]
    on_existing = fill                ; fill: only fill gaps; override: replace
    inbound.average = 100Mbit         ; libvirt KB/s, or a human rate
    inbound.peak = 200Mbit
    inbound.burst = 1MiB              ; libvirt KiB, or a human size
    outbound.average = 50Mbit
    disk.total_bytes_sec = 200MB/s
    disk.total_iops_sec = 2000
    cpu.limit = 50                    ; percent of host CPU (oVirt vcpuLimit)
    quota:vif_outbound_peak = 12500   ; Nova flavor keys, verbatim

    [profile gold disk bus=sata]      ; replaces disk.* for SATA disks
    total_iops_sec = 500
    [profile gold disk target=vd[c-z]]  ; replaces disk.* for these targets
    read_iops_sec = 100

Validation limits, and where they come from (docs/policy.md has the full table):

* ``<bandwidth>``: libvirt's parser (src/conf/netdev_bandwidth_conf.c,
  virNetDevBandwidthParseRate): ``average`` or ``floor`` is required, ``peak``
  and ``burst`` need ``average``, ``floor`` only on ``<inbound>``.  Ranges from
  libvirt 9.0's domain RNG (networkcommon.rng ``speed`` and ``BurstSize`` are
  ``unsignedInt``, min 1): average/peak/floor 1..4294967295 KB/s (newer
  libvirt allows up to 2^54; we keep the bound every supported libvirt
  accepts).  burst 1..4194303 KiB: libvirt hands it to tc as ``NNNkb`` and tc
  (iproute2 get_size) keeps the byte count in 32 bits.  ``peak >= average``
  is ours: a peak below the average is contradictory (libvirt accepts it,
  tc then caps at the peak).
* ``<iotune>``: qemu's throttle_is_valid (util/throttle.c) and libvirt's
  QEMU_BLOCK_IOTUNE_MAX: values up to 1e15; total_X exclusive with
  read_X/write_X (also for ``_max``); X_max needs X and is not below it;
  X_max_length > 1 needs X_max and max * length <= 1e15; ``size_iops_sec``
  needs an iops limit.
* ``<cputune>``: libvirt src/util/vircgroup.h: period 1000..1000000 us, quota
  1000..17592186044415 us or -1; shares 2..10000: cgroup v1 ``cpu.shares``
  takes 2..262144 but cgroup v2 ``cpu.weight`` (EL9, Debian 12) only
  1..10000 (virCgroupV2SetCpuShares), so only 2..10000 works on both.
* ``vcpuLimit``: percent 1..100 (oVirt engine's CPU QoS).
"""

from __future__ import annotations

import os
import re
from qos_hooks.core.records import Record, default, replace

from qos_hooks.core.errors import ConfigError
from qos_hooks.core import units

# annotations are strings (PEP 563): typing is never imported at run time
# (it costs 3-6 ms of every hook start, bench/bench_hooks.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple  # noqa: F401


DEFAULT_CONFIG_PATH = "/etc/qos-hooks/qos-hooks.conf"
CONFIG_ENV = "QOS_HOOKS_CONFIG"
DEFAULT_OVSDB = "unix:/run/openvswitch/db.sock"
DEFAULT_OVSDB_TIMEOUT = 5.0

ON_EXISTING_FILL = "fill"
ON_EXISTING_OVERRIDE = "override"

# -- bounds -------------------------------------------------------------------

# libvirt 9.0 networkcommon.rng: speed is unsignedInt (newer libvirt: 2^54)
BW_RATE_MIN, BW_RATE_MAX = 1, 2 ** 32 - 1      # KB/s
# tc keeps the burst in bytes in 32 bits (iproute2 get_size); libvirt passes KiB
BW_BURST_MIN, BW_BURST_MAX = 1, (2 ** 32 - 1) // 1024   # KiB (4194303)
# A burst smaller than one full-size frame cannot pass that frame: an OVS
# policer (and tc's) drops it, htb holds it back.  Open vSwitch
# vswitchd/vswitch.xml, Interface column ingress_policing_burst: "The burst
# size should be at least the size of the interface's MTU.  Specifying a
# value that is numerically at least as large as 10% of
# ingress_policing_rate helps TCP come closer to achieving the full rate."
MTU_BYTES = 1500
BW_BURST_MTU_MIN = -(-MTU_BYTES // 1024)       # KiB: 2, the smallest sane burst
# What the backends can store, checked at config time (a profile may end up on
# an OVS port on any host).  Open vSwitch keeps linux-htb rates as bytes/s in
# 32 bits (lib/netdev-linux.c, htb_parse_qdisc_details__/htb_setup_class__:
# other_config max-rate/min-rate are bit/s divided by 8 into struct htb_class,
# handed to tc_fill_rate's 32-bit tc_ratespec): (2^32-1)*8 bit/s = 34.36 Gbit/s,
# that is 4294967 KB/s (measured with OVS 3.1: max-rate 35000000000 gives a
# 640261Kbit htb class, the value wrapped; tests/cli/test_ux.py).  Interface ingress_policing_rate/burst are kbit and must
# stay under 2^32: average*8 and burst*8, so 536870911 KB/s.
OVS_UINT32_MAX = 2 ** 32 - 1
OVS_HTB_RATE_MAX = OVS_UINT32_MAX * 8 // 8000          # KB/s (4294967)
OVS_POLICING_RATE_MAX = OVS_UINT32_MAX // 8            # KB/s (536870911)
OVS_POLICING_BURST_MAX = OVS_UINT32_MAX // 8           # KiB (above BW_BURST_MAX)
IOTUNE_MAX = 10 ** 15                          # qemu THROTTLE_VALUE_MAX
CPU_PERIOD_MIN, CPU_PERIOD_MAX = 1000, 1000000
CPU_QUOTA_MIN, CPU_QUOTA_MAX = 1000, 17592186044415
# cgroup v1 cpu.shares 2..262144, cgroup v2 cpu.weight 1..10000
# (libvirt vircgroup.h VIR_CGROUP_CPU_SHARES_*, VIR_CGROUPV2_WEIGHT_*)
CPU_SHARES_MIN, CPU_SHARES_MAX = 2, 10000
VCPU_LIMIT_MIN, VCPU_LIMIT_MAX = 1, 100
DEFAULT_CPU_PERIOD = 100000                    # MOM and libvirt default

# libvirt 9.0 domaincommon.rng, define "diskTarget": <target bus=...> values
# (src/conf/domain_conf.h virDomainDiskBus); 'uml' is obsolete but still valid
DISK_BUSES = ("ide", "fdc", "scsi", "virtio", "xen", "usb", "uml", "sata", "sd")
# libvirt 9.0 domaincommon.rng, define "diskTargetDev": (fd|hd|sd|vd|xvd|ubd)[a-zA-Z0-9_]+
DISK_TARGET_PREFIXES = ("fd", "hd", "sd", "vd", "xvd", "ubd")

DIRECTIONS = ("inbound", "outbound")
RATE_FIELDS = ("average", "peak", "burst", "floor")

# libvirt domain RNG order of <iotune> children
IOTUNE_KEYS = (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec",
    "total_bytes_sec_max", "read_bytes_sec_max", "write_bytes_sec_max",
    "total_iops_sec_max", "read_iops_sec_max", "write_iops_sec_max",
    "size_iops_sec", "group_name",
    "total_bytes_sec_max_length", "read_bytes_sec_max_length",
    "write_bytes_sec_max_length", "total_iops_sec_max_length",
    "read_iops_sec_max_length", "write_iops_sec_max_length",
)
IOTUNE_NUMERIC = tuple(k for k in IOTUNE_KEYS if k != "group_name")
_IOTUNE_FAMILIES = ("bytes_sec", "iops_sec", "bytes_sec_max", "iops_sec_max",
                    "bytes_sec_max_length", "iops_sec_max_length")

# Nova flavor extra specs accepted verbatim (nova/virt/libvirt/designer.py,
# nova/virt/libvirt/driver.py _set_quota / _get_guest_config quota handling)
NOVA_VIF_KEYS = {"quota:vif_%s_%s" % (d, f): (d, f)
                 for d in DIRECTIONS for f in ("average", "peak", "burst")}
NOVA_DISK_KEYS = {"quota:disk_" + k: k for k in IOTUNE_NUMERIC}
NOVA_CPU_KEYS = {"quota:cpu_quota": "quota", "quota:cpu_period": "period",
                 "quota:cpu_shares": "shares"}


# -- model --------------------------------------------------------------------

class Rate(Record):
    """One direction of a libvirt ``<bandwidth>``, in libvirt units."""

    average: Optional[int] = None
    peak: Optional[int] = None
    burst: Optional[int] = None
    floor: Optional[int] = None

    def is_empty(self):
        return all(getattr(self, f) is None for f in RATE_FIELDS)

    def items(self):
        return [(f, getattr(self, f)) for f in RATE_FIELDS if getattr(self, f) is not None]


class Bandwidth(Record):
    """A libvirt ``<bandwidth>``: the guest's inbound and outbound rates."""

    inbound: Optional[Rate] = None
    outbound: Optional[Rate] = None

    def is_empty(self):
        return ((self.inbound is None or self.inbound.is_empty())
                and (self.outbound is None or self.outbound.is_empty()))

    def direction(self, name):
        return getattr(self, name)


class IoTune(Record):
    """Ordered ``<iotune>`` children: ((name, value), ...) in libvirt RNG order."""

    values: Tuple[Tuple[str, object], ...] = ()

    def as_dict(self):
        return dict(self.values)

    def is_empty(self):
        return not self.values

    @classmethod
    def from_dict(cls, d):
        return cls(tuple((k, d[k]) for k in IOTUNE_KEYS if k in d))


class DiskRule(Record):
    """Disk settings for disks matching ``bus`` or ``target`` (an fnmatch glob)."""

    iotune: IoTune
    bus: Optional[str] = None
    target: Optional[str] = None

    def matches(self, bus, target):
        if self.target is not None:
            from fnmatch import fnmatchcase  # only profiles with target rules need it
            return target is not None and fnmatchcase(target, self.target)
        return bus is not None and bus == self.bus

    def describe(self):
        return "target=%s" % self.target if self.target is not None else "bus=%s" % self.bus


class CpuTune(Record):
    """A profile's CPU settings (cap as ``limit`` or ``period``/``quota``; ``shares``)."""

    limit: Optional[int] = None     # percent of host CPU (oVirt vcpuLimit)
    period: Optional[int] = None    # microseconds
    quota: Optional[int] = None     # microseconds, -1 = unlimited
    shares: Optional[int] = None

    def is_empty(self):
        return all(v is None for v in (self.limit, self.period, self.quota, self.shares))


class Profile(Record):
    """One ``[profile NAME]`` with its disk rules, validated."""

    name: str
    on_existing: str = ON_EXISTING_FILL
    bandwidth: Bandwidth = default(Bandwidth)
    iotune: IoTune = default(IoTune)
    disk_rules: Tuple[DiskRule, ...] = ()
    cpu: CpuTune = default(CpuTune)
    # host network QoS keys (``host.*``) as written: (key, value, line).  The
    # policy parser does not know host networks: the network hooks and
    # ``qos-hooks check`` parse and validate them (qos_hooks.hostnet.hostqos
    # .profile_host_qos), so a VM hook never pays for them.
    host: Tuple[Tuple[str, str, Optional[int]], ...] = ()

    def iotune_for(self, bus, target):
        """The iotune for one disk: first matching target rule, then bus rule,
        then the profile-wide ``disk.*`` keys.  A matching rule replaces the
        profile-wide keys entirely (no merging, so exclusivity stays checkable).
        """
        for rule in self.disk_rules:
            if rule.target is not None and rule.matches(bus, target):
                return rule.iotune, rule.describe()
        for rule in self.disk_rules:
            if rule.bus is not None and rule.matches(bus, target):
                return rule.iotune, rule.describe()
        return self.iotune, "profile"


class Settings(Record):
    """The ``[settings]`` section."""

    default_profile: Optional[str] = None
    ovsdb: str = DEFAULT_OVSDB
    ovsdb_timeout: float = DEFAULT_OVSDB_TIMEOUT
    # per hook point: "fail" (non-zero exit) or "continue" (log and exit 0)
    on_error: Tuple[Tuple[str, str], ...] = ()
    # When a domain goes away, also destroy the QoS/Queue rows libvirt < 10.3
    # leaves behind for it (tagged external_ids:vm-id = the domain's UUID, no
    # Port using them): docs/ovs-mapping.md, "libvirt < 10.3 leftovers".
    clean_libvirt_leftovers: bool = True
    extra: Tuple[Tuple[str, str], ...] = ()

    def on_error_for(self, hook_point, default):
        for k, v in self.on_error:
            if k == hook_point:
                return v
        for k, v in self.on_error:
            if k == "default":
                return v
        return default


class Config(Record):
    """A whole policy file: settings and profiles by name."""

    path: Optional[str]
    settings: Settings = default(Settings)
    profiles: Dict[str, Profile] = default(dict)

    def profile(self, name, source="--profile"):
        try:
            return self.profiles[name]
        except KeyError:
            raise ConfigError(
                "unknown profile %r named by %s" % (name, source), path=self.path,
                allowed=", ".join(sorted(self.profiles)) or "no profiles defined")


# -- validation (shared by config values and values read from XML) -----------

class Problem(Exception):
    """A single validation failure, before it is given a location."""

    def __init__(self, key, value, message, allowed=None):
        self.key, self.value, self.message, self.allowed = key, value, message, allowed
        super().__init__(message)


def _check_range(key, value, lo, hi):
    if not (lo <= value <= hi):
        raise Problem(key, value, "out of range", "%d..%d" % (lo, hi))


def validate_rate(direction, rate, prefix=""):
    """Check one ``<inbound>``/``<outbound>`` against libvirt's rules.

    Keys in problems are ``<prefix><direction>.<field>``, or the bare field
    name when ``prefix`` is None.
    """
    k = (prefix + direction + ".") if prefix is not None else ""
    for f in ("average", "peak", "floor"):
        v = getattr(rate, f)
        if v is not None:
            _check_range(k + f, v, BW_RATE_MIN, BW_RATE_MAX)
    if rate.burst is not None:
        _check_range(k + "burst", rate.burst, BW_BURST_MIN, BW_BURST_MAX)
        why = burst_problem(direction, rate)
        if why is not None:
            raise Problem(k + "burst", rate.burst, why, _burst_allowed(rate))
    if rate.floor is not None and direction != "inbound":
        raise Problem(k + "floor", rate.floor,
                      "floor exists only for inbound traffic (libvirt)", "inbound.floor")
    if rate.average is None:
        for f in ("peak", "burst"):
            if getattr(rate, f) is not None:
                raise Problem(k + f, getattr(rate, f),
                              "%s needs %saverage (libvirt: 'peak' and 'burst' require "
                              "'average')" % (f, k), "set %saverage too" % k)
        if rate.floor is None and not rate.is_empty():
            raise Problem(k + "average", None, "average (or inbound floor) is required",
                          "%d..%d" % (BW_RATE_MIN, BW_RATE_MAX))
    if rate.peak is not None and rate.average is not None and rate.peak < rate.average:
        raise Problem(k + "peak", rate.peak,
                      "peak (%d KB/s) is below average (%d KB/s)" % (rate.peak, rate.average),
                      "%d..%d, at least the average" % (rate.average, BW_RATE_MAX))


def burst_problem(direction, rate):
    """Why ``rate.burst`` cannot work (smaller than one MTU), or None."""
    if rate.burst is None or rate.burst >= BW_BURST_MTU_MIN:
        return None
    what = ("the outbound policer drops every frame larger than it" if direction == "outbound"
            else "the inbound shaper cannot pass a full-size frame at once")
    return ("%s burst of %d KiB is below one MTU (%d bytes): %s"
            % (direction, rate.burst, MTU_BYTES, what))


def _burst_allowed(rate):
    ideal = (rate.average or 0) // 10
    return "%d..%d KiB, at least %d KiB (one %d-byte MTU)%s" % (
        BW_BURST_MTU_MIN, BW_BURST_MAX, BW_BURST_MTU_MIN, MTU_BYTES,
        "; for TCP ideally %d KiB or more (10%% of the rate, Open vSwitch vswitch.xml)"
        % ideal if ideal > BW_BURST_MTU_MIN else "")


def burst_warnings(bandwidth, label):
    """Plan and dry-run warnings for bursts that cannot work, in a
    ``<bandwidth>`` that was not validated here (written by someone else)."""
    out = []
    for d in DIRECTIONS:
        rate = bandwidth.direction(d) if bandwidth is not None else None
        why = burst_problem(d, rate) if rate is not None else None
        if why is not None:
            out.append("%s: %s (set %s.burst to %s)" % (label, why, d, _burst_allowed(rate)))
    return out


def validate_backend_limits(direction, rate, prefix=""):
    """Bounds of what Open vSwitch can store (see OVS_HTB_RATE_MAX): the
    inbound average/peak become linux-htb min-rate/max-rate, the outbound
    average and burst become the Interface policing columns."""
    k = prefix + direction + "."
    if direction == "inbound":
        for f in ("average", "peak"):
            v = getattr(rate, f)
            if v is not None and v > OVS_HTB_RATE_MAX:
                raise Problem(k + f, v, "%s is above what Open vSwitch linux-htb can store "
                              "(rates are bytes/s in 32 bits: at most %s)"
                              % (units.format_libvirt_rate(v),
                                 units.format_libvirt_rate(OVS_HTB_RATE_MAX)),
                              "%d..%d KB/s (up to 34.359Gbit/s)" % (BW_RATE_MIN, OVS_HTB_RATE_MAX))
    else:
        if rate.average is not None and rate.average > OVS_POLICING_RATE_MAX:
            raise Problem(k + "average", rate.average,
                          "%s is above what Open vSwitch ingress_policing_rate can store "
                          "(kbit/s in 32 bits)" % units.format_libvirt_rate(rate.average),
                          "%d..%d KB/s" % (BW_RATE_MIN, OVS_POLICING_RATE_MAX))


def _iotune_family(key):
    """'read_iops_sec_max' -> ('read', 'iops_sec', '_max')."""
    kind, rest = key.split("_", 1)
    base = "bytes_sec" if rest.startswith("bytes_sec") else "iops_sec"
    return kind, base, rest[len(base):]


def validate_iotune(iotune, prefix=""):
    """qemu's throttle_is_valid (util/throttle.c) and libvirt's bounds.

    Keys in problems are ``<prefix><iotune element>``.
    """
    d = iotune.as_dict()
    for key, v in d.items():
        if key == "group_name":
            if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9_.:-]+$", v):
                raise Problem(prefix + key, v, "invalid group name",
                              "letters, digits, '_', '.', ':', '-'")
            continue
        _check_range(prefix + key, v, 1, IOTUNE_MAX)
    # total_X and read_X/write_X exclude each other, for the rates and their
    # _max (libvirt virDomainDiskDefValidate; qemu "bps/iops/max total values
    # and read/write values cannot be used at the same time")
    for fam in _IOTUNE_FAMILIES:
        if "total_" + fam in d:
            for rw in ("read_", "write_"):
                if rw + fam in d:
                    raise Problem(prefix + rw + fam, d[rw + fam],
                                  "total_%s and %s%s are mutually exclusive" % (fam, rw, fam),
                                  "either total_%s or read_%s/write_%s" % (fam, fam, fam))
    for kind in ("total_", "read_", "write_"):
        for base in ("bytes_sec", "iops_sec"):
            b, m, ln = kind + base, kind + base + "_max", kind + base + "_max_length"
            if m in d:
                if b not in d:
                    raise Problem(prefix + m, d[m], "%s needs %s (qemu: bps_max/iops_max "
                                  "require corresponding bps/iops values)" % (m, b),
                                  "set %s too" % b)
                if d[m] < d[b]:
                    raise Problem(prefix + m, d[m], "%s is below %s (%d)" % (m, b, d[b]),
                                  "%d..%d" % (d[b], IOTUNE_MAX))
            if ln in d:
                if m not in d:
                    if d[ln] > 1:
                        raise Problem(prefix + ln, d[ln], "%s needs %s (qemu: burst length "
                                      "set without burst rate)" % (ln, m), "set %s too" % m)
                    continue
                top = IOTUNE_MAX // d[m]
                if d[ln] > top:
                    raise Problem(prefix + ln, d[ln],
                                  "burst length too long for %s=%d (qemu: max * length "
                                  "<= 1e15)" % (m, d[m]), "1..%d" % top)
    if "size_iops_sec" in d and not any(k in d for k in ("total_iops_sec", "read_iops_sec",
                                                           "write_iops_sec")):
        raise Problem(prefix + "size_iops_sec", d["size_iops_sec"],
                      "size_iops_sec needs an iops limit (qemu: iops size requires an "
                      "iops value to be set)", "set total_iops_sec or read_/write_iops_sec")


def validate_cpu(cpu, prefix="cpu."):
    if cpu.limit is not None:
        _check_range(prefix + "limit", cpu.limit, VCPU_LIMIT_MIN, VCPU_LIMIT_MAX)
        if cpu.quota is not None:
            raise Problem(prefix + "quota", cpu.quota,
                          "cpu.limit and cpu.quota both set a cap: contradictory",
                          "either cpu.limit or cpu.quota/cpu.period")
    if cpu.period is not None:
        _check_range(prefix + "period", cpu.period, CPU_PERIOD_MIN, CPU_PERIOD_MAX)
    if cpu.quota is not None and cpu.quota != -1:
        if not (CPU_QUOTA_MIN <= cpu.quota <= CPU_QUOTA_MAX):
            raise Problem(prefix + "quota", cpu.quota, "out of range",
                          "-1 or %d..%d" % (CPU_QUOTA_MIN, CPU_QUOTA_MAX))
    if cpu.shares is not None:
        _check_range(prefix + "shares", cpu.shares, CPU_SHARES_MIN, CPU_SHARES_MAX)


def cpu_period_quota_for_limit(limit, host_cpus, vcpus, period=DEFAULT_CPU_PERIOD):
    """MOM's formula (vdsm static/etc/vdsm/mom.d/04-cputune.policy): the period
    and per-vCPU quota that cap the whole VM at ``limit`` percent of the host.

    quota = limit/100 * period * host CPUs / vCPUs.  When that falls below
    the kernel's 1000 us minimum, MOM stretches both by the same factor
    (``timeMultiplier``); so do we, within libvirt's period bound.
    """
    vcpus = max(1, vcpus)
    quota = limit * period * host_cpus // (100 * vcpus)
    if quota < CPU_QUOTA_MIN:
        mult = -(-CPU_QUOTA_MIN // max(quota, 1))   # ceil
        mult = max(1, min(mult, CPU_PERIOD_MAX // period))
        period *= mult
        quota = limit * period * host_cpus // (100 * vcpus)
    return period, max(CPU_QUOTA_MIN, min(quota, CPU_QUOTA_MAX))


def cpu_quota_for_limit(limit, period, host_cpus, vcpus):
    """The per-vCPU quota for ``limit`` percent at a fixed ``period``."""
    quota = limit * period * host_cpus // (100 * max(1, vcpus))
    return max(CPU_QUOTA_MIN, min(quota, CPU_QUOTA_MAX))


# -- parsing ------------------------------------------------------------------

_SECTION_RE = re.compile(r"^\[(?P<name>.*)\]$")
_INLINE_COMMENT_RE = re.compile(r"\s[#;].*$")
_PROFILE_RE = re.compile(r"^profile\s+(?P<name>[A-Za-z0-9_.-]+)"
                         r"(?:\s+disk\s+(?P<sel>bus|target)\s*=\s*(?P<val>\S+))?\s*$")


def read_ini(text, path="<string>"):
    """Parse the INI dialect of the policy file.

    Returns ``(sections, lines)``: ``sections`` is a list of
    ``(name, [(key, value), ...])`` in file order, keys stripped and
    lower-cased, values stripped; ``lines`` maps ``(section, key)`` (and
    ``(section, None)`` for the header) to its line number.

    The dialect is configparser's with ``=`` as the only delimiter: ``#`` and
    ``;`` start a comment at the beginning of a line, or after whitespace
    inside a value.  Unlike configparser it keeps line numbers, refuses
    indented continuation lines (no value spans lines), and costs no import
    (the before_vm_start hook reads this file in every VM start).
    """
    sections = []
    lines = {}
    current = None
    # lines end at \n only (a \r before it is stripped with the other
    # whitespace): str.splitlines() would also end a line at U+2028, NEL,
    # \v, \f and \x1c-\x1e, so "# off:<U+2028>default_profile = gold" would
    # turn a comment into a setting and shift every later line number
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            m = _SECTION_RE.match(_INLINE_COMMENT_RE.sub("", line).strip())
            if not m or not m.group("name").strip():
                raise ConfigError("cannot parse section header %r" % line, path=path, line=n,
                                  allowed="[settings] or [profile NAME]")
            name = " ".join(m.group("name").split())
            if (name, None) in lines:
                raise ConfigError("section [%s] appears twice (first on line %d)"
                                  % (name, lines[(name, None)]), path=path, line=n,
                                  allowed="each section once")
            lines[(name, None)] = n
            current = (name, [])
            sections.append(current)
            continue
        if raw[:1].isspace():
            raise ConfigError("indented line %r: a value must fit on its key's line" % line,
                              path=path, line=n, allowed="key = value, starting in column 1")
        if "=" not in line:
            raise ConfigError("cannot parse line %r" % line, path=path, line=n,
                              allowed="key = value")
        if current is None:
            raise ConfigError("key before the first [section]", path=path, line=n,
                              allowed="[settings] or [profile NAME] first")
        key, value = line.split("=", 1)
        key = key.strip().lower()
        value = _INLINE_COMMENT_RE.sub("", value).strip()
        if not key:
            raise ConfigError("no key before '='", path=path, line=n, allowed="key = value")
        if (current[0], key) in lines:
            raise ConfigError("key appears twice in one section (first on line %d)"
                              % lines[(current[0], key)], path=path, line=n, key=key,
                              allowed="each key once per section")
        lines[(current[0], key)] = n
        current[1].append((key, value))
    return sections, lines


class _Located:
    def __init__(self, path, lines):
        self.path, self.lines = path, lines

    def line(self, section, key):
        return self.lines.get((section, key), self.lines.get((section, None)))

    def error(self, section, key, value, message, allowed=None, profile=None):
        if isinstance(value, str):
            value = units.clip(value)     # a 5000-digit value is not echoed back
        return ConfigError(message, path=self.path,
                           line=self.line(section, key),
                           profile=profile, key=key, value=value, allowed=allowed)


_RATE_PARSERS = {"average": units.parse_libvirt_rate, "peak": units.parse_libvirt_rate,
                 "floor": units.parse_libvirt_rate, "burst": units.parse_libvirt_burst}


def _iotune_parser(key):
    if key == "group_name":
        return lambda s: s.strip()
    if key == "size_iops_sec":
        return units.parse_bytes
    if key.endswith("_max_length") or "iops_sec" in key:
        return units.parse_count
    return units.parse_bytes_per_second


_CPU_PARSERS = {"limit": units.parse_count, "period": units.parse_count,
                "quota": units.parse_count, "shares": units.parse_count}

PROFILE_KEYS_HELP = ("on_existing, inbound.{average,peak,burst,floor}, "
                     "outbound.{average,peak,burst}, disk.<iotune element>, "
                     "cpu.{limit,period,quota,shares}, quota:vif_*, quota:disk_*, "
                     "quota:cpu_*, host.*")


def _parse_value(loc, section, profile, key, raw, parser):
    try:
        return parser(raw)
    except units.UnitError as e:
        raise loc.error(section, key, raw, str(e), e.allowed, profile)


def _parse_profile(loc, section, name, items):
    rates = {d: {} for d in DIRECTIONS}
    iotune = {}
    cpu = {}
    host = []
    on_existing = ON_EXISTING_FILL
    origin = {}  # normalised setting -> key that set it (to catch duplicates)
    raw_of = dict(items)  # key -> value as written (errors quote it)

    def claim(setting, key, value):
        if setting in origin:
            raise loc.error(section, key, value,
                            "sets the same thing as %r" % origin[setting],
                            "only one of %r and %r" % (origin[setting], key), name)
        origin[setting] = key

    for key, raw in items:
        if key == "on_existing":
            v = raw.strip().lower()
            if v not in (ON_EXISTING_FILL, ON_EXISTING_OVERRIDE):
                raise loc.error(section, key, raw, "unknown mode", "fill, override", name)
            on_existing = v
        elif key in NOVA_VIF_KEYS or re.match(r"^(inbound|outbound)\.[a-z]+$", key):
            d, f = NOVA_VIF_KEYS.get(key) or key.split(".", 1)
            if f not in RATE_FIELDS:
                raise loc.error(section, key, raw, "unknown bandwidth field",
                                "average, peak, burst, floor", name)
            claim(("bw", d, f), key, raw)
            rates[d][f] = (_parse_value(loc, section, name, key, raw, _RATE_PARSERS[f]), key)
        elif key in NOVA_DISK_KEYS or key.startswith("disk."):
            ik = NOVA_DISK_KEYS.get(key) or key[len("disk."):]
            if ik not in IOTUNE_KEYS:
                raise loc.error(section, key, raw, "unknown <iotune> element",
                                ", ".join(IOTUNE_KEYS), name)
            claim(("disk", ik), key, raw)
            iotune[ik] = (_parse_value(loc, section, name, key, raw, _iotune_parser(ik)), key)
        elif key in NOVA_CPU_KEYS or key.startswith("cpu."):
            ck = NOVA_CPU_KEYS.get(key) or key[len("cpu."):]
            if ck not in _CPU_PARSERS:
                raise loc.error(section, key, raw, "unknown cpu setting",
                                "limit, period, quota, shares", name)
            claim(("cpu", ck), key, raw)
            cpu[ck] = (_parse_value(loc, section, name, key, raw, _CPU_PARSERS[ck]), key)
        elif key.startswith("host."):
            host.append((key, raw, loc.line(section, key)))
        else:
            raise loc.error(section, key, raw, "unknown key", PROFILE_KEYS_HELP, name)

    def located(problem, keymap):
        # map a validation problem back to the config key (and the value as
        # written) that produced it
        src = keymap.get(problem.key, problem.key)
        return loc.error(section, src, raw_of.get(src, problem.value), problem.message,
                         problem.allowed, name)

    bw = {}
    for d in DIRECTIONS:
        if rates[d]:
            rate = Rate(**{f: v for f, (v, _) in rates[d].items()})
            keymap = {"%s.%s" % (d, f): k for f, (_, k) in rates[d].items()}
            try:
                validate_rate(d, rate)
                validate_backend_limits(d, rate)
            except Problem as p:
                raise located(p, keymap)
            bw[d] = rate
    io = IoTune.from_dict({k: v for k, (v, _) in iotune.items()})
    try:
        validate_iotune(io, prefix="disk.")
    except Problem as p:
        raise located(p, {"disk." + k: src for k, (_, src) in iotune.items()})
    cput = CpuTune(**{k: v for k, (v, _) in cpu.items()})
    try:
        validate_cpu(cput)
    except Problem as p:
        raise located(p, {"cpu." + k: src for k, (_, src) in cpu.items()})
    return Profile(name=name, on_existing=on_existing, bandwidth=Bandwidth(**bw),
                   iotune=io, cpu=cput, host=tuple(host))


def check_disk_selector(sel, val):
    """Problem for a ``[profile NAME disk bus=BUS|target=GLOB]`` selector that can
    match no libvirt disk (a typo would otherwise pass silently)."""
    if sel == "bus":
        if val in DISK_BUSES:
            return None
        hint = ""
        if val.lower() in DISK_BUSES:
            hint = ": libvirt bus names are lower case, write bus=%s" % val.lower()
        else:
            import difflib
            close = difflib.get_close_matches(val.lower(), DISK_BUSES, 1, 0.6)
            if close:
                hint = ": did you mean bus=%s?" % close[0]
            elif val.rstrip("0123456789") != val or val.startswith(("nvme", "vd", "sd", "hd")):
                hint = (": bus= is the <target bus=...> attribute, not a device name "
                        "(for device names use target=GLOB)")
        return Problem("bus", val, "%r is not a libvirt disk bus%s" % (val, hint),
                       ", ".join(DISK_BUSES))
    if "/" in val:
        return Problem("target", val, "target= is the disk's <target dev=...> name as libvirt "
                       "writes it, not a /dev path: write target=%s" % val.rsplit("/", 1)[-1],
                       "a glob over target names such as vdb, sd[b-z], vd*")
    lit = re.match(r"[^*?\[]*", val).group(0)
    if not any(lit.startswith(p) or p.startswith(lit) for p in DISK_TARGET_PREFIXES):
        return Problem("target", val, "%r can match no libvirt disk target name (libvirt "
                       "target names start with %s)" % (val, ", ".join(DISK_TARGET_PREFIXES)),
                       "a glob over target names such as vdb, sd[b-z], vd*")
    return None


def _parse_disk_rule(loc, section, name, items, sel, val):
    bad = check_disk_selector(sel, val)
    if bad is not None:
        raise loc.error(section, None, None, "[%s]: %s" % (section, bad.message), bad.allowed,
                        name)
    iotune = {}
    for key, raw in items:
        k = key[len("disk."):] if key.startswith("disk.") else key
        k = NOVA_DISK_KEYS.get(k, k)
        if k not in IOTUNE_KEYS:
            raise loc.error(section, key, raw, "unknown <iotune> element",
                            ", ".join(IOTUNE_KEYS), name)
        if k in iotune:
            raise loc.error(section, key, raw, "sets the same thing as %r" % iotune[k][1],
                            "only one of %r and %r" % (iotune[k][1], key), name)
        iotune[k] = (_parse_value(loc, section, name, key, raw, _iotune_parser(k)), key)
    io = IoTune.from_dict({k: v for k, (v, _) in iotune.items()})
    try:
        validate_iotune(io)
    except Problem as p:
        src = iotune.get(p.key, (None, p.key))[1]
        raise loc.error(section, src, dict(items).get(src, p.value), p.message, p.allowed,
                        name)
    return DiskRule(iotune=io, bus=val if sel == "bus" else None,
                    target=val if sel == "target" else None)


_SETTINGS_KEYS = ("default_profile", "ovsdb", "ovsdb_timeout", "clean_libvirt_leftovers",
                  "log_level", "host_cpus")


def parse_config(text, path="<string>"):
    """Parse and validate a whole config file; raise ConfigError on any problem.

    Every section is checked even after one fails, so that ``qos-hooks
    check`` can list every section's first problem at once: the raised
    error is the first one, and its ``more`` holds the others (checks that
    would only repeat a failed section's problem, like a default_profile
    naming it, are left out)."""
    sections, lines = read_ini(text, path)
    loc = _Located(path, lines)
    profiles = {}
    profile_sections = {}
    rules = []
    settings = Settings()
    problems, failed = [], set()
    for section, items in sections:
        try:
            settings = _parse_section(loc, section, items, settings, profiles,
                                      profile_sections, rules)
        except ConfigError as e:
            problems.append(e)
            m = _PROFILE_RE.match(section)
            failed.add(m.group("name") if m else section.split()[-1])
    for name, section, rule in rules:
        if name in failed:
            continue
        if name not in profiles:
            problems.append(loc.error(
                section, None, None, "disk rule for profile %r, which has no [profile %s] "
                "section" % (name, name), ", ".join(sorted(profiles)) or "none", name))
            continue
        p = profiles[name]
        profiles[name] = replace(p, disk_rules=p.disk_rules + (rule,))
    for name, p in profiles.items():
        try:
            _check_groups(loc, p, [(p.iotune, profile_sections[name])] + [
                (rule.iotune, section) for n, section, rule in rules if n == name])
        except ConfigError as e:
            problems.append(e)
    if settings.default_profile and settings.default_profile not in profiles \
            and settings.default_profile not in failed:
        problems.append(loc.error("settings", "default_profile", settings.default_profile,
                                  "names a profile that does not exist",
                                  ", ".join(sorted(profiles)) or "none"))
    if problems:
        first = problems[0]
        first.more = tuple(problems[1:])
        raise first
    return Config(path=path, settings=settings, profiles=profiles)


def _parse_section(loc, section, items, settings, profiles, profile_sections, rules):
    """One section of parse_config: fills ``profiles``/``rules``; returns the
    settings (new ones for [settings])."""
    if section == "settings":
        return _parse_settings(loc, section, items)
    m = _PROFILE_RE.match(section)
    if not m and section.split()[0] == "profile" and len(section.split()) > 2 \
            and section.split()[2] != "disk":
        words = section.split()
        raise loc.error(section, None, None,
                        "[%s]: a profile name cannot contain spaces (this reads as profile "
                        "%r followed by %r); write [profile %s]"
                        % (section, words[1], " ".join(words[2:]), "_".join(words[1:])),
                        "[profile NAME] with NAME of letters, digits, '_', '.', '-'; "
                        "[profile NAME disk bus=BUS]; [profile NAME disk target=GLOB]")
    if not m:
        raise loc.error(section, None, None, "unknown section [%s]" % section,
                        "[settings], [profile NAME], [profile NAME disk bus=BUS], "
                        "[profile NAME disk target=GLOB]")
    name = m.group("name")
    if m.group("sel"):
        rules.append((name, section, _parse_disk_rule(loc, section, name, items,
                                                      m.group("sel"), m.group("val"))))
        return settings
    if name in profiles:
        raise loc.error(section, None, None, "profile %r is defined twice" % name,
                        "one [profile %s] section" % name, name)
    profiles[name] = _parse_profile(loc, section, name, items)
    profile_sections[name] = section
    return settings


def _check_groups(loc, profile, sections):
    """qemu keeps ONE set of limits per throttle group (block/throttle-groups.c:
    the last drive configured wins for all members), so disks that share a
    ``group_name`` must carry the same ``<iotune>``; within a profile a group
    name must stand for one set of values.

    ``sections``: [(IoTune, section name)] for the profile and its disk rules.
    """
    seen = {}
    for io, section in sections:
        g = io.as_dict().get("group_name")
        if g is None:
            continue
        if g in seen and seen[g][0] != io:
            key = "disk.group_name" if (section, "disk.group_name") in loc.lines else "group_name"
            raise loc.error(section, key, g,
                            "group %r has different settings in [%s] and [%s]: qemu "
                            "keeps one set of limits per throttle group"
                            % (g, seen[g][1], section),
                            "one set of <iotune> values per group_name", profile.name)
        seen.setdefault(g, (io, section))


def _parse_settings(loc, section, items):
    kw = {}
    on_error = []
    extra = []
    for key, raw in items:
        v = raw.strip()
        if key == "default_profile":
            kw["default_profile"] = v or None
        elif key == "ovsdb":
            if not re.match(r"^(unix|tcp|ssl):", v):
                raise loc.error(section, key, raw, "not an OVSDB remote",
                                "unix:PATH, tcp:IP:PORT, ssl:IP:PORT")
            kw["ovsdb"] = v
        elif key == "ovsdb_timeout":
            try:
                num, den = units.parse_decimal(v)
                t = num / den
            except units.UnitError:
                t = -1.0
            if not (0.1 <= t <= 60):
                raise loc.error(section, key, raw, "out of range", "0.1..60 seconds")
            kw["ovsdb_timeout"] = t
        elif key.startswith("on_error"):
            # on_error = fail|continue ; on_error.before_vm_start = fail
            hook = key.split(".", 1)[1] if "." in key else "default"
            if v not in ("fail", "continue"):
                raise loc.error(section, key, raw, "unknown failure mode", "fail, continue")
            on_error.append((hook, v))
        elif key == "clean_libvirt_leftovers":
            b = {"yes": True, "true": True, "on": True, "1": True,
                 "no": False, "false": False, "off": False, "0": False}.get(v.lower())
            if b is None:
                raise loc.error(section, key, raw, "not a boolean", "yes, no, true, false")
            kw["clean_libvirt_leftovers"] = b
        elif key == "log_level":
            if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                raise loc.error(section, key, raw, "unknown log level",
                                "DEBUG, INFO, WARNING, ERROR")
            extra.append((key, v))
        elif key == "host_cpus":
            try:
                n = units.parse_int(v)
            except units.UnitError:
                n = 0
            if not 1 <= n <= 65536:
                raise loc.error(section, key, raw, "not a CPU count", "1..65536")
            extra.append((key, v))
        else:
            raise loc.error(section, key, raw, "unknown setting",
                            ", ".join(_SETTINGS_KEYS) + ", on_error, on_error.<hook_point>")
    return Settings(on_error=tuple(on_error), extra=tuple(extra), **kw)


def config_path(cli_path=None, environ=None):
    environ = os.environ if environ is None else environ
    return cli_path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


# a policy file is a few KiB; reading stops one byte past this
MAX_CONFIG_BYTES = 1024 * 1024

_TRUST_HELP = ("owned by root and writable by nobody else, the file and the directory "
               "holding it (chown root:root FILE DIR; chmod go-w FILE DIR)")


def _writable_by_others(st):
    """Why a file or directory with stat ``st`` is writable by someone other
    than root, or None.  The rules of sudo (sudoers) and sshd (StrictModes):
    the owner must be root, nobody else may write; a group may only when it is
    root's group."""
    import stat as _stat
    if st.st_uid != 0:
        return "owned by uid %d, not root" % st.st_uid
    if st.st_mode & _stat.S_IWOTH:
        return "writable by everyone (mode %04o)" % _stat.S_IMODE(st.st_mode)
    if st.st_mode & _stat.S_IWGRP and st.st_gid != 0:
        return "writable by group %d (mode %04o)" % (st.st_gid, _stat.S_IMODE(st.st_mode))
    return None


def check_trusted(path, st):
    """Refuse a config that someone other than root could have written.

    The root side (the root helper, the network hooks, the libvirt qemu hook)
    takes the OVSDB remote and the failure policy from this file: a config a
    vdsm-user process can write would point a root process at a socket of
    that user's choosing.  ``st`` is the fstat of the open file.
    """
    why = _writable_by_others(st)
    if why is None:
        for d in {os.path.dirname(os.path.abspath(path)),
                  os.path.dirname(os.path.realpath(path))}:
            why = _writable_by_others(os.stat(d))
            if why is not None:
                why = "its directory %s is %s" % (d, why)
                break
    if why is not None:
        raise ConfigError("refusing a config file that is not root's alone: %s "
                          "(a process running as root takes its settings from it)" % why,
                          path=path, allowed=_TRUST_HELP)


def read_config_bytes(path, trusted=False):
    """The bytes of the config file, read without ever blocking: a FIFO, a
    device or a directory at the config path is refused (fileio.read_regular:
    opened O_NONBLOCK, checked with fstat before a single read), and reading
    stops at MAX_CONFIG_BYTES.  ``trusted``: also refuse a file or directory
    that is writable by anyone but root (check_trusted).  Raises
    FileNotFoundError when there is no file, ConfigError for everything else."""
    from qos_hooks.core.fileio import NotRegularFile, read_regular
    try:
        data = read_regular(path, MAX_CONFIG_BYTES,
                            check=(lambda st: check_trusted(path, st)) if trusted else None)
    except FileNotFoundError:
        raise
    except NotRegularFile:
        raise ConfigError("not a regular file (a FIFO, socket, device or directory)",
                          path=path, allowed="a regular file")
    except OSError as e:
        raise ConfigError("cannot read config file: %s" % e.strerror, path=path)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("config file is larger than %d bytes" % MAX_CONFIG_BYTES, path=path)
    return data


def load_config(cli_path=None, environ=None, missing_ok=False, trusted=False):
    """Load the config named by --config, $QOS_HOOKS_CONFIG or the default path.

    ``trusted=True`` (the root side) refuses a file or directory that anyone
    but root can write (check_trusted).
    """
    path = config_path(cli_path, environ)
    try:
        data = read_config_bytes(path, trusted=trusted)
    except FileNotFoundError:
        if missing_ok and not cli_path:
            return Config(path=None)
        from qos_hooks.core import examples
        raise ConfigError("config file not found", path=path,
                          allowed="a readable file; %s" % examples.hint())
    except OSError as e:
        raise ConfigError("cannot read config file: %s" % e.strerror, path=path)
    try:
        if data.startswith(b"\xef\xbb\xbf"):   # an editor's BOM is not a syntax error
            data = data[3:]
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", path=path, line=line)
    return parse_config(text, path)


# -- profile selection ---------------------------------------------------------

PROFILE_PROPERTY = "qos_profile"


class Selection(Record):
    """Where profile names come from, in order of precedence (first wins).

    For each vNIC:   vNIC custom property > VM-level name > default_profile.
    For disks/CPU:   VM-level name > default_profile.
    VM-level name:   ``--profile`` > VM custom property from the environment >
                     VM custom property in ``<ovirt-vm:custom>`` metadata.
    """

    cli_profile: Optional[str] = None
    env_vm_profile: Optional[str] = None
    env_nic_profile: Optional[str] = None  # NIC hotplug hooks only

    def _vm_sources(self, config, metadata_vm_profile):
        """(name or None, where it comes from), in precedence order."""
        return ((self.cli_profile, "--profile"),
                (self.env_vm_profile, "VM custom property %s (environment)" % PROFILE_PROPERTY),
                (metadata_vm_profile, "VM custom property %s (metadata)" % PROFILE_PROPERTY),
                (config.settings.default_profile, "default_profile"))

    def vm_profile(self, config, metadata_vm_profile):
        for name, src in self._vm_sources(config, metadata_vm_profile):
            if name:
                return config.profile(name, src), src
        return None, None

    def steps(self, config, metadata_vm_profile, nic_properties=()):
        """The selection, step by step, in words (``--log-level DEBUG`` shows them).

        ``nic_properties``: [(vNIC label, its qos_profile custom property or None)].
        """
        out = ["config: %s" % (config.path or "none (no file found; built-in defaults)")]
        chosen = None
        for name, src in self._vm_sources(config, metadata_vm_profile):
            if chosen:
                out.append("VM level: %s not consulted (%s wins)" % (src, chosen))
            elif name:
                chosen = src
                out.append("VM level: %s = %r: chosen" % (src, name))
            else:
                out.append("VM level: %s: not set" % src)
        if not chosen:
            out.append("VM level: no profile (disks and CPU are left alone)")
        for label, prop in nic_properties:
            if self.env_nic_profile:
                out.append("%s: vNIC custom property (environment) = %r: chosen"
                           % (label, self.env_nic_profile))
            elif prop:
                out.append("%s: vNIC custom property %s = %r: chosen"
                           % (label, PROFILE_PROPERTY, prop))
            else:
                out.append("%s: no vNIC custom property: %s" % (
                    label, "the VM-level profile" if chosen else "no profile"))
        return out

    def nic_profile(self, config, metadata_nic_profile, vm_profile):
        for name, src in ((self.env_nic_profile, "vNIC custom property %s (environment)"
                           % PROFILE_PROPERTY),
                          (metadata_nic_profile, "vNIC custom property %s (metadata)"
                           % PROFILE_PROPERTY)):
            if name:
                return config.profile(name, src), src
        return vm_profile
