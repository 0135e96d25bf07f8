"""Callers that misbehave, for the tests of the executables' own bounds."""

import subprocess
import time


def hold_stdin_open(argv, first_bytes, env, safety=60):
    """Run ``argv``, write ``first_bytes`` to its stdin and never close it (a
    caller stuck half-way through its input); wait for the process to end
    by itself.  ``safety`` seconds is only a net: past it the process is
    killed and the test fails.  Returns (exit code, seconds from the write
    to the exit, stdout bytes, stderr text)."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    try:
        p.stdin.write(first_bytes)
        p.stdin.flush()
        t0 = time.monotonic()
        rc = p.wait(timeout=safety)
        took = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError("%s was still reading stdin after %d s" % (argv[0], safety))
    finally:
        p.stdin.close()
    return rc, took, p.stdout.read(), p.stderr.read().decode("utf-8", "replace")
