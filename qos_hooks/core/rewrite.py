"""The rewriter: (domain XML, policy) -> edited domain XML and the plan of its edits.

Pure: it reads nothing but its arguments and touches no system state.

``on_existing`` (per profile) decides what happens to QoS already in the XML
(for example the vNIC QoS the oVirt engine sends):

* ``fill`` (default): only fill gaps.  A ``<bandwidth>`` direction that already
  has values is kept; an ``<iotune>`` with any value is kept whole; each
  ``<cputune>`` child and ``vcpuLimit`` that is already set is kept.
* ``override``: the profile's values replace what is there; parts the profile
  does not set are kept.

Devices libvirt cannot apply a setting to are skipped with a warning in the
plan (and so in the log), never silently.
"""

import os
from qos_hooks.core.records import replace

from qos_hooks.core.domxml import DomainDoc
from qos_hooks.core.plan import Plan, SetCpuTune, SetDiskIoTune, SetInterfaceBandwidth, SetVcpuLimit
from qos_hooks.core.policy import Bandwidth, ON_EXISTING_OVERRIDE, PROFILE_PROPERTY, DEFAULT_CPU_PERIOD, VCPU_LIMIT_MAX, VCPU_LIMIT_MIN, burst_warnings, cpu_period_quota_for_limit, cpu_quota_for_limit


def host_cpus_and_source(config, cli_host_cpus=None):
    """(count, where it came from): ``--host-cpus``, ``host_cpus`` in
    [settings], else the CPU count of the machine this runs on (right in a
    hook, which runs on the hypervisor; not in a dry-run on a workstation)."""
    if cli_host_cpus:
        return int(cli_host_cpus), "--host-cpus"
    for k, v in config.settings.extra:
        if k == "host_cpus" and v.isdigit() and int(v) > 0:
            return int(v), "host_cpus in [settings]"
    return (os.cpu_count() or 1), ("os.cpu_count() of %s, the machine this ran on (for "
                                   "another hypervisor: --host-cpus N or host_cpus in "
                                   "[settings])" % os.uname().nodename)


def host_cpu_count(config):
    return host_cpus_and_source(config)[0]


def merge_bandwidth(existing, wanted, on_existing):
    """Combine the XML's bandwidth with the profile's, direction by direction."""
    result = {}
    for direction in ("inbound", "outbound"):
        have = existing.direction(direction) if existing is not None else None
        want = wanted.direction(direction)
        have_set = have is not None and not have.is_empty()
        want_set = want is not None and not want.is_empty()
        if want_set and (on_existing == ON_EXISTING_OVERRIDE or not have_set):
            result[direction] = want
        elif have_set:
            result[direction] = have
    return Bandwidth(**result)


def _floor_allowed(iface):
    # libvirt accepts 'floor' only on <interface type='network'> (whose network
    # has a forward mode of nat/route/open or none): virNetDevBandwidthSupportsFloor
    # and the "Invalid use of 'floor'" check in src/conf/domain_validate.c.
    return iface.type == "network"


def rewrite_interfaces(doc, config, selection, vm_profile, plan_ops, warnings, chosen=None):
    for iface in doc.interfaces():
        profile, src = selection.nic_profile(
            config, doc.device_custom(iface.mac, PROFILE_PROPERTY), vm_profile)
        if chosen is not None and profile is not None:
            chosen.append((profile, src))
        if profile is None or profile.bandwidth.is_empty():
            continue
        if not iface.supports_bandwidth:
            warnings.append("skipped %s: <interface type='%s'> does not support <bandwidth> "
                            "(libvirt virNetDevSupportsBandwidth)" % (iface.label, iface.type))
            continue
        wanted = profile.bandwidth
        inbound = wanted.inbound
        if inbound is not None and inbound.floor is not None and not _floor_allowed(iface):
            warnings.append("%s: dropped inbound floor from profile %r: libvirt supports "
                            "'floor' only on <interface type='network'>"
                            % (iface.label, profile.name))
            inbound = replace(inbound, floor=None)
            wanted = replace(wanted, inbound=None if inbound.is_empty() else inbound)
        existing = iface.bandwidth
        merged = merge_bandwidth(existing, wanted, profile.on_existing)
        if not iface.on_ovs:
            # a burst kept from the XML (on_existing=fill) was not validated
            # here (the OVS plan flags it for interfaces on Open vSwitch)
            warnings.extend(burst_warnings(merged, iface.label))
        if merged.is_empty() or merged == existing:
            continue
        doc.set_bandwidth(iface.index, merged)
        plan_ops.append(SetInterfaceBandwidth(
            domain=doc.name, mac=iface.mac, target_dev=iface.target_dev, bandwidth=merged,
            previous=existing, profile="%s (%s)" % (profile.name, src) if src else profile.name))


