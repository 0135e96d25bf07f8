"""The root helper: the one privileged entry point of the VDSM hooks.

VDSM runs VM hooks as user ``vdsm`` (FIELD_NOTES section 3), and the Open
vSwitch database is root's.  The hooks therefore hand their OVS work to
``/usr/libexec/qos-hooks/qos-hooks-helper``, run through ``sudo -n`` and
allowed by one sudoers line (``sudoers/50_vdsm_hook_qos_hooks``) for that
command with no arguments, the way upstream VDSM hooks reach root.

The helper reads ONE request, JSON on stdin, at most ``MAX_REQUEST_BYTES``::

    {"version": 1,
     "action": "apply" | "clear",
     "domain": {"uuid": "8-4-4-4-12 hex", "name": "web01" | null,
                "interfaces": [{"mac": "52:54:00:..", "target_dev": "vnet0" | null,
                                "bandwidth": {"inbound": {"average": 1, ...},
                                              "outbound": {...}}}]},
     "libvirt_leftovers": false}          # "clear" only, optional

Every field is checked: no unknown keys at any level, no duplicate keys, no
floats, NaN or booleans where integers go, integers within libvirt's bounds
(qos_hooks.core.policy), UUID, MAC and device-name formats, each string matched
as a whole (a trailing newline is refused), integers of at most 20 digits.
Anything else is refused with exit code 4 before anything is written to
OVSDB.  The OVSDB remote and timeout come from the helper's own
configuration, never from the request; when run through sudo the
configuration path is the fixed default (``$QOS_HOOKS_CONFIG`` is ignored if
``$SUDO_UID`` is set), and a configuration file or directory that anyone but
root can write is refused (exit 3), as sudo and sshd refuse theirs.  Nothing
is ever passed to a shell.

Bound: the helper exits (code 5) at most ``ovsdb_timeout`` + 1 s after it
starts, whatever it is blocked in: a watchdog thread is armed before the
configuration is read (without blocking: a FIFO at its path is refused) and
before the first byte of stdin, so a caller that keeps stdin open cannot
keep a root process alive.  A helper started early that had to wait for its
request (stdin closed) gets one more such bound, counted from the request,
for the work itself: at most 2 x (``ovsdb_timeout`` + 1 s) in all.

Early start: a VDSM hook may start the helper before it knows its request
(qos_hooks.priv.client.prestart), so that the helper's start-up overlaps the
hook's XML parsing.  While stdin is still empty, the helper therefore
imports the OVS backend and opens its OVSDB connection (read-only until a
request is validated: the IDL's monitor of the qos-hooks columns); a
connection error is reported only if a valid request follows.  Zero bytes
on stdin (the hook had nothing to send, or went away) is no request: exit 0,
nothing written.  A request already waiting on stdin when the helper starts
is read first, as before.

Exit codes (qos_hooks.core.errors): 0 done (or no request), 3 configuration refused, 4 request
refused, 5 OVSDB unavailable or timed out, 6 apply/verify failed, 8 not
root, 1 internal error.  Messages go to stderr, one line each, and the calling hook copies
them into its own log.
"""

import os
import sys
import threading
import time

from qos_hooks.core import errors
from qos_hooks.core import log as _log
from qos_hooks.core import policy
from qos_hooks.core.errors import PermissionDenied, QosHooksError
from qos_hooks.priv.protocol import MAX_REQUEST_BYTES, _refuse, parse_request

# the helper's bound: ovsdb_timeout + this many seconds from its start,
# reading stdin included (the OVSDB work itself is bounded by ovsdb_timeout)
WATCHDOG_SLACK = 1.0


def helper_config(environ):
    """The helper's configuration: never influenced by a sudo caller, and
    refused when anyone but root can write it (policy.check_trusted: exit 3).
    Read without blocking (a FIFO at the path is refused, not waited on)."""
    if environ.get("SUDO_UID") is not None:
        environ = {}        # the fixed default path
    return policy.load_config(environ=environ, missing_ok=True, trusted=True)


def _load_backend(config):
    """Import the OVS backend for this helper process, which reaches only
    the configured remote: no ssl module unless it is ``ssl:``
    (ovsdb.load_library).  Only the executable's own path calls this: the
    in-process backend_apply/backend_clear leave the caller's modules alone."""
    from qos_hooks.ovs import backend as ovs_backend
    ovs_backend.load_library(config.settings.ovsdb)
    return ovs_backend


def backend_apply(dq, config, connection=None):
    """In-process OVS backend call (root), bounded by ``ovsdb_timeout``; the
    backend logs its own warnings and verification differences.
    ``connection``: an OVSDB connection opened ahead (``prepare``).

    A hook does not fail when the change is committed and ovs-vswitchd is
    merely behind (VswitchdBusy: a mass start on a big switch, where each
    VM's transaction makes ovs-vswitchd reconsider every port): that is a
    warning, not an error, since nothing is known wrong and ovs-vswitchd
    applies it when it gets there (``qos-hooks status`` verifies it later).  The ``qos-hooks apply`` command, which
    calls the backend itself, still exits 6 then."""
    from qos_hooks.core.errors import VswitchdBusy
    from qos_hooks.ovs import backend as ovs_backend
    try:
        return ovs_backend.apply_domain(dq, remote=config.settings.ovsdb,
                                        timeout=config.settings.ovsdb_timeout, verify=True,
                                        connection=connection)
    except VswitchdBusy as e:
        _log.get("priv").warning("not verified yet: %s", e)
        return e.report


