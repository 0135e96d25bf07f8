"""How a hook reaches the OVS backend: directly when root, else the root helper.

* Root (the libvirt qemu hook, tests, the CLI run by an admin): call
  qos_hooks.ovs.backend in-process.
* Not root (VDSM VM hooks run as ``vdsm``): run the root helper as
  ``sudo -n /usr/libexec/qos-hooks/qos-hooks-helper`` with the request on
  stdin (qos_hooks.priv.helper), under a subprocess timeout; on expiry the
  helper's whole process group is killed.

Environment knobs (tests, unusual installs):

``QOS_HOOKS_HELPER``  path of the helper (default HELPER_PATH)
``QOS_HOOKS_SUDO``    ``1``: always use sudo -n (default when not root);
                      ``0``: run the helper without sudo (tests that are root)
``QOS_HOOKS_VIA_HELPER``  ``1``: use the helper even when root
"""

import os
import signal
import subprocess

from qos_hooks.core.errors import ApplyError, BackendTimeout, BackendUnavailable, ConfigError, EXIT_APPLY, EXIT_CONFIG, EXIT_INPUT, EXIT_PERMISSION, EXIT_UNAVAILABLE, InputError, PermissionDenied, QosHooksError
from qos_hooks.priv.protocol import build_request

HELPER_PATH = "/usr/libexec/qos-hooks/qos-hooks-helper"
SUDO = "sudo"
HELPER_ENV = "QOS_HOOKS_HELPER"
SUDO_ENV = "QOS_HOOKS_SUDO"
VIA_HELPER_ENV = "QOS_HOOKS_VIA_HELPER"
# time for process start-up (python, sudo) on top of the OVSDB bound
HELPER_MARGIN = 2.0


def _flag(environ, name):
    v = environ.get(name)
    if v is None:
        return None
    return v.strip().lower() in ("1", "yes", "true", "on")


def use_helper(environ):
    via = _flag(environ, VIA_HELPER_ENV)
    return bool(via) or os.geteuid() != 0


def helper_argv(environ):
    path = environ.get(HELPER_ENV) or HELPER_PATH
    sudo = _flag(environ, SUDO_ENV)
    if sudo is None:
        sudo = os.geteuid() != 0
    # sudo -n: never prompt; fail at once when the sudoers rule is missing
    return [SUDO, "-n", path] if sudo else [path]


_EXIT_ERRORS = {
    EXIT_CONFIG: ConfigError,
    EXIT_INPUT: InputError,
    EXIT_UNAVAILABLE: BackendUnavailable,
    EXIT_APPLY: ApplyError,
    EXIT_PERMISSION: PermissionDenied,
}


def run_helper(action, dq, *, timeout, environ, logger, libvirt_leftovers=False):
    """Send one request to the root helper; raise the matching error on failure."""
    argv = helper_argv(environ)
    request = build_request(action, dq, libvirt_leftovers=libvirt_leftovers)
    bound = timeout + HELPER_MARGIN
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, close_fds=True,
                                start_new_session=True)
    except OSError as e:
        raise BackendUnavailable("cannot run %s: %s" % (" ".join(argv), e.strerror))
    try:
        _, err = proc.communicate(request, timeout=bound)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise BackendTimeout("root helper %s did not finish within %.1fs: killed"
                             % (argv[-1], bound))
    for line in err.decode("utf-8", "replace").split("\n"):
        if line.strip():
            logger.info("helper: %s", line.rstrip())
    if proc.returncode == 0:
        return None
    msg = "root helper %s exited %d" % (" ".join(argv), proc.returncode)
    if argv[0] == SUDO and proc.returncode == 1 and b"password is required" in err:
        raise PermissionDenied(msg + ": sudo refused; install sudoers/50_vdsm_hook_qos_hooks")
    raise _EXIT_ERRORS.get(proc.returncode, QosHooksError)(msg)


def _kill_group(proc):
    """SIGTERM then SIGKILL the helper's process group.

    sudo relays SIGTERM to the command it runs; a root helper that vdsm may
    not signal directly is still bounded by its own watchdog (privhelper).
    """
    for sig, wait in ((signal.SIGTERM, 0.5), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def ovs_apply(dq, config, environ, logger):
    """Apply a DomainQos to OVS by the route this process is allowed to use.

    The backend's apply also destroys this interface's own qos-hooks rows that
    no Port references any more, in the same transaction (libvirt >= 7.10
    points Port.qos at a new QoS of its own when a port's bandwidth changes
    through updateDevice or setInterfaceParameters).
    """
    timeout = config.settings.ovsdb_timeout
    if use_helper(environ):
        return run_helper("apply", dq, timeout=timeout, environ=environ, logger=logger)
    from qos_hooks.priv import helper as privhelper  # already root: the helper's own backend call, in process
    return privhelper.backend_apply(dq, config)


def ovs_clear(dq, config, environ, logger, libvirt_leftovers=False):
    timeout = config.settings.ovsdb_timeout
    if use_helper(environ):
        return run_helper("clear", dq, timeout=timeout, environ=environ, logger=logger,
                          libvirt_leftovers=libvirt_leftovers)
    from qos_hooks.priv import helper as privhelper
    return privhelper.backend_clear(dq, config, logger, libvirt_leftovers=libvirt_leftovers)
