"""``qos-hooks dry-run``: the rewritten XML and the plan, with no writes anywhere."""

import difflib
import os
import sys

from qos_hooks.core.domxml import DomainDoc, read_limited
from qos_hooks.core.errors import InputError
from qos_hooks.core import policy
from qos_hooks.core.rewrite import rewrite


def read_input(path):
    """Read DOMAIN_XML (``-`` = stdin) as bytes; name the file in any error."""
    if path == "-":
        return read_limited(sys.stdin.buffer, "<stdin>"), "<stdin>"
    try:
        with open(path, "rb") as f:
            return read_limited(f, path), path
    except OSError as e:
        raise InputError("%s: cannot read: %s" % (path, e.strerror))


def _use_color(mode, stream):
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def unified_diff(before, after, name, color=False):
    a = before.decode("utf-8", "replace").splitlines(keepends=True)
    b = after.decode("utf-8", "replace").splitlines(keepends=True)
    out = []
    for line in difflib.unified_diff(a, b, "a/" + name, "b/" + name):
        if not line.endswith("\n"):
            line += "\n"
        if color:
            if line.startswith(("+++", "---")):
                line = "\033[1m%s\033[0m\n" % line.rstrip("\n")
            elif line.startswith("+"):
                line = "\033[32m%s\033[0m\n" % line.rstrip("\n")
            elif line.startswith("-"):
                line = "\033[31m%s\033[0m\n" % line.rstrip("\n")
            elif line.startswith("@@"):
                line = "\033[36m%s\033[0m\n" % line.rstrip("\n")
        out.append(line)
    return "".join(out)


def ovs_remote(args, config):
    """The OVSDB remote to read for the plan, or None to plan without reading."""
    if getattr(args, "ovsdb", None):
        return args.ovsdb
    remote = config.settings.ovsdb
    if remote.startswith("unix:") and not os.path.exists(remote[len("unix:"):]):
        return None
    return remote


def ovs_plan(doc, config, remote, timeout):
    """The OVS part of the plan (qos_hooks.ovs.backend.plan_domain), read-only."""
    from qos_hooks.ovs import backend as ovs_backend
    return ovs_backend.plan_domain(doc, config=config, remote=remote, timeout=timeout)


def _example_args(args):
    """--example: the shipped example's config and domain where none is given;
    without --example, DOMAIN_XML is required."""
    from qos_hooks.core import examples
    from qos_hooks.core.errors import UsageError
    if not getattr(args, "example", False):
        if args.domain_xml is None:
            d = examples.directory()
            raise UsageError("DOMAIN_XML is required (a domain XML file, or - for stdin); "
                             "'qos-hooks dry-run --example' runs the shipped example%s"
                             % (" from %s" % d if d else ""))
        return args.config, args.domain_xml
    d = examples.directory()
    if d is None:
        raise UsageError("--example: this install has no examples (looked in %s)"
                         % ", ".join(examples.candidates()))
    return (args.config or os.path.join(d, examples.CONFIG),
            args.domain_xml or os.path.join(d, examples.DOMAIN))


def build(args):
    """Everything dry-run shows: (doc, plan)."""
    config_path, domain_xml = _example_args(args)
    config = policy.load_config(config_path)
    from qos_hooks.core import log
    log.apply_config_level(config.settings)
    data, source = read_input(domain_xml)
    doc = DomainDoc(data, source, allow_interface=True)
    selection = policy.Selection(cli_profile=args.profile)
    logger = log.get()
    if logger.isEnabledFor(10):  # DEBUG: how the profile was chosen
        meta = None if doc.is_interface_only else doc.vm_custom(policy.PROFILE_PROPERTY)
        for step in selection.steps(config, meta, [
                (i.label, doc.device_custom(i.mac, policy.PROFILE_PROPERTY))
                for i in doc.interfaces()]):
            logger.debug("profile selection: %s", step)
    plan = rewrite(doc, config, selection, host_cpus=getattr(args, "host_cpus", None),
                   host_cpus_source="--host-cpus")
    remote = ovs_remote(args, config)
    timeout = args.timeout or config.settings.ovsdb_timeout
    try:
        plan = plan + ovs_plan(doc, config, remote, timeout)
    except ImportError as e:
        if "ovs_plan" not in str(e):
            raise
    return doc, plan


def main(args):
    doc, plan = build(args)
    out = sys.stdout
    if args.output == "xml":
        out.buffer.write(doc.serialize()) if hasattr(out, "buffer") else out.write(
            doc.serialize().decode("utf-8"))
        return 0
    if args.output == "json":
        out.write(plan.to_json() + "\n")
        return 0
    diff = ""
    if doc.changed:
        diff = unified_diff(doc.canonical_original(), doc.serialize(),
                            os.path.basename(doc.source), _use_color(args.color, out))
    out.write(diff if diff else "domain XML: no changes\n")
    out.write("\n" + plan.render_text())
    return 0
