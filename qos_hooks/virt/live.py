"""``qos-hooks set``: apply a profile to a running (or defined) domain through libvirt.

oVirt users hit this: a vNIC's QoS changed in the engine stays at its old
value until the VM restarts.  ``set`` changes it now:

1. read the domain XML from libvirt (live XML with ``--live``, the
   persistent definition with ``--persistent``/``--config-xml``);
2. run the same rewriter as the hooks on it, with the chosen profile in
   ``override`` mode (an explicit ``set`` replaces what is there; parts the
   profile does not set are kept);
3. push each change through the libvirt API, with AFFECT_LIVE and/or
   AFFECT_CONFIG (neither flag: AFFECT_CURRENT, as virsh does):

   * ``<bandwidth>``: ``virDomainSetInterfaceParameters`` (inbound.* / outbound.*),
     by target device (live) or MAC (config);
   * ``<iotune>``: ``virDomainSetBlockIoTune``;
   * ``<cputune>``: ``virDomainSetSchedulerParametersFlags`` (cpu_shares,
     vcpu_period, vcpu_quota), when the driver has those parameters;
   * oVirt domains: ``vcpuLimit`` in ``<ovirt-tune:qos>`` via
     ``virDomainSetMetadata`` (MOM reads it; FIELD_NOTES section 3);

4. with ``--live``, apply the OVS backend to the OVS-attached interfaces of
   the new live XML (libvirt >= 7.10 rewrites its own OVS QoS on
   setInterfaceParameters; the backend replaces it with this project's
   mapping).

Every change is attempted; failures are reported together (exit 6).  The
libvirt module is imported only here.
"""

import sys
from qos_hooks.core.records import replace

from qos_hooks.core import log as _log
from qos_hooks.core import policy
from qos_hooks.core.errors import ApplyError, BackendUnavailable, InputError
from qos_hooks.core.plan import SetCpuTune, SetDiskIoTune, SetInterfaceBandwidth, SetVcpuLimit

DEFAULT_URI = "qemu:///system"
NS_OVIRT_TUNE = "http://ovirt.org/vm/tune/1.0"

# virDomainSetInterfaceParameters keys (libvirt-domain.h VIR_DOMAIN_BANDWIDTH_*)
_BW_FIELDS = {"inbound": ("average", "peak", "burst", "floor"),
              "outbound": ("average", "peak", "burst")}
# virDomainSetSchedulerParameters keys (VIR_DOMAIN_SCHEDULER_*)
_SCHED_KEYS = {"shares": "cpu_shares", "period": "vcpu_period", "quota": "vcpu_quota"}


def _libvirt():
    try:
        import libvirt
    except ImportError:
        raise BackendUnavailable("the libvirt Python binding is not installed "
                                 "(EL: python3-libvirt; pip: libvirt-python)")
    return libvirt


def interface_params(bandwidth):
    """setInterfaceParameters dict for a Bandwidth: every field, 0 = unset."""
    out = {}
    for d, fields in _BW_FIELDS.items():
        rate = bandwidth.direction(d)
        for f in fields:
            v = getattr(rate, f) if rate is not None else None
            out["%s.%s" % (d, f)] = int(v or 0)
    return out


def iotune_params(iotune):
    """setBlockIoTune dict: the profile's values; rates it does not set are 0
    (unlimited), so the disk ends up with exactly the profile's limits."""
    d = iotune.as_dict()
    out = {}
    for k in policy.IOTUNE_NUMERIC:
        if k.endswith("_max_length"):
            if k in d:
                out[k] = int(d[k])
            continue
        out[k] = int(d.get(k, 0))
    if "group_name" in d:
        out["group_name"] = d["group_name"]
    return out


def _ovirt_tune_xml(limit):
    return "<qos><vcpuLimit>%d</vcpuLimit></qos>" % limit


