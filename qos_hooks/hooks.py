"""VDSM hook runtime: what each hook executable in hooks/<hook_point>/ calls.

Protocol (FIELD_NOTES section 3, vdsm lib/vdsm/common/hooks.py): every
executable in /usr/libexec/vdsm/hooks/<hook_point>/ runs in file-name order,
with no arguments, the daemon's environment plus custom properties as
environment variables; domain-XML hooks rewrite the file named by
``$_hook_domxml`` in place.  Exit 0 = ok, 1 = error, 2 = error and skip the
remaining hooks; any non-zero exit of a before_vm_start hook aborts the VM
start.  stderr is logged by VDSM, stdout is discarded.

This module must stay cheap to import: before_vm_start runs synchronously in
every VM start (bench/bench_before_vm_start.py measures it).  The OVS, tc and
libvirt backends are imported only by the hook points that use them.
"""

import os
import sys

from . import log as _log
from . import policy
from .errors import QosHooksError

FAIL = "fail"
CONTINUE = "continue"

# What a failure does when [settings] on_error.<hook_point> is not set.
DEFAULT_ON_ERROR = {
    # A broken policy or XML must not start a VM without the QoS it was
    # promised: fail closed (VDSM aborts the start and shows our message).
    "before_vm_start": FAIL,
}


def _write_in_place(path, data):
    """Rewrite the hook file keeping its inode, owner and mode (VDSM re-reads it)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def before_vm_start(env, config, logger):
    from .domxml import DomainDoc
    from .rewrite import rewrite

    path = env.get("_hook_domxml")
    if not path:
        raise QosHooksError("$_hook_domxml is not set: not run by VDSM?")
    with open(path, "rb") as f:
        data = f.read()
    doc = DomainDoc(data, path)
    selection = policy.Selection(env_vm_profile=env.get(policy.PROFILE_PROPERTY) or None)
    plan = rewrite(doc, config, selection)
    for w in plan.warnings:
        logger.warning("%s", w)
    for op in plan.ops:
        logger.info("%s", op.describe())
    if doc.changed:
        _write_in_place(path, doc.serialize())
    return 0


HANDLERS = {
    "before_vm_start": before_vm_start,
}


def vdsm_main(hook_point, environ=None):
    """Entry point of a VDSM hook executable; returns the process exit code."""
    env = os.environ if environ is None else environ
    logger = _log.setup({"hook": hook_point, "vm": env.get("vmId")})
    config = None
    try:
        config = policy.load_config(environ=env, missing_ok=True)
        return HANDLERS[hook_point](env, config, logger) or 0
    except Exception as e:  # every failure goes through the on_error policy
        mode = DEFAULT_ON_ERROR.get(hook_point, CONTINUE)
        if config is not None:
            mode = config.settings.on_error_for(hook_point, mode)
        if isinstance(e, QosHooksError):
            logger.error("%s", e)
        else:
            logger.exception("internal error")
        if mode == FAIL:
            logger.error("on_error=fail for %s: exiting 1", hook_point)
            return 1
        logger.warning("on_error=continue for %s: carrying on without QoS", hook_point)
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(vdsm_main(sys.argv[1]))
