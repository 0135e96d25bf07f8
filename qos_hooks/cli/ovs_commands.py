"""``qos-hooks apply | clear | gc | status``: the Open vSwitch commands.

Each ``*_main`` takes the argparse namespace from qos_hooks.cli.main and returns an
exit code; errors are QosHooksError subclasses that the CLI maps to their
documented codes (5 OVSDB unavailable or timed out, 6 apply/verify failed or a
port carries QoS qos-hooks may not replace, 7 drift).

``apply`` runs the same rewrite as ``dry-run`` (profiles fill the XML's
``<bandwidth>``), then executes the OVS plan ``dry-run`` prints for the same
XML and OVSDB contents.

``status DOMAIN_XML`` also compares the domain's taps that are not on OVS
with the tc state libvirt put on them (qos_hooks.kernel.tap_status); a domain with
no OVS interface makes no OVSDB connection.
"""

import json
import sys

from qos_hooks.core import policy
from qos_hooks.core.errors import EXIT_DRIFT, EXIT_OK


def _common(args):
    # the default config file is optional here (settings have defaults and no
    # profile means the XML's <bandwidth> as it is); an explicit --config must exist
    config = policy.load_config(args.config, missing_ok=True)
    remote = getattr(args, "ovsdb", None) or config.settings.ovsdb
    timeout = getattr(args, "timeout", None) or config.settings.ovsdb_timeout
    return config, remote, timeout


def _domain_doc(args, config):
    from qos_hooks.core.desired import domain_qos
    from qos_hooks.core.domxml import DomainDoc
    from qos_hooks.cli.dryrun import read_input
    from qos_hooks.core.rewrite import rewrite
    data, source = read_input(args.domain_xml)
    doc = DomainDoc(data, source, allow_interface=True)
    rewrite(doc, config, policy.Selection(cli_profile=getattr(args, "profile", None)))
    return domain_qos(doc), doc


def _domain(args, config):
    return _domain_doc(args, config)[0]


def _print_report(report, out):
    out.write(report.plan.render_text())
    for o in report.outcomes:
        out.write("interface %s: %s%s%s\n" % (
            "/".join(x for x in (o.mac, o.target_dev) if x) or "?", o.action,
            " (port %s)" % o.port if o.port else "", ": " + o.detail if o.detail else ""))
    for d in report.differences:
        out.write("%s: %s\n" % ("DIFFERENCE" if d.fatal else "not enforced", d))


def apply_main(args):
    from qos_hooks.ovs import backend as ovs_backend
    config, remote, timeout = _common(args)
    dq = _domain(args, config)
    report = ovs_backend.apply_domain(dq, remote=remote, timeout=timeout,
                                      verify=not args.no_verify,
                                      netns=getattr(args, "netns", None))
    _print_report(report, sys.stdout)
    return EXIT_OK


def clear_main(args):
    from qos_hooks.ovs import backend as ovs_backend
    config, remote, timeout = _common(args)
    dq = _domain(args, config)
    if not getattr(args, "interface_only", False):
        # the whole domain: everything owned for its uuid (and its MACs)
        if dq.uuid:
            dq = type(dq)(dq.uuid, dq.name, ())
    report = ovs_backend.clear_domain(dq, remote=remote, timeout=timeout,
                                      libvirt_leftovers=getattr(args, "libvirt_leftovers", False))
    _print_report(report, sys.stdout)
    return EXIT_OK


def gc_main(args):
    from qos_hooks.ovs import backend as ovs_backend
    _, remote, timeout = _common(args)
    report = ovs_backend.gc(remote=remote, timeout=timeout, dry_run=args.dry_run,
                            libvirt_leftovers=args.libvirt_leftovers)
    sys.stdout.write(report.plan.render_text())
    if args.dry_run:
        sys.stdout.write("dry run: nothing was changed\n")
    return EXIT_OK