class _Setter:
    def __init__(self, libvirt, dom, flags, logger):
        self.libvirt, self.dom, self.flags, self.logger = libvirt, dom, flags, logger
        self.done, self.failed, self.skipped = [], [], []

    def _try(self, op, what, fn):
        try:
            fn()
        except self.libvirt.libvirtError as e:
            self.failed.append("%s: %s" % (what, e.get_error_message()))
            self.logger.error("%s failed: %s", what, e.get_error_message())
            return
        self.done.append(op)
        self.logger.info("%s", op.describe())

    def apply(self, op):
        lv, dom, flags = self.libvirt, self.dom, self.flags
        if isinstance(op, SetInterfaceBandwidth):
            live_dev = op.target_dev if flags & lv.VIR_DOMAIN_AFFECT_LIVE else None
            device = live_dev or op.mac
            params = interface_params(op.bandwidth)
            self._try(op, "setInterfaceParameters(%s)" % device,
                      lambda: dom.setInterfaceParameters(device, params, flags))
        elif isinstance(op, SetDiskIoTune):
            params = iotune_params(op.iotune)
            self._try(op, "setBlockIoTune(%s)" % op.target_dev,
                      lambda: dom.setBlockIoTune(op.target_dev, params, flags))
        elif isinstance(op, SetCpuTune):
            try:
                known = set(dom.schedulerParameters())
            except lv.libvirtError as e:
                known = set()
                self.logger.debug("schedulerParameters: %s", e.get_error_message())
            params, missing = {}, []
            for f, key in _SCHED_KEYS.items():
                v = getattr(op, f)
                if v is None:
                    continue
                (params.__setitem__(key, v) if key in known else missing.append(key))
            if missing:
                msg = ("cpu: this hypervisor driver has no scheduler parameter(s) %s"
                       % ", ".join(missing))
                self.skipped.append(msg)
                self.logger.warning("%s: skipped", msg)
            if params:
                self._try(op, "setSchedulerParametersFlags(%s)" % ", ".join(sorted(params)),
                          lambda: dom.setSchedulerParametersFlags(params, flags))
        elif isinstance(op, SetVcpuLimit):
            self._try(op, "setMetadata(ovirt-tune vcpuLimit=%d)" % op.limit,
                      lambda: dom.setMetadata(lv.VIR_DOMAIN_METADATA_ELEMENT,
                                              _ovirt_tune_xml(op.limit), "ovirt-tune",
                                              NS_OVIRT_TUNE, flags))
        else:  # pragma: no cover - a new op type needs a case here
            self.skipped.append("%s: no libvirt API for it" % op.kind)


def _override(config, name):
    if not name:
        return config
    p = config.profile(name, "--profile")
    profiles = dict(config.profiles)
    profiles[name] = replace(p, on_existing=policy.ON_EXISTING_OVERRIDE)
    return replace(config, profiles=profiles)


