"""The ``qos-hooks`` command line.

Every subcommand is declared here (so ``--help`` and the generated man page
see all of them); each one's work lives in the module named after its domain
and is imported only when that command runs.  A handler takes the parsed
arguments and returns an exit code; errors derived from QosHooksError are
turned into one line on stderr and their documented exit code.
"""

import argparse
import importlib
import os
import sys

from qos_hooks import __version__
from qos_hooks.core.errors import EXIT_INTERNAL, EXIT_USAGE, QosHooksError

EPILOG = """\
exit codes:
  0  success                      5  backend unavailable (OVSDB/netlink/libvirt, timeout)
  1  internal error (a bug)       6  apply or verify failed
  2  usage error                  7  drift found by 'status'
  3  configuration error          8  permission denied
  4  input error (XML, JSON)

files and environment:
  /etc/qos-hooks/qos-hooks.conf   profiles and settings (override: --config or
                                  $QOS_HOOKS_CONFIG); the example config and
                                  domains are in %(examples)s
  QOS_HOOKS_LOG_LEVEL             DEBUG, INFO (default), WARNING, ERROR

start here:
  qos-hooks dry-run --example     the shipped example, from any directory: the same as
  qos-hooks dry-run --config %(conf)s \\
                    %(xml)s
"""

# where the examples are when the man page is generated (not this checkout's path)
EXAMPLES_DOC = "the directories listed under FILES"


def epilog(examples_dir=None):
    from qos_hooks.core import examples
    d = examples_dir or examples.directory()
    if d is None:
        return EPILOG % {"examples": EXAMPLES_DOC, "conf": "EXAMPLES/qos-hooks.conf",
                         "xml": "EXAMPLES/ovirt-guest.xml"}
    return EPILOG % {"examples": d, "conf": os.path.join(d, examples.CONFIG),
                     "xml": os.path.join(d, examples.DOMAIN)}


DRY_RUN_HELP = """\
Show what the hooks would do to DOMAIN_XML, touching nothing: the rewritten
domain XML as a unified diff, then the plan: each step in words, the command
that makes it ("made by:") and the equivalent virsh / ovs-vsctl commands.

Who makes which step:
  [domxml] <bandwidth>, <iotune>, <cputune>, oVirt vcpuLimit: the VDSM hook
           before_vm_start (oVirt) or the libvirt qemu.d hook at migrate/restore
           rewrite the XML; on a defined or running domain,
           'qos-hooks set --persistent' / 'qos-hooks set --live'.
  [ovsdb]  OVS QoS and policing: 'qos-hooks apply' (OVSDB steps only, no
           --profile), the VDSM hook after_vm_start, the libvirt qemu.d hook at
           'started', or 'qos-hooks set --live'.
With --ovsdb the OVS steps are computed against the real OVSDB contents (read
only)."""


def _positive_int(text):
    if not text.isdigit() or not 1 <= int(text) <= 65536:
        raise argparse.ArgumentTypeError("%r is not a CPU count (allowed: 1..65536)" % text)
    return int(text)


def _common_config(p):
    p.add_argument("--config", metavar="FILE",
                   help="policy file (default: $QOS_HOOKS_CONFIG or "
                        "/etc/qos-hooks/qos-hooks.conf)")


def ovsdb_remote(text):
    """--ovsdb: an OVSDB remote; a bare path means the unix socket at that path."""
    import re
    if text.startswith("/"):
        return "unix:" + text
    if not re.match(r"^(unix|tcp|ssl):.", text):
        raise argparse.ArgumentTypeError(
            "%r is not an OVSDB remote: write unix:PATH (or just the socket's /PATH), "
            "tcp:IP:PORT or ssl:IP:PORT, e.g. unix:/run/openvswitch/db.sock or "
            "tcp:127.0.0.1:6640" % text)
    return text


