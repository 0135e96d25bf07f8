"""``qos-hooks status``: the host-wide view, with or without Open vSwitch.

The OVS view (every port carrying qos-hooks rows, host networks, and with
DOMAIN_XML that domain's taps) is qos_hooks.cli.ovs_commands.status_main.  This
module decides which view a host gets and keeps ``--json`` honest:

* no ``--ovsdb``, no DOMAIN_XML, and the configured OVSDB remote is a unix
  socket that does not exist: this host has no Open vSwitch.  That is not an
  error: the view is the tc that libvirt puts on the taps of the running
  domains (qos_hooks.kernel.tap_status), read through the libvirt API (read-only
  connection, ``--connect`` or qemu:///system), plus host networks.  Exit 0
  unless something drifted (7).  Without libvirt (no binding, no daemon) the
  output says so, and the exit code stays 0.
* ``--json`` always prints one JSON document, also when the command fails:
  then it holds ``error`` and ``exit_code`` (the same error goes to stderr and
  sets the exit code).
"""

import json
import os
import sys

from qos_hooks.core import policy
from qos_hooks.core.errors import EXIT_DRIFT, EXIT_OK, QosHooksError

DEFAULT_URI = "qemu:///system"


def _no_ovs_socket(args, config):
    """The unix socket path when the OVS view is impossible because there is no
    OVS on this host; None when the OVS view applies."""
    if getattr(args, "ovsdb", None) or getattr(args, "domain_xml", None):
        return None
    remote = config.settings.ovsdb
    if remote.startswith("unix:") and not os.path.exists(remote[len("unix:"):]):
        return remote[len("unix:"):]
    return None


def libvirt_tap_view(uri, netns=None):
    """(domains, error): per running domain its tap statuses, through libvirt."""
    from qos_hooks.core.domxml import DomainDoc
    from qos_hooks.kernel import tap_status
    try:
        import libvirt
    except ImportError:
        return [], ("the libvirt Python binding is not installed (EL: python3-libvirt; "
                    "pip: libvirt-python)")
    try:
        libvirt.registerErrorHandler(lambda *_: None, None)
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as e:
        return [], "cannot connect to libvirt at %s: %s" % (uri, e.get_error_message())
    out = []
    try:
        for dom in sorted(conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE),
                          key=lambda d: d.name()):
            try:
                xml = dom.XMLDesc(0)
            except libvirt.libvirtError:
                continue  # went away meanwhile
            doc = DomainDoc(xml.encode("utf-8"), "libvirt:%s" % dom.name())
            checks = tap_status.interface_checks(doc.interfaces())
            if checks:
                out.append((dom.name(), dom.UUIDString(), tap_status.status(checks, netns)))
    finally:
        conn.close()
    return out, None


def no_ovs_status(args, config, socket_path):
    from qos_hooks.hostnet import ovs as hostnet_ovs
    from qos_hooks.kernel import tap_status
    netns = getattr(args, "netns", None)
    uri = getattr(args, "connect", None) or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI
    domains, lv_error = libvirt_tap_view(uri, netns)
    host_lines, host_json, host_drift = hostnet_ovs.status_section(
        config.settings.ovsdb, config.settings.ovsdb_timeout, netns=netns)
    tap_drift = any(t.drift for _, _, taps in domains for t in taps)
    drift = tap_drift or host_drift
    if args.json:
        doc = {"ovs": {"present": False, "remote": config.settings.ovsdb,
                       "reason": "no OVSDB socket at %s" % socket_path},
               "ports": [], "problems": [],
               "libvirt": {"uri": uri, "error": lv_error},
               "domains": [{"name": n, "uuid": u, "tap_ports": [t.to_dict() for t in taps]}
                           for n, u, taps in domains],
               "host_networks": host_json, "drift": drift}
        sys.stdout.write(json.dumps(doc, indent=2, default=list) + "\n")
    else:
        w = sys.stdout.write
        w("Open vSwitch: not on this host (no OVSDB socket at %s): no OVS port to check "
          "(--ovsdb REMOTE reads another)\n" % socket_path)
        if lv_error:
            w("libvirt: %s: Linux bridge taps not checked\n" % lv_error)
        elif not domains:
            w("libvirt %s: no running domain has <bandwidth> on a tap\n" % uri)
        for name, uuid, taps in domains:
            w("domain %s (%s):\n" % (name, uuid))
            for line in tap_status.render(taps):
                w("  " + line + "\n")
        for line in host_lines:
            w(line + "\n")
    return EXIT_DRIFT if drift else EXIT_OK


def status_main(args):
    from qos_hooks.core import log
    try:
        config = policy.load_config(args.config, missing_ok=True)
        sock = _no_ovs_socket(args, config)
        if sock is not None:
            return no_ovs_status(args, config, sock)
        from qos_hooks.cli import ovs_commands
        return ovs_commands.status_main(args)
    except QosHooksError as e:
        if not args.json:
            raise
        log.get().error("%s", e)
        sys.stdout.write(json.dumps({"error": str(e), "exit_code": e.exit_code,
                                     "drift": None}, indent=2) + "\n")
        return e.exit_code
