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
restore/begin       same as migrate
anything else       exit 0, print nothing
==================  ===========================================================

Only migrate and restore may print XML: libvirt reads stdout only there, and
treats empty output as "use the original XML" (qemu_migration.c,
qemuMigrationDstPrepareAny: "Migrate hook filter returned nothing").  With
several scripts in qemu.d one script's output feeds the next, so this hook
always prints the whole document, unchanged when the policy changes nothing.

The hook never calls libvirt (libvirt waits for it: deadlock), imports no
libvirt module, and never runs longer than ``ovsdb_timeout`` +
``HOOK_MARGIN`` seconds: a watchdog thread ends it by the failure policy.

Failure policy (``[settings] on_error.qemu.<operation>`` = fail|continue):
a non-zero exit at ``started`` makes libvirt stop the domain it just
started, at ``reconnect`` it kills the running domain, at ``migrate`` it
refuses the incoming migration.  Defaults: migrate and restore fail closed
(an incoming domain is not accepted with a policy we cannot apply); started,
reconnect, release and stopped continue (log the error, exit 0) so an OVSDB
outage never kills or blocks a domain.
"""

import os
import sys
import threading

from . import log as _log
from . import policy
from .errors import QosHooksError

FAIL = "fail"
CONTINUE = "continue"
HOOK_MARGIN = 3.0

APPLY_OPS = ("started", "reconnect")
CLEAR_OPS = ("release", "stopped")
REWRITE_OPS = ("migrate", "restore")

DEFAULT_ON_ERROR = {
    "qemu.migrate": FAIL,
    "qemu.restore": FAIL,
}


def _failure_exit(key, config, logger):
    mode = DEFAULT_ON_ERROR.get(key, CONTINUE)
    if config is not None:
        mode = config.settings.on_error_for(key, mode)
    if mode == FAIL:
        logger.error("on_error=fail for %s: exiting 1", key)
        return 1
    logger.warning("on_error=continue for %s: carrying on without QoS", key)
    return 0


def _watchdog(key, config, logger, stdout, passthrough):
    bound = (config.settings.ovsdb_timeout if config is not None
             else policy.DEFAULT_OVSDB_TIMEOUT) + HOOK_MARGIN

    def expire():
        code = 1
        try:
            logger.error("%s exceeded its bound of %.1fs", key, bound)
            code = _failure_exit(key, config, logger)
            if code == 0 and passthrough is not None:
                stdout.write(passthrough)
                stdout.flush()
        finally:
            os._exit(code)
    t = threading.Timer(bound, expire)
    t.daemon = True
    t.start()
    return t


def _ovs(action, data, config, logger, source):
    from .domxml import DomainDoc
    from . import desired
    from . import privclient
    doc = DomainDoc(data, source)
    dq = desired.domain_qos(doc)
    if not dq.interfaces:
        logger.debug("no interface on Open vSwitch: nothing to do")
        return
    logger.info("%s OVS QoS for %d interface(s): %s", action, len(dq.interfaces),
                ", ".join(i.label for i in dq.interfaces))
    if action == "apply":
        privclient.ovs_apply(dq, config, os.environ, logger)
    else:
        privclient.ovs_clear(dq, config, os.environ, logger,
                             libvirt_leftovers=config.settings.clean_libvirt_leftovers)


def _rewrite(data, config, logger, source):
    from .domxml import DomainDoc
    from .rewrite import rewrite
    doc = DomainDoc(data, source)
    plan = rewrite(doc, config, policy.Selection())
    for w in plan.warnings:
        logger.warning("%s", w)
    for op in plan.ops:
        logger.info("%s", op.describe())
    return doc.serialize()


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
    key = "qemu." + op
    config = None
    data = None
    try:
        data = stdin.read()
        config = policy.load_config(environ=env, missing_ok=True)
        _watchdog(key, config, logger, stdout, data if op in REWRITE_OPS else None)
        source = "<stdin: %s %s>" % (domain, op)
        if op in REWRITE_OPS:
            out = _rewrite(data, config, logger, source)
            stdout.write(out)
            stdout.flush()
        elif op in APPLY_OPS:
            _ovs("apply", data, config, logger, source)
        else:
            _ovs("clear", data, config, logger, source)
        return 0
    except Exception as e:
        if isinstance(e, QosHooksError):
            logger.error("%s", e)
        else:
            logger.exception("internal error")
        code = _failure_exit(key, config, logger)
        if code == 0 and op in REWRITE_OPS and data:
            stdout.write(data)  # unchanged: the next script and libvirt get the original
            stdout.flush()
        return code