def _lookup(libvirt, conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        pass
    try:
        return conn.lookupByUUIDString(name)
    except libvirt.libvirtError:
        raise InputError("no domain named %r (or with that UUID) on %s" % (name, conn.getURI()))


def set_domain(conn, name, config, *, profile=None, live=False, persistent=False,
               logger=None, ovs=True, environ=None, store_profile=False):
    """Apply ``profile`` to domain ``name`` on an open libvirt connection.

    ``store_profile``: also record ``profile`` in the domain's qos-hooks
    metadata element (qos_hooks.core.profile_meta), which the agent applies at
    every start.

    Returns a dict summary: done (descriptions), skipped, warnings, ovs.
    Raises ApplyError when any libvirt call failed (after trying them all).
    """
    import os
    from qos_hooks.core.domxml import DomainDoc
    from qos_hooks.core.rewrite import rewrite
    libvirt = _libvirt()
    logger = logger or _log.get("live")
    dom = _lookup(libvirt, conn, name)
    flags = 0
    if live:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if persistent:
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if flags == 0:
        flags = libvirt.VIR_DOMAIN_AFFECT_CURRENT
    running = dom.isActive()
    use_live_xml = live or (flags == libvirt.VIR_DOMAIN_AFFECT_CURRENT and running)
    xml = dom.XMLDesc(0 if use_live_xml else libvirt.VIR_DOMAIN_XML_INACTIVE)
    doc = DomainDoc(xml, "domain %s" % dom.name())
    cfg = _override(config, profile)
    plan = rewrite(doc, cfg, policy.Selection(cli_profile=profile))
    for w in plan.warnings:
        logger.warning("%s", w)
    setter = _Setter(libvirt, dom, flags, logger)
    for op in plan.ops:
        setter.apply(op)
    summary = {"domain": dom.name(), "done": [op.describe() for op in setter.done],
               "skipped": setter.skipped, "warnings": list(plan.warnings), "ovs": None}
    if store_profile and profile:
        summary["done"].extend(_store_profile(libvirt, dom, profile, flags, running, setter))
    if setter.failed:
        raise ApplyError("%d libvirt change(s) failed: %s"
                         % (len(setter.failed), "; ".join(setter.failed)))
    if ovs and use_live_xml and running:
        from qos_hooks.core import desired
        from qos_hooks.priv import client as privclient
        live_doc = DomainDoc(dom.XMLDesc(0), "domain %s (live)" % dom.name())
        dq = desired.domain_qos(live_doc)
        if dq.interfaces:
            env = os.environ if environ is None else environ
            # libvirt (>= 7.10) answered setInterfaceParameters on an OVS port
            # by pointing Port.qos at a new QoS row of its own: apply replaces
            # it and destroys our previous row in the same transaction
            privclient.ovs_apply(dq, config, env, logger)
            summary["ovs"] = [i.label for i in dq.interfaces]
            logger.info("OVS QoS applied for %s", ", ".join(summary["ovs"]))
    return summary


def _store_profile(libvirt, dom, profile, flags, running, setter):
    from qos_hooks.core import profile_meta
    done = []
    if flags == libvirt.VIR_DOMAIN_AFFECT_CURRENT:
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if running else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    # the live copy also says the profile is applied (the agent's marker);
    # the persistent one must not, or the next start would skip it
    for flag, meta in ((libvirt.VIR_DOMAIN_AFFECT_CONFIG, profile_meta.ProfileMeta(profile)),
                       (libvirt.VIR_DOMAIN_AFFECT_LIVE,
                        profile_meta.ProfileMeta(profile, applied=profile))):
        if not flags & flag:
            continue
        what = "setMetadata(qos-hooks profile=%s, %s)" % (
            profile, "live" if flag == libvirt.VIR_DOMAIN_AFFECT_LIVE else "config")
        try:
            profile_meta.store(libvirt, dom, meta, flag)
        except libvirt.libvirtError as e:
            setter.failed.append("%s: %s" % (what, e.get_error_message()))
            setter.logger.error("%s failed: %s", what, e.get_error_message())
            continue
        setter.logger.info("%s", what)
        done.append(what)
    return done


def set_main(args):
    config = policy.load_config(args.config, missing_ok=True)
    s = config.settings
    if getattr(args, "ovsdb", None) or getattr(args, "timeout", None):
        s = replace(s, ovsdb=args.ovsdb or s.ovsdb, ovsdb_timeout=args.timeout or s.ovsdb_timeout)
        config = replace(config, settings=s)
    if args.profile:
        config.profile(args.profile, "--profile")  # unknown profile: exit 3 before connecting
    libvirt = _libvirt()
    uri = args.connect or DEFAULT_URI
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise BackendUnavailable("cannot connect to libvirt at %s: %s"
                                 % (uri, e.get_error_message()))
    try:
        summary = set_domain(conn, args.domain, config, profile=args.profile, live=args.live,
                             persistent=args.persistent,
                             store_profile=getattr(args, "store_profile", False))
    finally:
        conn.close()
    out = sys.stdout
    if not summary["done"]:
        out.write("domain %s: nothing to change\n" % summary["domain"])
    for line in summary["done"]:
        out.write("%s: %s\n" % (summary["domain"], line))
    for line in summary["skipped"]:
        out.write("%s: skipped: %s\n" % (summary["domain"], line))
    if summary["ovs"]:
        out.write("%s: OVS QoS applied to %s\n" % (summary["domain"], ", ".join(summary["ovs"])))
    return 0
