"""The plan: a tuple of frozen operations, shared by dry-run, apply and status.

Every operation says what it does in words (``describe``), as the commands an
operator could run by hand (``commands``: ``virsh``, ``ovs-vsctl``, ``tc``), and
as JSON (``to_dict``).  Each carries the name of the backend that executes it:

* ``domxml``: an edit of the domain XML (already made by the rewriter: the
  hook writes the document back; ``commands`` give the live ``virsh`` route);
* ``ovsdb``: a change in the Open vSwitch database (qos_hooks.ovs);
* ``tc``: a change of kernel traffic control state (qos_hooks.kernel.tc);
* ``libvirt``: a call through the libvirt API on a running domain.

Each operation also names the commands that make it (``executors``, from
EXECUTORS): ``qos-hooks apply`` executes only the ``ovsdb`` steps; the
``domxml`` steps are made by the hooks (VDSM before_vm_start, the libvirt
qemu.d hook at migrate/restore) or by ``qos-hooks set --live/--persistent``.
Dry-run prints the same plan those commands compute; there are no
``if dry_run`` branches anywhere else.
"""

from __future__ import annotations

from qos_hooks.core.records import Record, asdict

from qos_hooks.core import units
from qos_hooks.core.policy import Bandwidth, IoTune

# annotations are strings (PEP 563): typing is never imported at run time
# (it costs 3-6 ms of every hook start, bench/bench_hooks.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple  # noqa: F401


BACKEND_DOMXML = "domxml"
BACKEND_OVSDB = "ovsdb"
BACKEND_TC = "tc"
BACKEND_LIBVIRT = "libvirt"

# Which command makes each kind of step (``qos-hooks dry-run`` shows it for
# every op).  ``apply`` executes only the OVSDB steps; the domain XML steps
# are made by the hooks when a VM starts (or is migrated in), or by ``set``
# on a domain that already runs or is defined.
EXECUTORS = {
    BACKEND_DOMXML: ("VDSM hook before_vm_start (oVirt)",
                     "libvirt hook qemu.d at migrate/restore",
                     "qos-hooks set --persistent (defined domain)",
                     "qos-hooks set --live (running domain)"),
    BACKEND_OVSDB: ("qos-hooks apply",
                    "VDSM hook after_vm_start (oVirt)",
                    "libvirt hook qemu.d at started",
                    "qos-hooks set --live"),
    BACKEND_TC: ("libvirt itself, from <bandwidth>",),
    BACKEND_LIBVIRT: ("qos-hooks set",),
}


_SAFE_ARG = None


def sh(*argv):
    """Render argv as one shell-safe command line (shlex.quote rules)."""
    global _SAFE_ARG
    if _SAFE_ARG is None:
        # shlex is imported only when a plan is rendered: the hook path
        # never renders commands (bench/bench_before_vm_start.py)
        import shlex
        _SAFE_ARG = shlex.quote
    return " ".join(_SAFE_ARG(str(a)) for a in argv)