def status_main(args):
    from qos_hooks.ovs import backend as ovs_backend
    config, remote, timeout = _common(args)
    dq, doc = _domain_doc(args, config) if args.domain_xml else (None, None)
    netns = getattr(args, "netns", None)
    taps = ()
    if doc is not None:
        # taps NOT on OVS carry libvirt's own tc QoS (qos_hooks.kernel.tap_status)
        from qos_hooks.kernel import tap_status
        taps = tap_status.status(tap_status.interface_checks(doc.interfaces()), netns=netns)
    if dq is not None and not dq.interfaces:
        # no OVS interface: no OVSDB connection at all
        st = ovs_backend.StatusReport(remote)
    else:
        st = ovs_backend.status(dq, remote=remote, timeout=timeout, netns=netns)
    # host networks (qos_hooks.hostnet.ovs) belong to the whole-host view only;
    # status_section makes no OVSDB connection when no host network has QoS
    host_lines, host_json, host_drift = [], [], False
    if dq is None:
        from qos_hooks.hostnet import ovs as hostnet_ovs
        host_lines, host_json, host_drift = hostnet_ovs.status_section(remote, timeout, netns=netns)
    tap_drift = any(t.drift for t in taps)
    if args.json:
        d = st.to_dict()
        d["host_networks"] = host_json
        if doc is not None:
            d["tap_ports"] = [t.to_dict() for t in taps]
            d["drift"] = st.drift or tap_drift
        sys.stdout.write(json.dumps(d, indent=2, default=list) + "\n")
    else:
        if dq is None or dq.interfaces:
            sys.stdout.write(render_status(st))
        elif not taps:
            sys.stdout.write("no interface of %s has QoS to check (no OVS port, no tap "
                             "with <bandwidth>)\n" % (dq.name or dq.uuid or "the domain"))
        for line in tap_status.render(taps) if taps else ():
            sys.stdout.write(line + "\n")
        for line in host_lines:
            sys.stdout.write(line + "\n")
    return EXIT_DRIFT if st.drift or host_drift or tap_drift else EXIT_OK


def _fmt_rate(bps):
    from qos_hooks.core.units import format_bps
    return "-" if not bps else format_bps(bps)


def render_status(st):
    lines = []
    if not st.ports and not st.problems:
        lines.append("no port carries qos-hooks QoS (OVSDB %s)" % st.remote)
    for p in st.ports:
        lines.append("%s %s  mac %s  domain %s" % ("DRIFT" if p.drift else "ok   ", p.port,
                                                  p.mac or "-", p.domain_uuid or "-"))
        d, o, k = p.desired, p.ovsdb, p.kernel
        lines.append("  VM inbound   desired: max-rate %s, queue0 %s..%s burst %s bit" % (
            _fmt_rate(d["qos.max-rate"]), _fmt_rate(d["queue0.min-rate"]),
            _fmt_rate(d["queue0.max-rate"]), d["queue0.burst"] if d["queue0.burst"] else "-"))
        lines.append("               ovsdb:   QoS %s (%s, %s) max-rate %s, queue0 %s..%s burst %s" % (
            o["qos"] or "-", o["qos.owner"] or "-", o["qos.type"] or "-", _fmt_rate(o["qos.max-rate"]),
            _fmt_rate(o["queue0.min-rate"]), _fmt_rate(o["queue0.max-rate"]),
            o["queue0.burst"] if o["queue0.burst"] else "-"))
        cls = k.get("htb_classes") or {}
        lines.append("               kernel:  root %s %s; %s" % (
            k.get("root_qdisc") or "-", k.get("root_handle") or "",
            ", ".join("%s rate %s ceil %s burst %dB" % (h, _fmt_rate(c["rate"] * 8),
                                                        _fmt_rate(c["ceil"] * 8), c["burst"])
                      for h, c in sorted(cls.items())) or "no htb classes"))
        lines.append("  VM outbound  desired: policing %s kbit/s burst %s kbit; ovsdb: %s / %s; "
                     "kernel: ingress qdisc %s, %d filter(s)" % (
                         d["ingress_policing_rate"], d["ingress_policing_burst"],
                         o["ingress_policing_rate"], o["ingress_policing_burst"],
                         "yes" if k.get("ingress_qdisc") else "no", k.get("ingress_filters", 0)))
        for diff in p.differences:
            lines.append("  %s %s" % ("DRIFT:" if diff.fatal else "not enforced:", diff))
    for pr in st.problems:
        lines.append("problem: %s" % pr)
    if any(d.fatal and d.layer == "kernel" for p in st.ports for d in p.differences):
        lines.append("hint: 'qos-hooks apply DOMAIN_XML' re-hooks a QoS whose htb the kernel "
                     "lost (ovs-vswitchd does not notice a 'tc qdisc del')")
    return "\n".join(lines) + "\n"


def resync_main(args):
    """``qos-hooks resync``: re-apply the remembered host network QoS; exit 6
    when an uplink could not be brought back (named in the output)."""
    import sys
    from qos_hooks.core.errors import EXIT_APPLY, EXIT_OK
    config = policy.load_config(args.config, missing_ok=True)
    remote = args.ovsdb or config.settings.ovsdb
    timeout = args.timeout or config.settings.ovsdb_timeout
    from qos_hooks.hostnet import ovs as hostnet_ovs
    from qos_hooks.core import log as _log
    results = hostnet_ovs.resync_host_networks(remote, timeout, logger=_log.get("hostnet"))
    if not results:
        sys.stdout.write("no host network QoS on Open vSwitch to re-apply\n")
    for r in results:
        sys.stdout.write("%s\n" % r)
    return EXIT_APPLY if any(r.error for r in results) else EXIT_OK