def rewrite_disks(doc, profile, plan_ops, warnings, notes=None):
    planned = []      # (disk, iotune, rule) to write
    final = {}        # disk index -> the iotune the disk ends up with
    disks = doc.disks()
    if notes is not None:
        # a disk rule that matches none of this domain's disks is legal (the
        # profile may serve other VMs) but often a typo: say so (dry-run shows it)
        for r in profile.disk_rules:
            if not any(r.matches(d.bus, d.target_dev) for d in disks):
                notes.append("disk rule [profile %s disk %s] matched no disk of this domain "
                             "(its disks: %s)" % (profile.name, r.describe(), ", ".join(
                                 "%s bus=%s" % (d.target_dev, d.bus) for d in disks) or "none"))
    for disk in disks:
        final[disk.index] = disk.iotune
        iotune, rule = profile.iotune_for(disk.bus, disk.target_dev)
        if iotune.is_empty():
            continue
        reason = disk.iotune_unsupported_reason()
        if reason:
            warnings.append("skipped %s: %s" % (disk.label, reason))
            continue
        existing = disk.iotune
        if existing is not None and not existing.is_empty():
            if profile.on_existing != ON_EXISTING_OVERRIDE:
                continue
            if existing == iotune:
                continue
        planned.append((disk, iotune, rule))
        final[disk.index] = iotune
    # qemu keeps one set of limits per throttle group: never leave two disks
    # in one group_name with different <iotune> (see policy._check_groups).
    groups = {}
    for idx, io in final.items():
        g = io.as_dict().get("group_name") if io is not None else None
        if g is not None:
            groups.setdefault(g, set()).add(io)
    for disk, iotune, rule in planned:
        g = iotune.as_dict().get("group_name")
        if g is not None and len(groups[g]) > 1:
            warnings.append("skipped %s: another disk of this domain is in throttle group %r "
                            "with different <iotune> values, and qemu keeps one set of "
                            "limits per group" % (disk.label, g))
            continue
        doc.set_iotune(disk.index, iotune)
        plan_ops.append(SetDiskIoTune(domain=doc.name, target_dev=disk.target_dev,
                                      iotune=iotune, previous=disk.iotune,
                                      profile=profile.name, rule=rule))


