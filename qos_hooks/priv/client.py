"""How a hook reaches the OVS backend: directly when root, else the root helper.

* Root (the libvirt qemu hook, tests, the CLI run by an admin): call
  qos_hooks.ovs.backend in-process.
* Not root (VDSM VM hooks run as ``vdsm``): run the root helper as
  ``sudo -n /usr/libexec/qos-hooks/qos-hooks-helper`` with the request on
  stdin (qos_hooks.priv.helper), bounded by ``ovsdb_timeout`` +
  HELPER_MARGIN; on expiry the helper's whole process group is killed.

Environment knobs (tests, unusual installs):

``QOS_HOOKS_HELPER``  path of the helper (default HELPER_PATH)
``QOS_HOOKS_SUDO``    ``1``: always use sudo -n (default when not root);
                      ``0``: run the helper without sudo (tests that are root)
``QOS_HOOKS_VIA_HELPER``  ``1``: use the helper even when root

Early start (``prestart``): a VDSM hook whose domain XML mentions Open
vSwitch starts the helper FIRST, before it imports lxml and the policy code,
and writes the request to it once the XML is parsed: the helper's own
start-up (sudo, Python, the ``ovs`` library, the OVSDB connection) runs
while the hook parses, instead of after it.  A hook that ends up with
nothing to send closes the helper's stdin empty: the helper exits 0 and
changes nothing (qos_hooks.priv.helper).  This module imports nothing heavy,
so the hook executables can call ``prestart`` before anything else.
"""

import os

from qos_hooks.core.errors import ApplyError, BackendTimeout, BackendUnavailable, ConfigError, EXIT_APPLY, EXIT_CONFIG, EXIT_INPUT, EXIT_PERMISSION, EXIT_UNAVAILABLE, InputError, PermissionDenied, QosHooksError
from qos_hooks.core.fileio import NotRegularFile, read_regular

HELPER_PATH = "/usr/libexec/qos-hooks/qos-hooks-helper"
SUDO = "sudo"
HELPER_ENV = "QOS_HOOKS_HELPER"
SUDO_ENV = "QOS_HOOKS_SUDO"
VIA_HELPER_ENV = "QOS_HOOKS_VIA_HELPER"
# time for process start-up (python, sudo) on top of the OVSDB bound
HELPER_MARGIN = 2.0
# how much of the hook's data file ``prestart`` reads to look for OVS (the
# XML reader's own limit: qos_hooks.core.domxml.MAX_XML_BYTES)
PRESTART_READ_LIMIT = 16 * 1024 * 1024
# how long releasing an unused early helper waits for it to exit
RELEASE_WAIT = 2.0


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


class HelperTimeout(Exception):
    """The helper did not finish within its bound."""


class HelperProcess:
    """The root helper as a child process: its stdin (the request) and stderr
    (its messages) are pipes, its stdout is /dev/null.

    Started with ``os.posix_spawnp``, not ``subprocess``: importing
    subprocess costs about 10 ms (it pulls in locale and re), and an early
    helper (``prestart``) should be on its way before that.  The helper is
    the leader of a new session (its own process group), so a timeout can
    kill it and sudo together; it never holds the hook's stdout or stderr
    (VDSM's and libvirtd's pipes).
    """

    def __init__(self, argv):
        self.argv = argv
        in_r, self.stdin = os.pipe()
        self.stderr, err_w = os.pipe()
        import signal
        try:
            # pipes are created non-inheritable (PEP 446): only the dup2'ed
            # ends reach the child; SIGPIPE and SIGXFSZ back to their
            # defaults, as subprocess does (Python ignores them)
            self.pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ], setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except BaseException:
            os.close(self.stdin)
            os.close(self.stderr)
            raise
        finally:
            os.close(in_r)
            os.close(err_w)
        self.returncode = None

    def exchange(self, request, timeout):
        """Write ``request``, close stdin, read stderr to its end and reap the
        helper, all within ``timeout`` seconds; returns (exit code, stderr).
        Raises HelperTimeout (the helper left running: ``kill_group``)."""
        import selectors
        import time
        end = time.monotonic() + timeout
        err = []
        with selectors.DefaultSelector() as sel:
            if request:
                os.set_blocking(self.stdin, False)
                sel.register(self.stdin, selectors.EVENT_WRITE)
            else:
                self._close_stdin()
            sel.register(self.stderr, selectors.EVENT_READ)
            while sel.get_map():
                left = end - time.monotonic()
                if left <= 0:
                    raise HelperTimeout()
                for key, _ in sel.select(left):
                    if key.fd == self.stderr:
                        chunk = os.read(self.stderr, 65536)
                        if chunk:
                            err.append(chunk)
                        else:
                            sel.unregister(self.stderr)
                        continue
                    try:
                        request = request[os.write(self.stdin, request[:65536]):]
                    except BrokenPipeError:   # it exited without reading: its code says why
                        request = b""
                    if not request:
                        sel.unregister(self.stdin)
                        self._close_stdin()
        while self.returncode is None:
            if not self.poll():
                if time.monotonic() >= end:
                    raise HelperTimeout()
                time.sleep(0.001)
        return self.returncode, b"".join(err)

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode is not None

    def _close_stdin(self):
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    def close(self):
        self._close_stdin()
        if self.stderr is not None:
            os.close(self.stderr)
            self.stderr = None

    def kill_group(self):
        """SIGTERM then SIGKILL the helper's process group, and reap it.

        sudo relays SIGTERM to the command it runs; a root helper that vdsm
        may not signal directly is still bounded by its own watchdog
        (qos_hooks.priv.helper)."""
        import signal
        import time
        for sig, wait in ((signal.SIGTERM, 0.5), (signal.SIGKILL, 1.0)):
            for kill in (os.killpg, os.kill):
                try:
                    kill(self.pid, sig)
                    break
                except (ProcessLookupError, PermissionError):
                    continue
            end = time.monotonic() + wait
            while not self.poll() and time.monotonic() < end:
                time.sleep(0.01)
            if self.returncode is not None:
                return


