"""Helpers shared by the kernel read-back tests."""

import subprocess


def sh(*argv, check=True):
    """Run a command (30 s bound); with ``check``, a non-zero exit fails the test."""
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError("%s: exit %d: %s" % (" ".join(argv), p.returncode, p.stderr))
    return p
