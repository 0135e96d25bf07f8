"""VDSM hook runtime: what each hook executable in hooks/<hook_point>/ calls.

Protocol (FIELD_NOTES section 3, vdsm lib/vdsm/common/hooks.py): every
executable in /usr/libexec/vdsm/hooks/<hook_point>/ runs in file-name order,
with no arguments, the daemon's environment plus custom properties as
environment variables; domain-XML hooks rewrite the file named by
``$_hook_domxml`` in place.  Exit 0 = ok, 1 = error, 2 = error and skip the
remaining hooks; any non-zero exit of a before_vm_start hook aborts the VM
start.  stderr is logged by VDSM, stdout is discarded.  Which exit code a
failure uses is FAIL_EXIT below (docs/hooks.md, "Which message reaches the
engine").

This module must stay cheap to import: before_vm_start runs synchronously in
every VM start (bench/bench_before_vm_start.py measures it).  The OVS, tc and
libvirt backends are imported only by the hook points that use them.
"""

import os
import sys

from qos_hooks.hooks import runner
from qos_hooks.core import log as _log
from qos_hooks.core import policy
from qos_hooks.core.errors import QosHooksError
from qos_hooks.hooks.runner import FAIL

# What a failure does when [settings] on_error.<hook_point> is not set.
DEFAULT_ON_ERROR = {
    # A broken policy or XML must not start a VM without the QoS it was
    # promised: fail closed (VDSM aborts the start and shows our message).
    "before_vm_start": FAIL,
    # Same for a vNIC plugged or updated without its QoS: VDSM aborts the
    # hotplug / device update and the old state stays.
    "before_nic_hotplug": FAIL,
    "before_update_device": FAIL,
    # after_* hooks: the VM already runs; VDSM only logs their failures (at
    # INFO, like a success: ``rc=1 err=...``), so the default is to log and
    # exit 0 (on_error.<hook> = fail makes them exit 1).
}

# The exit code of a failure under on_error=fail.  VDSM's HookError carries
# the stderr of the LAST script it ran (lib/vdsm/common/hooks.py
# _runHooksDir: ``raise exception.HookError(err)``; before_vm_start:
# ``HookError(errors[-1])``, the last script that failed).  Exit 1 lets the
# scripts after ours run -- ovirt-provider-ovn ships a before_nic_hotplug
# hook sorting after 50_* -- and the engine then shows their (empty) stderr:
# ``Hook Error: (b'',)``.  Exit 2 stops the loop right after us, so our message
# is the one reported.  VDSM aborts the operation on ANY error at these
# points, so the scripts skipped by exit 2 would have run for nothing.
# after_* points: VDSM ignores the errors (raiseError=False) and reports
# nothing, so exit 1 there: the scripts after ours still run.
FAIL_EXIT = {
    "before_vm_start": 2,
    "before_nic_hotplug": 2,
    "before_update_device": 2,
}

# Hook points that validate QoS on its way to VDSM: with on_error=continue a
# failure there removes the QoS the hook could not validate ("carry on
# without QoS") instead of passing it through (drop_unvalidated_qos).
VALIDATING = ("before_nic_hotplug", "before_update_device")

# Every VDSM hook point this package ships an executable for.
HOOK_POINTS = (
    "before_vm_start", "after_vm_start", "after_vm_migrate_destination",
    "before_nic_hotplug", "after_nic_hotplug", "after_nic_hotunplug",
    "before_update_device", "after_update_device", "after_vm_destroy",
)

# Slack on top of the OVSDB bound ([settings] ovsdb_timeout) for process
# start, sudo and the helper's own start: a hook never runs longer than
# ovsdb_timeout + HOOK_MARGIN seconds (watchdog below), whatever OVSDB does.
HOOK_MARGIN = 4.0


def _read_doc(env, allow_interface=False):
    from qos_hooks.core.domxml import DomainDoc, read_limited
    path = env.get("_hook_domxml")
    if not path:
        raise QosHooksError("$_hook_domxml is not set: not run by VDSM?")
    with open(path, "rb") as f:
        data = read_limited(f, path)
    return path, DomainDoc(data, path, allow_interface=allow_interface)


def _rewrite_file(path, doc, config, selection, logger):
    runner.rewrite_logged(doc, config, selection, logger)
    if doc.changed:
        runner.replace_hook_file(path, doc.serialize())
    return 0


def before_vm_start(env, config, logger, early=None):
    path, doc = _read_doc(env)
    selection = policy.Selection(env_vm_profile=env.get(policy.PROFILE_PROPERTY) or None)
    return _rewrite_file(path, doc, config, selection, logger)