def backend_clear(dq, config, logger, libvirt_leftovers=False, connection=None):
    from qos_hooks.ovs import backend as ovs_backend
    return ovs_backend.clear_domain(dq, remote=config.settings.ovsdb,
                                    timeout=config.settings.ovsdb_timeout,
                                    libvirt_leftovers=libvirt_leftovers,
                                    connection=connection)


def _waiting(stream):
    """True when nothing can be read from ``stream`` yet (no request and no
    EOF): the caller started us early.  Streams without a file descriptor
    (tests' BytesIO) count as ready."""
    import select
    try:
        ready, _, _ = select.select([stream.fileno()], [], [], 0)
    except (AttributeError, OSError, ValueError):
        return False
    return not ready


class Prepared:
    """What the helper did while waiting for its request: the OVS backend
    imported, and an OVSDB connection (or the error opening it, raised only
    if a valid request needs it)."""

    def __init__(self, connection=None, error=None):
        self.connection, self.error = connection, error

    def take(self):
        if self.error is not None:
            raise self.error
        conn, self.connection = self.connection, None
        return conn

    def renew(self, timeout):
        """A fresh OVSDB deadline for the work, counted from the request."""
        if self.connection is not None:
            from qos_hooks.ovs.ovsdb import Deadline
            self.connection.deadline = Deadline(timeout)

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def prepare(config, stream):
    """Use the time before the request arrives (early start): import the
    backend, then open the OVSDB connection if stdin is still empty.  Returns
    a Prepared, or None when the request (or EOF) was already there."""
    if not _waiting(stream):
        return None
    ovs_backend = _load_backend(config)
    if not _waiting(stream):
        return None
    try:
        return Prepared(ovs_backend.connect(config.settings.ovsdb,
                                            config.settings.ovsdb_timeout))
    except QosHooksError as e:
        return Prepared(error=e)


def execute(action, dq, options, config, logger, prepared=None):
    """Run the request against the OVS backend (root only)."""
    _load_backend(config)      # no-op when prepare() did it
    conn = prepared.take() if prepared is not None else None
    if action == "apply":
        result = backend_apply(dq, config, connection=conn)
    else:
        result = backend_clear(dq, config, logger,
                               libvirt_leftovers=options["libvirt_leftovers"], connection=conn)
    logger.info("%s done for domain %s (%d interface(s)) on %s", action, dq.uuid,
                len(dq.interfaces), config.settings.ovsdb)
    return result


def _watchdog(seconds, logger, bound=None):
    """Exit the process after ``seconds`` whatever the main thread is blocked in
    (reading stdin from a caller that never closes it, an OVSDB that never
    answers); ``bound`` is the whole bound the message names (default
    ``seconds``)."""
    bound = seconds if bound is None else bound

    def expire():
        try:
            logger.error("helper bound of %.1fs exceeded: exiting", bound)
        finally:
            os._exit(errors.EXIT_UNAVAILABLE)
    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()
    return t


def main(argv=None, stdin=None, environ=None):
    """Entry point of libexec/qos-hooks-helper; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    logger = _log.setup({"helper": "qos-hooks-helper", "by": env.get("SUDO_USER")})
    dog = None
    try:
        if argv:
            _refuse("argv", "the helper takes no arguments")
        if os.geteuid() != 0:
            raise PermissionDenied("qos-hooks-helper must run as root (through sudo -n; "
                                   "see sudoers/50_vdsm_hook_qos_hooks)")
        # bounded from here on: the whole run, stdin included, ends within
        # ovsdb_timeout + WATCHDOG_SLACK seconds of this point (the default
        # timeout until the config has been read, without blocking)
        start = time.monotonic()
        dog = _watchdog(policy.DEFAULT_OVSDB_TIMEOUT + WATCHDOG_SLACK, logger)
        config = helper_config(env)
        dog.cancel()
        bound = config.settings.ovsdb_timeout + WATCHDOG_SLACK
        dog = _watchdog(max(0.0, start + bound - time.monotonic()), logger, bound)
        stream = stdin if stdin is not None else sys.stdin.buffer
        prepared = prepare(config, stream)
        try:
            data = stream.read(MAX_REQUEST_BYTES + 1)
            if not data:
                logger.debug("no request (stdin closed empty): nothing to do")
                return 0
            if prepared is not None:
                # started early, it waited for the request (a busy host: many
                # hooks parsing at once): the work gets a whole bound of its own
                dog.cancel()
                dog = _watchdog(bound, logger)
                prepared.renew(config.settings.ovsdb_timeout)
            action, dq, options = parse_request(data)
            execute(action, dq, options, config, logger, prepared)
        finally:
            if prepared is not None:
                prepared.close()
        return 0
    except QosHooksError as e:
        logger.error("%s", e)
        return e.exit_code
    except Exception:
        logger.exception("internal error")
        return errors.EXIT_INTERNAL
    finally:
        if dog is not None:      # done in time (main() may run in-process)
            dog.cancel()
