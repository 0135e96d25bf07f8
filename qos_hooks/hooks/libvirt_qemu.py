"""The libvirt qemu hook: ``/etc/libvirt/hooks/qemu.d/50_qos_hooks``.

libvirt (since 6.5) runs every executable in ``/etc/libvirt/hooks/qemu.d/``
in sorted order, as root, with the arguments ``<domain> <operation>
<sub-operation> <extra>`` and the domain XML on stdin (libvirt
docs/hooks.rst; src/util/virhook.c).  This file never replaces
``/etc/libvirt/hooks/qemu``, which VDSM owns on oVirt hosts.

What each operation does:

==================  ===========================================================
started/begin       apply OVS QoS from the XML on stdin (taps exist; libvirt
reconnect/begin     has already written its own QoS for ``<bandwidth>``)
release/end         clear OVS QoS for the domain, including libvirt 9.0's own
stopped/end         leftover QoS/Queue rows (libvirt < 10.3 never removes them)
migrate/begin       rewrite the incoming XML by policy; print it on stdout
                    only if that changed it
restore/begin       same as migrate
anything else       exit 0, print nothing
==================  ===========================================================

Only migrate and restore may print XML: libvirt reads stdout only there.
This hook prints the whole document when the policy changed it, and NOTHING
when it did not.  Any non-empty output makes libvirt parse it, check its ABI
against the original and mark the domain tainted "hook-script" (libvirt
src/qemu/qemu_migration.c qemuMigrationDstPrepareAny sets taint_hook, then
priv->hookRun, which qemuDomainObjCheckTaint turns into the taint; the
restore path does the same, measured on libvirt 9.0 by
tests/hooks/test_libvirt_e2e.py), even when the bytes are the ones libvirt passed
in.  Empty output means "use the XML as it was" (qemuMigrationDstPrepareAny:
"Migrate hook filter returned nothing"), and with several scripts in qemu.d
an empty output leaves an earlier script's output in place: virHookCall
(src/util/virhook.c) replaces its ``*output`` only when a script succeeded
and printed something, and feeds the next script the last non-empty output.

The hook never calls libvirt (libvirt waits for it: deadlock), imports no
libvirt module, and never runs longer than ``ovsdb_timeout`` +
``HOOK_MARGIN`` seconds: a watchdog thread ends it by the failure policy.

Failure policy (``[settings] on_error.qemu.<operation>`` = fail|continue):
a non-zero exit at ``started`` makes libvirt stop the domain it just
started (a normal start, a restore, or the destination of an incoming
migration), at ``reconnect`` it kills the running domain, at ``migrate`` it
refuses the incoming migration, at ``restore`` it aborts the restore; the
exit of ``stopped`` and ``release`` is ignored (docs/hooks.md cites the
libvirt functions).  Defaults: migrate and restore fail closed (an incoming
domain is not accepted with a policy we cannot apply); started, reconnect,
release and stopped continue (log the error, exit 0) so an OVSDB outage
never kills or blocks a domain.  ``continue`` at migrate/restore prints
nothing: libvirt goes on with the XML as it was.
"""

import os
import sys

from qos_hooks.hooks import runner
from qos_hooks.core import log as _log
from qos_hooks.core import policy
from qos_hooks.hooks.runner import FAIL

# Slack on top of ovsdb_timeout: a qemu hook never runs longer than
# ovsdb_timeout + HOOK_MARGIN seconds (runner.start_watchdog).
HOOK_MARGIN = 3.0

APPLY_OPS = ("started", "reconnect")
CLEAR_OPS = ("release", "stopped")
REWRITE_OPS = ("migrate", "restore")

DEFAULT_ON_ERROR = {
    "qemu.migrate": FAIL,
    "qemu.restore": FAIL,
}


def main(argv=None, stdin=None, stdout=None, environ=None):
    """Entry point of libvirt-hooks/qemu.d/50_qos_hooks; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    env = os.environ if environ is None else environ
    domain = argv[0] if argv else None
    op = argv[1] if len(argv) > 1 else None
    logger = _log.setup({"hook": "qemu", "domain": domain, "op": op})
    if len(argv) < 2:
        logger.error("usage: 50_qos_hooks DOMAIN OPERATION SUB-OPERATION EXTRA "
                     "(run by libvirtd, domain XML on stdin)")
        return 1
    if op not in APPLY_OPS + CLEAR_OPS + REWRITE_OPS:
        return 0  # prepare, start, attach...: nothing to do, read nothing
    from qos_hooks.core.domxml import DomainDoc, read_limited
    from qos_hooks.core.errors import QosHooksError
    source = "<stdin: %s %s>" % (domain, op)
    # read stdin first, so that a failure anywhere later can still pass the
    # original XML on (the next qemu.d script reads this one's output).
    # Bounded from the first byte: libvirtd writes the XML and closes stdin,
    # but it waits for its hooks, so a stdin that stays open must not hold
    # it for ever (the default bound: the config is not read yet)
    reading = runner.start_watchdog("qemu." + op, None, logger, HOOK_MARGIN,
                                    DEFAULT_ON_ERROR)
    try:
        data, read_error = read_limited(stdin, source), None
    except QosHooksError as e:
        data, read_error = None, e
    finally:
        reading.cancel()

    def handle(config):
        if read_error is not None:
            raise read_error
        doc = DomainDoc(data, source)
        if op in REWRITE_OPS:
            runner.rewrite_logged(doc, config, policy.Selection(), logger)
            out = doc.serialize()
            if out == data:
                # nothing changed: print nothing, so libvirt keeps its XML
                # (or an earlier qemu.d script's output) and taints nothing
                logger.debug("policy changed nothing: no output")
                return 0
            stdout.write(out)
            stdout.flush()
            return 0
        return runner.ovs_for_doc(doc, "apply" if op in APPLY_OPS else "clear",
                                  config, env, logger)

    # A failure with on_error=continue prints nothing at migrate/restore
    # either: libvirt (and the next qemu.d script) carry on with the XML as it
    # was, and the domain is not tainted.
    return runner.run("qemu." + op, handle, environ=env, logger=logger,
                      defaults=DEFAULT_ON_ERROR, margin=HOOK_MARGIN)