def _ovirt_vcpu_limit(doc, cpu, host_cpus, warnings, cpus_source=""):
    """The vcpuLimit (percent) that expresses the profile's CPU cap on oVirt."""
    if cpu.period is not None:
        warnings.append("oVirt domain: cpu.period=%d ignored: MOM sets the <cputune> period "
                        "itself from vcpuLimit (vdsm mom.d/04-cputune.policy)" % cpu.period)
    if cpu.limit is not None:
        return cpu.limit
    if cpu.quota is None:
        return None
    if cpu.quota < 0:
        warnings.append("oVirt domain: cpu quota -1 (no cap) expressed as vcpuLimit=100%")
        return VCPU_LIMIT_MAX
    # MOM resets <cputune> quota/period from vcpuLimit on oVirt hosts, so an
    # explicit quota would be undone: express it as the equivalent vcpuLimit.
    period = cpu.period or DEFAULT_CPU_PERIOD
    pct = (cpu.quota * doc.vcpus * 100 + (period * host_cpus) // 2) // (period * host_cpus)
    limit = max(VCPU_LIMIT_MIN, min(VCPU_LIMIT_MAX, pct))
    warnings.append("oVirt domain: cpu quota %d/%d us for %d vCPUs on %d host CPUs%s "
                    "expressed as vcpuLimit=%d%% (MOM would reset <cputune>)"
                    % (cpu.quota, period, doc.vcpus, host_cpus,
                       " (%s)" % cpus_source if cpus_source else "", limit))
    return limit


def rewrite_cpu(doc, profile, host_cpus, plan_ops, warnings, cpus_source=""):
    """The CPU cap and shares.

    On oVirt (the domain carries oVirt metadata) the cap goes to
    ``<ovirt-tune:qos><vcpuLimit>``, which vdsm reads from the domain's
    metadata (vdsm virt/vm.py _updateVcpuLimit, reported as vcpuUserLimit)
    and MOM turns into <cputune> quota/period; a <cputune> cap written here
    would be reset by MOM.  Elsewhere the cap is <cputune> period + quota.
    ``shares`` is <cputune><shares> on both.

    The cap (period + quota) is one unit for ``fill``: an XML that already
    has a <quota> keeps its cap whole.
    """
    cpu = profile.cpu
    if cpu.is_empty():
        return
    override = profile.on_existing == ON_EXISTING_OVERRIDE
    have = doc.cputune()
    want = {}
    reason = ""
    if doc.is_ovirt:
        limit = _ovirt_vcpu_limit(doc, cpu, host_cpus, warnings, cpus_source)
        if limit is not None:
            current = doc.vcpu_limit()
            if current != limit and (override or current is None):
                doc.set_vcpu_limit(limit)
                plan_ops.append(SetVcpuLimit(domain=doc.name, limit=limit,
                                             profile=profile.name))
    else:
        if cpu.limit is not None:
            if cpu.period is not None or "period" in have:
                period = cpu.period or have["period"]
                quota = cpu_quota_for_limit(cpu.limit, period, host_cpus, doc.vcpus)
            else:
                period, quota = cpu_period_quota_for_limit(cpu.limit, host_cpus, doc.vcpus)
            want["period"], want["quota"] = period, quota
            reason = ("cpu.limit=%d%% of %d host CPUs over %d vCPUs%s"
                      % (cpu.limit, host_cpus, doc.vcpus,
                         "; host CPUs from %s" % cpus_source if cpus_source else ""))
        else:
            for f in ("period", "quota"):
                if getattr(cpu, f) is not None:
                    want[f] = getattr(cpu, f)
        if not override and "quota" in have:
            want.pop("quota", None)
            want.pop("period", None)
    if cpu.shares is not None:
        want["shares"] = cpu.shares
    if not override:
        want = {k: v for k, v in want.items() if k not in have}
    want = {k: v for k, v in want.items() if have.get(k) != v}
    if want:
        doc.set_cputune(want)
        plan_ops.append(SetCpuTune(domain=doc.name, profile=profile.name, reason=reason, **want))


def rewrite(doc: DomainDoc, config, selection, host_cpus=None, host_cpus_source=None) -> Plan:
    """Apply the policy to ``doc`` in place; return the plan of what changed.

    ``host_cpus``: the hypervisor's CPU count for CPU caps (default: ``host_cpus``
    in [settings], else this machine's).  When the plan is empty, its notes
    say why (no profile applies, or the XML already has every value).
    """
    ops, warnings, notes = [], [], []
    vm_profile = selection.vm_profile(config, doc.vm_custom(PROFILE_PROPERTY)
                                      if not doc.is_interface_only else None)
    nic_profiles = []
    rewrite_interfaces(doc, config, selection, vm_profile, ops, warnings, nic_profiles)
    profile = vm_profile[0]
    if profile is not None and not doc.is_interface_only:
        rewrite_disks(doc, profile, ops, warnings, notes)
    if profile is not None and not doc.is_interface_only and not profile.cpu.is_empty():
        n, src = host_cpus_and_source(config, host_cpus)
        if host_cpus:
            # a caller's own count: it names where it came from, or nothing
            src = host_cpus_source or ""
        rewrite_cpu(doc, profile, n, ops, warnings, src)
    if not ops:
        notes.extend(_why_nothing(doc, config, selection, vm_profile, nic_profiles))
    return Plan(ops=tuple(ops), warnings=tuple(warnings), notes=tuple(notes))


def _config_name(config):
    return ("config file %s" % config.path if config.path
            else "no config file (none at $QOS_HOOKS_CONFIG or /etc/qos-hooks/qos-hooks.conf)")


def _why_nothing(doc, config, selection, vm_profile, nic_profiles):
    """Notes for an empty plan: which config was read and why nothing applies."""
    used = [p for p in nic_profiles if p is not None]
    if vm_profile[0] is None and not used:
        return ["no profile applies to this domain: read %s; no --profile given, no %s "
                "custom property on the VM or its vNICs (%s), and no default_profile in "
                "[settings] (profiles defined: %s)"
                % (_config_name(config), PROFILE_PROPERTY,
                   "oVirt metadata <ovirt-vm:custom>" if doc.is_ovirt
                   else "the domain has no oVirt metadata",
                   ", ".join(sorted(config.profiles)) or "none")]
    names = sorted({"%s (%s)" % (p.name, src) if src else p.name
                    for p, src in ([vm_profile] if vm_profile[0] is not None else []) + used})
    modes = sorted({p.on_existing for p, _ in ([vm_profile] if vm_profile[0] else []) + used})
    return ["profile %s from %s applies, but the domain XML already has what it sets "
            "(on_existing = %s) or the profile sets nothing for these devices"
            % (", ".join(names), _config_name(config), "/".join(modes))]
