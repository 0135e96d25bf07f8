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
from ._record import replace

from .domxml import DomainDoc
from .plan import Plan, SetCpuTune, SetDiskIoTune, SetInterfaceBandwidth, SetVcpuLimit
from .policy import (Bandwidth, ON_EXISTING_OVERRIDE, PROFILE_PROPERTY, DEFAULT_CPU_PERIOD,
                     VCPU_LIMIT_MAX, VCPU_LIMIT_MIN, burst_warnings, cpu_period_quota_for_limit,
                     cpu_quota_for_limit)


def host_cpu_count(config):
    for k, v in config.settings.extra:
        if k == "host_cpus" and v.isdigit() and int(v) > 0:
            return int(v)
    return os.cpu_count() or 1


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


def rewrite_interfaces(doc, config, selection, vm_profile, plan_ops, warnings):
    for iface in doc.interfaces():
        profile, src = selection.nic_profile(
            config, doc.device_custom(iface.mac, PROFILE_PROPERTY), vm_profile)
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


def rewrite_disks(doc, profile, plan_ops, warnings):
    planned = []      # (disk, iotune, rule) to write
    final = {}        # disk index -> the iotune the disk ends up with
    for disk in doc.disks():
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


def _ovirt_vcpu_limit(doc, cpu, host_cpus, warnings):
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
    warnings.append("oVirt domain: cpu quota %d/%d us for %d vCPUs on %d host CPUs "
                    "expressed as vcpuLimit=%d%% (MOM would reset <cputune>)"
                    % (cpu.quota, period, doc.vcpus, host_cpus, limit))
    return limit


def rewrite_cpu(doc, profile, host_cpus, plan_ops, warnings):
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
        limit = _ovirt_vcpu_limit(doc, cpu, host_cpus, warnings)
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
            reason = ("cpu.limit=%d%% of %d host CPUs over %d vCPUs"
                      % (cpu.limit, host_cpus, doc.vcpus))
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


def rewrite(doc: DomainDoc, config, selection, host_cpus=None) -> Plan:
    """Apply the policy to ``doc`` in place; return the plan of what changed."""
    ops, warnings = [], []
    vm_profile = selection.vm_profile(config, doc.vm_custom(PROFILE_PROPERTY)
                                      if not doc.is_interface_only else None)
    rewrite_interfaces(doc, config, selection, vm_profile, ops, warnings)
    profile = vm_profile[0]
    if profile is not None and not doc.is_interface_only:
        rewrite_disks(doc, profile, ops, warnings)
        rewrite_cpu(doc, profile, host_cpus or host_cpu_count(config), ops, warnings)
    return Plan(ops=tuple(ops), warnings=tuple(warnings))