def _rewrite_device(env, config, logger, early=None):
    """before_nic_hotplug / before_update_device: policy on one <interface>.

    The vNIC's custom properties are in the environment here.  VDSM sets the
    device's properties first and the VM's second (lib/vdsm/common/hooks.py,
    _runHooksDir), so when the VM ALSO has ``qos_profile`` the VM's value is
    what the hook sees: set the profile on the vNIC only, or on the VM only.
    """
    path, doc = _read_doc(env, allow_interface=True)
    if not doc.is_interface_only:
        logger.info("not an <interface> device: nothing to do")
        return 0
    selection = policy.Selection(env_nic_profile=env.get(policy.PROFILE_PROPERTY) or None)
    return _rewrite_file(path, doc, config, selection, logger)


def _ovs(env, config, logger, action, allow_interface, early):
    """Apply or clear the OVS QoS of the OVS-attached interfaces in the XML
    (``early``: the root helper the executable started first, or None)."""
    _, doc = _read_doc(env, allow_interface=allow_interface)
    return runner.ovs_for_doc(doc, action, config, env, logger, vm_id=env.get("vmId"),
                              early=early)


def after_vm_start(env, config, logger, early=None):
    # live XML: <target dev='vnetN'/> is there (FIELD_NOTES section 3)
    return _ovs(env, config, logger, "apply", allow_interface=False, early=early)


def after_nic_hotplug(env, config, logger, early=None):
    # pre-attach <interface>: no target dev; the backend finds the port by
    # external_ids:attached-mac
    return _ovs(env, config, logger, "apply", allow_interface=True, early=early)


def after_update_device(env, config, logger, early=None):
    # libvirt already pointed the port at a QoS row of its own for the new
    # <bandwidth>; apply replaces it and destroys our previous, now
    # unreferenced, row in the same transaction
    return _ovs(env, config, logger, "apply", allow_interface=True, early=early)


def after_nic_hotunplug(env, config, logger, early=None):
    return _ovs(env, config, logger, "clear", allow_interface=True, early=early)


def after_vm_destroy(env, config, logger, early=None):
    # libvirt < 10.3 leaves its own QoS/Queue rows behind (FIELD_NOTES 2):
    # clear clears them for this domain too, unless clean_libvirt_leftovers = no
    return _ovs(env, config, logger, "clear", allow_interface=False, early=early)


def drop_unvalidated_qos(env, logger):
    """on_error=continue at a validating hook point: take ``<bandwidth>`` off
    the ``<interface>`` in the hook file (atomically), and say so.  A file
    that cannot be read or parsed is left as it is (logged)."""
    from qos_hooks.core.domxml import DomainDoc, read_limited
    path = env.get("_hook_domxml")
    try:
        with open(path, "rb") as f:
            doc = DomainDoc(read_limited(f, path), path, allow_interface=True)
        removed = doc.remove_bandwidth()
        if removed:
            runner.replace_hook_file(path, doc.serialize())
    except (OSError, TypeError, QosHooksError) as e:
        logger.error("on_error=continue: could not remove the unvalidated QoS from %s: %s; "
                     "the file goes on unchanged", path, e)
        return
    for label in removed:
        logger.warning("on_error=continue: removed the <bandwidth> of %s, which could not "
                       "be validated: the vNIC carries on without QoS", label)


HANDLERS = {
    "before_vm_start": before_vm_start,
    "after_vm_start": after_vm_start,
    "after_vm_migrate_destination": after_vm_start,
    "before_nic_hotplug": _rewrite_device,
    "after_nic_hotplug": after_nic_hotplug,
    "after_nic_hotunplug": after_nic_hotunplug,
    "before_update_device": _rewrite_device,
    "after_update_device": after_update_device,
    "after_vm_destroy": after_vm_destroy,
}


def vdsm_main(hook_point, environ=None, early=None):
    """Entry point of a VDSM hook executable; returns the process exit code.

    ``early``: the root helper the executable started before importing this
    module (qos_hooks.priv.client.prestart), handed the request if there is
    one and released (stdin closed empty) otherwise."""
    env = os.environ if environ is None else environ
    logger = _log.setup({"hook": hook_point, "vm": env.get("vmId")})

    def on_failure(code):
        if code == 0 and hook_point in VALIDATING:
            drop_unvalidated_qos(env, logger)
    try:
        return runner.run(hook_point,
                          lambda config: HANDLERS[hook_point](env, config, logger, early=early),
                          environ=env, logger=logger, defaults=DEFAULT_ON_ERROR,
                          margin=HOOK_MARGIN, on_failure=on_failure, fail_exit=FAIL_EXIT)
    finally:
        if early is not None:
            early.release()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(vdsm_main(sys.argv[1]))
