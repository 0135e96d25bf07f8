"""How the short-lived executables end: flush, then leave at once.

A hook or the root helper is done once its files are written (atomically,
fsynced: qos_hooks.core.fileio), its output and log lines are flushed, and
its exit code is known.  What Python does after that -- freeing every lxml,
``ovs`` and module object one by one -- costs about 8 ms per process on this
machine kind, twice on the VDSM OVS path (hook and helper), with nobody
waiting for anything but the exit code (bench/bench_hooks.py).
``exit_now`` flushes and calls ``os._exit``.

Only for executables (hooks, helper, the ``qos-hooks`` command): nothing of
qos-hooks registers atexit work, and the ``ovs`` library's exit hooks remove
files that only daemons and unixctl servers create.  Under a profiler,
debugger or coverage tool (``python -m cProfile``, ``coverage run``), which
write their data at exit, it is an ordinary ``sys.exit``.
"""

import os
import sys

# what CPython's own shutdown returns when flushing stdout fails
EXIT_FLUSH_FAILED = 120


def exit_now(code):
    """Flush the logging handlers, stdout and stderr; then ``os._exit(code)``.

    A stdout that cannot be flushed (a reader that went away) turns exit 0
    into 120, as CPython's own shutdown does."""
    logging = sys.modules.get("logging")
    if logging is not None:
        try:
            logging.shutdown()
        except Exception:  # a broken handler must not keep us here
            pass
    code = 1 if code is None else int(code)
    if sys.getprofile() is not None or sys.gettrace() is not None:
        # a profiler, debugger or coverage tool writes its data at exit
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = EXIT_FLUSH_FAILED
    os._exit(code)
