"""Waiting for what the real stack does in its own time (libvirtd, OVS, the
agent, Prometheus): one polling loop for every test that needs one."""

import time


def wait_until(pred, what, timeout, interval=0.05, ignore=(), error=AssertionError):
    """Call ``pred`` every ``interval`` seconds until it returns something
    true, and return that.  An exception listed in ``ignore`` counts as "not
    yet".  After ``timeout`` seconds, raise ``error`` naming ``what`` and
    the last value (or exception) seen."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except ignore as e:
            last = e
        time.sleep(interval)
    raise error("timed out waiting for %s (last: %r)" % (what, last))