def _common_ovsdb(p):
    p.add_argument("--ovsdb", metavar="REMOTE", type=ovsdb_remote,
                   help="OVSDB remote, e.g. unix:/run/openvswitch/db.sock (or just the socket "
                        "path), tcp:127.0.0.1:6640 "
                        "(default: 'ovsdb' in [settings], else unix:/run/openvswitch/db.sock)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="bound on the whole OVSDB operation (default: 'ovsdb_timeout' in "
                        "[settings], else 5)")


# (name, handler "module:function", help, description, argument builder)
def _args_dry_run(p):
    _common_config(p)
    p.add_argument("--profile", metavar="NAME",
                   help="VM-level profile; overrides the VM's qos_profile custom property "
                        "(a vNIC's own qos_profile still wins for that vNIC)")
    p.add_argument("--output", choices=("diff", "xml", "json"), default="diff",
                   help="diff: unified diff + plan (default); xml: only the rewritten XML; "
                        "json: the plan as JSON")
    p.add_argument("--host-cpus", type=_positive_int, metavar="N",
                   help="the hypervisor's CPU count, for CPU caps computed from cpu.limit "
                        "(default: host_cpus in [settings], else this machine's CPU count)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the diff (auto: when stdout is a terminal and NO_COLOR is unset)")
    _common_ovsdb(p)
    p.add_argument("--example", action="store_true",
                   help="run the example shipped with this install (its qos-hooks.conf and "
                        "ovirt-guest.xml, unless --config / DOMAIN_XML name others)")
    p.add_argument("domain_xml", metavar="DOMAIN_XML", nargs="?",
                   help="domain XML file, or - for stdin (optional with --example)")


def _args_apply(p):
    _common_config(p)
    _common_ovsdb(p)
    p.add_argument("--no-verify", action="store_true",
                   help="do not read back and compare after applying")
    p.add_argument("--netns", metavar="NAME",
                   help="network namespace holding the port devices, for the kernel read-back "
                        "(default: this process's; tests run OVS in a namespace)")
    p.add_argument("domain_xml", metavar="DOMAIN_XML",
                   help="live domain XML (with <target dev='vnetN'/>) or one <interface>; "
                        "interfaces without a target dev are found by MAC; - for stdin")


def _args_clear(p):
    _common_config(p)
    _common_ovsdb(p)
    p.add_argument("--libvirt-leftovers", action="store_true",
                   help="also remove QoS/Queue rows libvirt tagged with this domain's uuid "
                        "(external_ids:vm-id) that no Port uses (libvirt < 10.3 leaks them)")
    p.add_argument("--interface-only", action="store_true",
                   help="clear only the interfaces in DOMAIN_XML (by MAC / target dev), "
                        "not everything owned for the domain's uuid (hot-unplug)")
    p.add_argument("domain_xml", metavar="DOMAIN_XML",
                   help="domain XML (or one <interface>) whose OVS QoS to remove; - for stdin")


def _args_gc(p):
    _common_config(p)
    _common_ovsdb(p)
    p.add_argument("--dry-run", action="store_true", help="print what would be removed")
    p.add_argument("--libvirt-leftovers", action="store_true",
                   help="also remove QoS/Queue rows tagged by libvirt (external_ids:vm-id) "
                        "that no Port uses: libvirt < 10.3 leaves them behind")


def _args_status(p):
    _common_config(p)
    _common_ovsdb(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--netns", metavar="NAME",
                   help="network namespace holding the port and tap devices, for the kernel "
                        "read-back (default: this process's; tests run OVS in a namespace)")
    p.add_argument("--connect", metavar="URI", default=None,
                   help="libvirt URI for the view without Open vSwitch (default: "
                        "$LIBVIRT_DEFAULT_URI, else qemu:///system; read-only)")
    p.add_argument("domain_xml", metavar="DOMAIN_XML", nargs="?",
                   help="compare against this domain's desired QoS, OVS ports and the tc "
                        "libvirt put on its other taps (Linux bridge) (default: every port "
                        "that carries qos-hooks rows)")


def _args_resync(p):
    _common_config(p)
    _common_ovsdb(p)


def _args_set(p):
    _common_config(p)
    _common_ovsdb(p)
    p.add_argument("--domain", required=True, metavar="NAME", help="running domain name or UUID")
    p.add_argument("--profile", metavar="NAME", help="profile to apply (default: the "
                   "domain's qos_profile / default_profile)")
    p.add_argument("--connect", metavar="URI", default=None,
                   help="libvirt URI (default: qemu:///system)")
    p.add_argument("--live", action="store_true", help="change the running domain")
    p.add_argument("--persistent", "--config-xml", dest="persistent", action="store_true",
                   help="change the persistent definition (virsh's --config)")
    p.add_argument("--store-profile", action="store_true",
                   help="also record --profile in the domain's metadata "
                        "(<qos-hooks:qos profile=NAME/>): 'qos-hooks agent' applies it at "
                        "every start")


def _args_agent(p):
    _common_config(p)
    _common_ovsdb(p)
    p.add_argument("--connect", metavar="URI", default=None,
                   help="libvirt URI (default: qemu:///system)")
    p.add_argument("--interval", type=float, metavar="SECONDS",
                   help="full reconcile period, the safety net (default: 300)")
    p.add_argument("--debounce", type=float, metavar="SECONDS",
                   help="quiet time that ends a burst of events (default: 0.1)")
    p.add_argument("--netns", metavar="NAME",
                   help="network namespace of the port devices, for the kernel read-back")
    p.add_argument("--metrics", metavar="ADDR:PORT|off", default=None,
                   help="serve /metrics (per-vNIC metrics and the agent's own health, "
                        "docs/observability.md) on this address (default: 127.0.0.1:10144; "
                        "'off': none; needs prometheus_client)")


def _args_check(p):
    _common_config(p)
    p.add_argument("--json", action="store_true",
                   help="one JSON object on stdout: the profiles when valid, the error "
                        "(path, line, profile, key, value, allowed) when not")


def _install_args(verb):
    def build(p):
        p.add_argument("--vdsm", action="store_true",
                       help="%s the VDSM hooks, root helper and sudoers drop-in" % verb)
        p.add_argument("--libvirt", action="store_true",
                       help="%s the libvirt qemu.d hook" % verb)
        p.add_argument("--root", metavar="DIR", default="/",
                       help="%s below DIR (default: /)" % verb)
    return build


def _args_observe(p):
    # qos-hooks metrics / top (qos_hooks.observe.metrics, qos_hooks.cli.top): where to read
    _common_config(p)
    _common_ovsdb(p)
    p.add_argument("--netns", metavar="NAME",
                   help="network namespace holding the port and tap devices (default: this "
                        "process's)")
    p.add_argument("--connect", metavar="URI", default=None,
                   help="libvirt URI for domain names and Linux-bridge taps, read-only "
                        "(default: qemu:///system)")
    p.add_argument("--domain-xml", metavar="FILE", action="append",
                   help="use this live domain XML instead of asking libvirt (repeatable)")


def _args_metrics(p):
    _args_observe(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--listen", metavar="ADDR:PORT", nargs="?", const="127.0.0.1:10144",
                     help="serve /metrics over HTTP (default address 127.0.0.1:10144)")
    out.add_argument("--textfile", metavar="PATH",
                     help="write the node_exporter textfile-collector format to PATH "
                          "atomically (temporary file + rename in the same directory)")


def _args_top(p):
    _args_observe(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="refresh interval (default: 1)")
    p.add_argument("--sort", default="percent",
                   choices=("domain", "vnic", "rate_in", "rate_out", "percent", "drops"),
                   help="initial sort key (default: percent of limit); keys d n i o p x "
                        "change it live")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")


COMMANDS = (
    ("dry-run", "qos_hooks.cli.dryrun:main", "show the rewritten XML and the plan; touch nothing",
     DRY_RUN_HELP, _args_dry_run),
    ("apply", "qos_hooks.cli.ovs_commands:apply_main",
     "apply a domain's <bandwidth> to Open vSwitch, then verify",
     "Translate each OVS-attached interface's <bandwidth> into OVSDB settings in one "
     "transaction (VM outbound: Interface ingress_policing_rate/burst; VM inbound: a "
     "linux-htb QoS owned by qos-hooks), then read back OVSDB and the kernel.", _args_apply),
    ("clear", "qos_hooks.cli.ovs_commands:clear_main",
     "remove the OVS QoS qos-hooks created for a domain",
     "Remove the OVS QoS rows and policing qos-hooks set for the domain's interfaces. "
     "Rows created by libvirt or Neutron are never touched.", _args_clear),
    ("gc", "qos_hooks.cli.ovs_commands:gc_main", "remove orphaned QoS rows",
     "Remove QoS/Queue rows owned by qos-hooks whose port no longer exists.", _args_gc),
    ("status", "qos_hooks.cli.status:status_main",
     "desired versus actual QoS per port; non-zero on drift",
     "For every port: desired QoS, what OVSDB holds, what the kernel holds; drift is "
     "marked and makes the exit code 7. With DOMAIN_XML, the domain's taps that are not "
     "on Open vSwitch (Linux bridge) are compared too: the tc htb and ingress qdisc "
     "libvirt puts on them. A domain without OVS interfaces needs no OVSDB. On a host "
     "without Open vSwitch (no OVSDB socket, no --ovsdb) the host-wide view is the tc "
     "libvirt put on the taps of the running domains, read through the libvirt API "
     "(--connect); exit 0 unless something drifted. --json always prints one document, "
     "with 'error' and 'exit_code' in it when the command failed.", _args_status),
    ("metrics", "qos_hooks.observe.metrics:metrics_main",
     "per-vNIC QoS metrics for Prometheus (serve, textfile or stdout)",
     "Collect per-vNIC limits, traffic, limiter drops and drift (OVSDB, netlink, libvirt) "
     "and host network queues. --listen serves /metrics; --textfile writes the "
     "node_exporter textfile format atomically; without either, print once. Metric "
     "reference: docs/observability.md.", _args_metrics),
    ("top", "qos_hooks.cli.top:top_main", "live per-vNIC view: limits, rates, drops, drift",
     "One line per vNIC refreshed every second: configured average in/out, measured rate "
     "in/out, percent of the limit, limiter drops per second, DRIFT. Keys d n i o p x sort, "
     "q quits; --once / --json print one snapshot.", _args_top),
    ("resync", "qos_hooks.cli.ovs_commands:resync_main",
     "re-apply remembered host network QoS on OVS (after an ovs-vswitchd restart)",
     "Re-apply the host network QoS that the last setupNetworks left on the OVS switch "
     "type (queues on the uplink and the OpenFlow flows that steer each network into its "
     "queue). ovs-vswitchd keeps OpenFlow flows in memory only, so a restart loses them: "
     "'status' then shows DRIFT for those networks and this command repairs it.",
     _args_resync),
    ("set", "qos_hooks.virt.live:set_main", "apply a profile to a running domain via libvirt",
     "Apply a profile to a running domain through the libvirt API "
     "(setInterfaceParameters, setBlockIoTune, setSchedulerParametersFlags), then the "
     "OVS backend for OVS ports.", _args_set),
    ("check", "qos_hooks.cli.check:main", "validate a policy file; exit 3 when it is invalid",
     "Validate the policy file without a domain, with the parser the hooks use: every "
     "section and key, every value in range, default_profile naming an existing profile, "
     "and the host.* keys of every profile as a valid set of curves. A file the hooks "
     "cannot read makes every hook point with on_error=fail fail (by default every VM "
     "start, NIC hotplug, vNIC update and setupNetworks), so run this before swapping a "
     "new policy in. Exit 0 when valid, 3 with FILE:LINE: profile, key, value and the "
     "allowed range when not: one line for each section's first problem, all in one run.",
     _args_check),
    ("agent", "qos_hooks.agent.daemon:main",
     "keep every VM's QoS true between hook calls (optional daemon)",
     "Watch libvirt domain events and OVSDB; re-apply QoS after a NIC hotplug, a "
     "domiftune, a domain start (profile from the domain's metadata or default_profile) "
     "and an ovs-vswitchd restart. Run by qos-hooks-agent.service; see docs/agent.md.",
     _args_agent),
    ("install", "qos_hooks.cli.install:install_main", "install hooks into VDSM/libvirt directories",
     "Install the same files, modes and sudoers drop-in as the RPMs.", _install_args("install")),
    ("uninstall", "qos_hooks.cli.install:uninstall_main", "remove what 'install' installed",
     "Remove the hook files and sudoers drop-in that 'install' put in place.",
     _install_args("remove")),
)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _SubParser(argparse.ArgumentParser):
    """A subcommand's parser: usage errors that come from a habit get a hint."""

    def error(self, message):
        if self.prog.endswith(" set") and "--config" in message:
            message += ("; note: in qos-hooks --config FILE is the policy file "
                        "(qos-hooks.conf); virsh's --config (change the persistent "
                        "definition) is --persistent here")
        super().error(message)


def build_parser(examples_dir=None, for_manpage=False):
    """The whole CLI.  ``for_manpage``: name the examples' documented install
    locations instead of this install's (the committed man page is one file)."""
    parser = argparse.ArgumentParser(
        prog="qos-hooks",
        description="Quality of service for libvirt and oVirt VMs: network bandwidth, "
                    "disk I/O and CPU caps, applied on Linux bridges and Open vSwitch.",
        epilog=(EPILOG % {"examples": EXAMPLES_DOC, "conf": "EXAMPLES/qos-hooks.conf",
                          "xml": "EXAMPLES/ovirt-guest.xml"}) if for_manpage
        else epilog(examples_dir),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="qos-hooks " + __version__)
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                        help="log verbosity on stderr (default: $QOS_HOOKS_LOG_LEVEL or INFO); "
                             "also accepted after the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubParser)
    sub.required = True
    for name, handler, short, desc, builder in COMMANDS:
        p = sub.add_parser(name, help=short, description=desc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        builder(p)
        # the same option after the command; SUPPRESS keeps a value given before it
        p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                       default=argparse.SUPPRESS,
                       help="log verbosity on stderr (as before the command)")
        p.set_defaults(handler=handler)
    return parser


def _subparser(parser, name):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _resolve(handler):
    mod, func = handler.split(":")
    return getattr(importlib.import_module(mod), func)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dry-run" and args.domain_xml is None and not args.example:
        from qos_hooks.core import examples
        d = examples.directory()
        _subparser(parser, "dry-run").error(
            "DOMAIN_XML is required (a file, or - for stdin); 'qos-hooks dry-run --example' "
            "runs the shipped example%s" % (" (%s)" % d if d else ""))
    from qos_hooks.core import log
    logger = log.setup({"cmd": args.command}, level=args.log_level)
    try:
        return _resolve(args.handler)(args) or 0
    except QosHooksError as e:
        logger.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (ImportError, AttributeError) as e:
        if "qos_hooks" in str(e):
            logger.error("command %r is not available in this build: %s", args.command, e)
            return EXIT_USAGE
        logger.exception("internal error")
        return EXIT_INTERNAL
    except Exception:
        logger.exception("internal error (please report this with the traceback)")
        return EXIT_INTERNAL


def run():
    """The ``qos-hooks`` command: main(), then leave without the interpreter's
    teardown (qos_hooks.core.shutdown.exit_now: output flushed first)."""
    from qos_hooks.core.shutdown import exit_now
    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