class EarlyHelper:
    """A root helper started before its request is known (``prestart``).

    ``take()`` hands the process to ``run_helper``, which writes the request;
    ``release()`` (always called, at the end of the hook) closes an untaken
    helper's stdin empty, so it exits 0 having changed nothing, and reaps it.
    """

    def __init__(self, proc):
        self.proc, self.taken = proc, False

    def take(self):
        self.taken = True
        return self.proc

    def release(self):
        if self.taken:
            return
        self.taken = True
        try:
            self.proc.exchange(b"", RELEASE_WAIT)
        except HelperTimeout:
            self.proc.kill_group()
        except OSError:
            pass
        finally:
            self.proc.close()


def prestart(environ, data_env="_hook_domxml"):
    """Start the root helper now when this hook will most likely need it.

    Only when the helper is the route (``use_helper``) and the hook's data
    file (``$_hook_domxml``, a regular file: read without blocking, as this
    runs before the hook's watchdog is armed) mentions ``openvswitch``
    (every live domain XML with a vNIC on OVS does: ``<virtualport
    type='openvswitch'>``).  Returns
    an EarlyHelper or None; never raises: when anything is off, the hook
    starts the helper later, the ordinary way, and reports errors there.
    """
    try:
        if not use_helper(environ):
            return None
        path = environ.get(data_env)
        if not path:
            return None
        # this runs before the hook's watchdog exists: never block (a FIFO
        # at the path would wait for a writer in open(2)); regular files only
        if b"openvswitch" not in read_regular(path, PRESTART_READ_LIMIT):
            return None
        return EarlyHelper(HelperProcess(helper_argv(environ)))
    except (OSError, ValueError, NotRegularFile):
        return None


def run_helper(action, dq, *, timeout, environ, logger, libvirt_leftovers=False,
               early=None):
    """Send one request to the root helper; raise the matching error on failure.

    ``early``: an EarlyHelper already running (``prestart``), used instead of
    starting one."""
    from qos_hooks.priv.protocol import build_request
    request = build_request(action, dq, libvirt_leftovers=libvirt_leftovers)
    bound = timeout + HELPER_MARGIN
    if early is not None and not early.taken:
        proc = early.take()
    else:
        argv = helper_argv(environ)
        try:
            proc = HelperProcess(argv)
        except OSError as e:
            raise BackendUnavailable("cannot run %s: %s" % (" ".join(argv), e.strerror))
    argv = proc.argv
    try:
        code, err = proc.exchange(request, bound)
    except HelperTimeout:
        proc.kill_group()
        raise BackendTimeout("root helper %s did not finish within %.1fs: killed"
                             % (argv[-1], bound))
    finally:
        proc.close()
    for line in err.decode("utf-8", "replace").split("\n"):
        if line.strip():
            logger.info("helper: %s", line.rstrip())
    if code == 0:
        return None
    msg = "root helper %s exited %d" % (" ".join(argv), code)
    if argv[0] == SUDO and code == 1 and b"password is required" in err:
        raise PermissionDenied(msg + ": sudo refused; install sudoers/50_vdsm_hook_qos_hooks")
    raise _EXIT_ERRORS.get(code, QosHooksError)(msg)


def ovs_apply(dq, config, environ, logger, early=None):
    """Apply a DomainQos to OVS by the route this process is allowed to use.

    The backend's apply also destroys this interface's own qos-hooks rows that
    no Port references any more, in the same transaction (libvirt >= 7.10
    points Port.qos at a new QoS of its own when a port's bandwidth changes
    through updateDevice or setInterfaceParameters).
    """
    timeout = config.settings.ovsdb_timeout
    if use_helper(environ):
        return run_helper("apply", dq, timeout=timeout, environ=environ, logger=logger,
                          early=early)
    from qos_hooks.priv import helper as privhelper  # already root: the helper's own backend call, in process
    return privhelper.backend_apply(dq, config)


def ovs_clear(dq, config, environ, logger, libvirt_leftovers=False, early=None):
    timeout = config.settings.ovsdb_timeout
    if use_helper(environ):
        return run_helper("clear", dq, timeout=timeout, environ=environ, logger=logger,
                          libvirt_leftovers=libvirt_leftovers, early=early)
    from qos_hooks.priv import helper as privhelper
    return privhelper.backend_clear(dq, config, logger, libvirt_leftovers=libvirt_leftovers)
