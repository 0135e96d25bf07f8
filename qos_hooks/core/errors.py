"""One error hierarchy for the whole project, mapped to exit codes at the edges.

Every subclass also inherits the builtin that describes it best (as nmstate's
``NmstateValueError(NmstateError, ValueError)`` does), so callers that only know
the builtins still catch them.

Exit codes of the ``qos-hooks`` command (documented in ``qos-hooks --help``):

====  =====================================================================
0     success
1     unexpected internal error (a bug: the traceback goes to the log)
2     usage error (bad command line)
3     configuration error (policy file or profile)
4     input error (domain XML, hook JSON, request)
5     backend unavailable (OVSDB, netlink or libvirt not reachable, timeout)
6     apply or verify failed (the system did not reach the desired state)
7     drift: ``status`` found actual state different from desired state
8     permission denied (not root, sudo not allowed, an OVS port that is not
      the VM's own or named twice: PortRefused)
====  =====================================================================

Hook executables do NOT use these codes directly: VDSM treats exit code 2 as
"error, skip the remaining hooks", so hooks map every failure to 0, 1 or 2
(see qos_hooks.hooks.vdsm_vm.FAIL_EXIT).
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INPUT = 4
EXIT_UNAVAILABLE = 5
EXIT_APPLY = 6
EXIT_DRIFT = 7
EXIT_PERMISSION = 8


class QosHooksError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code = EXIT_INTERNAL


class UsageError(QosHooksError, ValueError):
    exit_code = EXIT_USAGE


class ConfigError(QosHooksError, ValueError):
    """A policy file or profile is wrong.

    The message names the file, line, profile, key, value and allowed range,
    as far as they are known.
    """

    exit_code = EXIT_CONFIG
    # further problems found in the same file (policy.parse_config checks
    # every section; qos-hooks check lists them all)
    more = ()

    def __init__(self, message, *, path=None, line=None, profile=None, key=None,
                 value=None, allowed=None):
        self.path = path
        self.line = line
        self.profile = profile
        self.key = key
        self.value = value
        self.allowed = allowed
        self.reason = message
        super().__init__(self._format())

    def _format(self):
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.line is not None:
                where += ":%d" % self.line
            where += ": "
        parts = []
        if self.profile is not None:
            parts.append("profile %r" % self.profile)
        if self.key is not None:
            if self.value is not None:
                parts.append("key %r = %r" % (self.key, self.value))
            else:
                parts.append("key %r" % self.key)
        head = ", ".join(parts)
        msg = where + (head + ": " if head else "") + self.reason
        if self.allowed is not None:
            msg += " (allowed: %s)" % self.allowed
        return msg


class InputError(QosHooksError, ValueError):
    """The domain XML, hook JSON or request given to us is malformed."""

    exit_code = EXIT_INPUT


class DomainXmlError(InputError):
    pass


class BackendUnavailable(QosHooksError, ConnectionError):
    """A backend (OVSDB, netlink, libvirt) could not be reached in time."""

    exit_code = EXIT_UNAVAILABLE


class BackendTimeout(BackendUnavailable, TimeoutError):
    exit_code = EXIT_UNAVAILABLE


class ApplyError(QosHooksError, RuntimeError):
    """A plan could not be applied, or verification found a difference."""

    exit_code = EXIT_APPLY


class VerifyError(ApplyError):
    def __init__(self, message, differences=()):
        self.differences = tuple(differences)
        super().__init__(message)


class VswitchdBusy(VerifyError):
    """The OVSDB transaction was committed, and ovs-vswitchd is applying
    configurations but has not reached ours within the bound (a mass VM
    start on a big switch): nothing to verify yet, nothing known wrong."""


class OwnershipError(ApplyError):
    """A change would touch a row or object this project does not own."""


class DriftDetected(QosHooksError):
    exit_code = EXIT_DRIFT


class PermissionDenied(QosHooksError, PermissionError):
    exit_code = EXIT_PERMISSION


class PortRefused(PermissionDenied):
    """A request names an OVS port that is not the requesting VM's own (a
    bridge's local port, an uplink, a patch/tunnel/internal interface,
    another VM's tap), or the same port or MAC twice: refused whole, before
    anything is written (exit 8, like every permission refusal)."""
