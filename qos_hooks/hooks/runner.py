"""What every hook executable shares: failure policy, time bound, logged rewrite,
OVS apply/clear of a document.

Used by the VDSM VM hooks (qos_hooks.hooks.vdsm_vm), the VDSM network hooks
(qos_hooks.hooks.vdsm_network) and the libvirt qemu hook (qos_hooks.hooks.libvirt_qemu).  Cheap
to import: before_vm_start imports it on every VM start.

Failure policy: ``[settings] on_error`` / ``on_error.<key>`` = fail|continue,
where ``key`` is the VDSM hook point or ``qemu.<operation>``; each entry
module passes its own defaults.  ``continue`` logs and exits 0.  ``fail``
exits with the code the entry module maps ``key`` to in ``fail_exit`` (1 when
absent): the VDSM hooks exit 2 where VDSM aborts the operation, so that
VDSM reports OUR stderr (qos_hooks.hooks.vdsm_vm.FAIL_EXIT, docs/hooks.md).
"""

import errno
import os

from qos_hooks.core import policy
from qos_hooks.core.errors import QosHooksError

FAIL = "fail"
CONTINUE = "continue"


def failure_exit(key, config, logger, defaults, fail_exit=None):
    """The exit code for a failed hook ``key`` under the failure policy."""
    mode = defaults.get(key, CONTINUE)
    if config is not None:
        mode = config.settings.on_error_for(key, mode)
    if mode == FAIL:
        code = (fail_exit or {}).get(key, 1)
        logger.error("on_error=fail for %s: exiting %d", key, code)
        return code
    logger.warning("on_error=continue for %s: carrying on without QoS", key)
    return 0


def log_failure(exc, logger):
    if isinstance(exc, QosHooksError):
        logger.error("%s", exc)
    elif isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        logger.error("%s (permission denied: VM hooks run as user vdsm, network hooks "
                     "and the libvirt hook as root)", exc)
    else:
        logger.exception("internal error")


def start_watchdog(key, config, logger, margin, defaults, before_exit=None, fail_exit=None):
    """Bound the whole hook to ``ovsdb_timeout + margin`` seconds.

    A thread, so it fires even while the main thread is blocked in a system
    call (an OVSDB socket that never answers, a stuck helper); on expiry the
    process exits by the failure policy.  ``before_exit(code)`` runs first
    (the libvirt hook prints the unchanged XML there).
    """
    import threading
    bound = (config.settings.ovsdb_timeout if config is not None
             else policy.DEFAULT_OVSDB_TIMEOUT) + margin

    def expire():
        code = 1
        try:
            logger.error("%s exceeded its bound of %.1fs", key, bound)
            code = failure_exit(key, config, logger, defaults, fail_exit)
            if before_exit is not None:
                before_exit(code)
        finally:
            os._exit(code)
    t = threading.Timer(bound, expire)
    t.daemon = True
    t.start()
    return t


def run(key, handler, *, environ, logger, defaults, margin=None, on_failure=None,
        fail_exit=None):
    """Load the config, bound the run (when ``margin`` is given), call
    ``handler(config)``; any failure goes through the failure policy.

    ``on_failure(code)`` runs after a failure has been mapped to ``code``;
    ``fail_exit`` maps ``key`` to the exit code of ``on_error=fail`` (default 1).
    """
    config = None
    try:
        # the root side (network hooks, libvirt hook) refuses a config that
        # anyone but root can write (policy.check_trusted)
        config = policy.load_config(environ=environ, missing_ok=True,
                                    trusted=os.geteuid() == 0)
        if margin is not None:
            start_watchdog(key, config, logger, margin, defaults, before_exit=on_failure,
                           fail_exit=fail_exit)
        return handler(config) or 0
    except Exception as e:  # every failure goes through the on_error policy
        log_failure(e, logger)
        code = failure_exit(key, config, logger, defaults, fail_exit)
        if on_failure is not None:
            on_failure(code)
        return code


def replace_hook_file(path, data):
    """Replace the hook's data file (``$_hook_domxml``, ``$_hook_json``) with
    ``data``, atomically: a temporary file in the same directory, fsync,
    rename over (qos_hooks.core.fileio.write_atomic), keeping the file's mode and
    owner.  VDSM re-reads the file BY NAME after the scripts (vdsm
    lib/vdsm/common/hooks.py ``_runHooksDir``: ``open(data_filename)``), so
    the renamed file is what it reads; the next script gets it by name too.

    On failure (disk full, I/O error) the original is untouched and a
    QosHooksError is raised, so the hook fails by its failure policy."""
    from qos_hooks.core.fileio import write_atomic
    try:
        write_atomic(path, data)
    except OSError as e:
        raise QosHooksError("cannot write %s: %s (the file is unchanged)"
                            % (path, e.strerror or e))


def rewrite_logged(doc, config, selection, logger):
    """Apply the policy to ``doc``; log every warning and change; return the plan."""
    from qos_hooks.core.rewrite import rewrite
    plan = rewrite(doc, config, selection)
    for w in plan.warnings:
        logger.warning("%s", w)
    for op in plan.ops:
        logger.info("%s", op.describe())
    return plan


def ovs_for_doc(doc, action, config, environ, logger, vm_id=None, early=None):
    """Apply or clear the OVS QoS of the document's OVS-attached interfaces.

    A domain (or vNIC) with no interface on Open vSwitch never connects to
    OVSDB.  ``clear`` also removes libvirt < 10.3's leftover rows for the
    domain unless ``[settings] clean_libvirt_leftovers = no``.  ``early``: a
    root helper already started (qos_hooks.priv.client.prestart).
    """
    from qos_hooks.core import desired
    from qos_hooks.priv import client as privclient
    not_ovs = None
    if doc.is_interface_only:
        # VDSM's Interface.getXML() documents (update, unplug): vNICs are
        # found by MAC; a Linux bridge, or a host with no OVSDB socket, means
        # "not on OVS" without asking the root helper (qos_hooks.core.desired)
        from qos_hooks.ovs import ovsdb
        no_ovsdb = ovsdb.unix_socket_missing(config.settings.ovsdb)
        not_ovs = (lambda bridge: True) if no_ovsdb else ovsdb.linux_bridge
    dq = desired.domain_qos(doc, not_ovs_bridge=not_ovs)
    if dq.uuid is None and vm_id:
        dq = desired.DomainQos(uuid=vm_id, name=dq.name, interfaces=dq.interfaces)
    if not dq.interfaces:
        logger.debug("no interface on Open vSwitch: nothing to do")
        return 0
    if dq.uuid is None:
        raise QosHooksError("no domain UUID in the XML and no $vmId")
    logger.info("%s OVS QoS for %d interface(s): %s", action, len(dq.interfaces),
                ", ".join(i.label for i in dq.interfaces))
    if not privclient.use_helper(environ):
        # in process (root): this hook reaches only the configured remote
        # (no ssl module unless it is ssl:, ovsdb.load_library)
        from qos_hooks.ovs import backend as ovs_backend
        ovs_backend.load_library(config.settings.ovsdb)
    if action == "apply":
        privclient.ovs_apply(dq, config, environ, logger, early=early)
    else:
        privclient.ovs_clear(dq, config, environ, logger,
                             libvirt_leftovers=config.settings.clean_libvirt_leftovers,
                             early=early)
    return 0