class Op(Record):
    """Base of every plan operation.

    The core's operations are immutable records (qos_hooks.core.records, cheap to
    define on the hook path); a backend's may be frozen dataclasses instead
    (``@dataclass(frozen=True) class X(Op)``): ``to_dict`` handles both.
    """

    backend = "none"

    @property
    def kind(self):
        return type(self).__name__

    def describe(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def commands(self):
        return ()

    @property
    def executors(self):
        """The commands that make this step (EXECUTORS), first the usual one."""
        return EXECUTORS.get(self.backend, ())

    def to_dict(self):
        d = {"op": self.kind, "backend": self.backend, "executors": list(self.executors)}
        if hasattr(type(self), "__dataclass_fields__"):
            import dataclasses
            names = [f.name for f in dataclasses.fields(self)]
        else:
            names = self._fields
        for name in names:
            v = getattr(self, name)
            d[name] = asdict(v) if isinstance(v, Record) or hasattr(
                type(v), "__dataclass_fields__") else v
        d["description"] = self.describe()
        d["commands"] = list(self.commands())
        return d

    def __str__(self):
        return self.describe()


def describe_rate(rate):
    if rate is None or rate.is_empty():
        return "none"
    parts = []
    if rate.average is not None:
        parts.append("average %s" % units.format_libvirt_rate(rate.average))
    if rate.peak is not None:
        parts.append("peak %s" % units.format_libvirt_rate(rate.peak))
    if rate.burst is not None:
        parts.append("burst %s" % units.format_libvirt_burst(rate.burst))
    if rate.floor is not None:
        parts.append("floor %s" % units.format_libvirt_rate(rate.floor))
    return ", ".join(parts)


def _virsh_rate(rate):
    if rate is None or rate.is_empty():
        return None
    vals = [rate.average or 0, rate.peak or 0, rate.burst or 0]
    if rate.floor:
        vals.append(rate.floor)
    while len(vals) > 1 and vals[-1] == 0:
        vals.pop()
    return ",".join(str(v) for v in vals)


# -- domain XML operations -------------------------------------------------------

class SetInterfaceBandwidth(Op):
    """Set an interface's ``<bandwidth>``."""

    backend = BACKEND_DOMXML
    domain: Optional[str]
    mac: Optional[str]
    target_dev: Optional[str]
    bandwidth: Bandwidth
    previous: Optional[Bandwidth] = None
    profile: Optional[str] = None

    def describe(self):
        who = self.mac or "?"
        if self.target_dev:
            who += " (%s)" % self.target_dev
        parts = []
        for direction in ("inbound", "outbound"):
            rate = self.bandwidth.direction(direction)
            text = describe_rate(rate)
            prev = self.previous.direction(direction) if self.previous is not None else None
            if rate is not None and not rate.is_empty() and rate == prev:
                text += " (kept from the XML)"
            parts.append("%s %s" % (direction, text))
        return ("set <bandwidth> of interface %s from profile %r: %s"
                % (who, self.profile, "; ".join(parts)))

    def commands(self):
        argv = ["virsh", "domiftune", self.domain or "DOMAIN",
                self.target_dev or self.mac or "IFACE"]
        for direction in ("inbound", "outbound"):
            v = _virsh_rate(self.bandwidth.direction(direction))
            if v:
                argv += ["--" + direction, v]
        return (sh(*argv, "--config"),)


class SetDiskIoTune(Op):
    """Set a disk's ``<iotune>``."""

    backend = BACKEND_DOMXML
    domain: Optional[str]
    target_dev: Optional[str]
    iotune: IoTune
    previous: Optional[IoTune] = None
    profile: Optional[str] = None
    rule: str = "profile"

    def describe(self):
        vals = ", ".join("%s=%s" % kv for kv in self.iotune.values)
        return "set <iotune> of disk %s from profile %r (%s): %s" % (
            self.target_dev, self.profile, self.rule, vals)

    def commands(self):
        argv = ["virsh", "blkdeviotune", self.domain or "DOMAIN", self.target_dev or "DISK"]
        for k, v in self.iotune.values:
            argv += ["--" + k.replace("_", "-"), v]
        return (sh(*argv, "--config"),)


class SetCpuTune(Op):
    """Set ``<cputune>`` period, quota and/or shares."""

    backend = BACKEND_DOMXML
    domain: Optional[str]
    period: Optional[int] = None
    quota: Optional[int] = None
    shares: Optional[int] = None
    profile: Optional[str] = None
    reason: str = ""

    def describe(self):
        vals = ", ".join("%s=%s" % (k, getattr(self, k)) for k in ("period", "quota", "shares")
                         if getattr(self, k) is not None)
        return "set <cputune> %s from profile %r%s" % (
            vals, self.profile, (" (%s)" % self.reason) if self.reason else "")

    def commands(self):
        argv = ["virsh", "schedinfo", self.domain or "DOMAIN", "--config"]
        for k, param in (("shares", "cpu_shares"), ("period", "vcpu_period"),
                         ("quota", "vcpu_quota")):
            if getattr(self, k) is not None:
                argv += ["--set", "%s=%s" % (param, getattr(self, k))]
        return (sh(*argv),)


class SetVcpuLimit(Op):
    """Set oVirt's ``<ovirt-tune:qos><vcpuLimit>`` (MOM enforces it)."""

    backend = BACKEND_DOMXML
    domain: Optional[str]
    limit: int
    profile: Optional[str] = None

    def describe(self):
        return ("set oVirt vcpuLimit to %d%% of host CPU from profile %r (MOM enforces it "
                "as <cputune> quota/period)" % (self.limit, self.profile))

    def commands(self):
        return (sh("virsh", "metadata", self.domain or "DOMAIN", "--config",
                   "--uri", "http://ovirt.org/vm/tune/1.0", "--key", "ovirt-tune",
                   "--set", "<qos><vcpuLimit>%d</vcpuLimit></qos>" % self.limit),)


# -- the plan ---------------------------------------------------------------------

class Plan(Record):
    """Operations, warnings and notes, in order."""

    ops: Tuple[Op, ...] = ()
    warnings: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()

    def __add__(self, other):
        return Plan(self.ops + other.ops, self.warnings + other.warnings,
                    self.notes + other.notes)

    def for_backend(self, backend):
        return tuple(op for op in self.ops if op.backend == backend)

    def is_empty(self):
        return not self.ops

    def to_dict(self):
        return {"ops": [op.to_dict() for op in self.ops],
                "warnings": list(self.warnings), "notes": list(self.notes)}

    def to_json(self):
        import json  # only dry-run --output json needs it
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def render_text(self):
        lines = []
        if not self.ops:
            lines.append("plan: nothing to change")
        else:
            lines.append("plan: %d change%s" % (len(self.ops), "" if len(self.ops) == 1 else "s"))
        for i, op in enumerate(self.ops, 1):
            lines.append("%3d. [%s] %s" % (i, op.backend, op.describe()))
            if op.executors:
                lines.append("       made by: %s" % "; ".join(op.executors))
            for c in op.commands():
                lines.append("       $ %s" % c)
        for w in self.warnings:
            lines.append("warning: %s" % w)
        for n in self.notes:
            lines.append("note: %s" % n)
        return "\n".join(lines) + "\n"
