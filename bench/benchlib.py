"""What the benches share: which interpreter runs the executables under test.

The hooks, the root helper and the ``qos-hooks`` CLI start with
``#!/usr/bin/env python3``; on an EL9 host that is /usr/bin/python3 with
python3-lxml and python3-openvswitch, and the package byte-compiled by the
RPM.  The benches run them the same way: one interpreter (``--python``,
default /usr/bin/python3 when it has lxml and ovs) first on PATH, the
checkout on PYTHONPATH, byte-compiled first.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_python():
    """/usr/bin/python3 when it can run the hooks (lxml, ovs), else this one."""
    system = "/usr/bin/python3"
    if os.path.exists(system) and subprocess.run(
            [system, "-c", "import lxml.etree, ovs.db.idl"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL).returncode == 0:
        return system
    return sys.executable


def python_path_env(python):
    """PATH with ``python``'s directory first; refuses an interpreter that
    ``python3`` in its own directory would not be."""
    bindir = os.path.dirname(os.path.abspath(python))
    py3 = os.path.join(bindir, "python3")
    if not os.path.exists(py3) or os.path.realpath(py3) != os.path.realpath(python):
        raise SystemExit("--python %s: %s is not the same interpreter; the hooks run "
                         "'python3' from PATH" % (python, py3))
    return bindir + os.pathsep + os.environ.get("PATH", "")


def byte_compile(python, tree=ROOT):
    """What an RPM install does (a checkout may have no .pyc files when
    PYTHONDONTWRITEBYTECODE is set)."""
    subprocess.run([python, "-m", "compileall", "-q", os.path.join(tree, "qos_hooks")],
                   check=True)


def exec_env(python, tree=ROOT, **extra):
    """The environment the executables under test run in."""
    return dict(os.environ, PATH=python_path_env(python),
                PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def stop_on_sigterm():
    """SIGTERM (``kill``, ``timeout``) ends a bench like Ctrl-C does: as an
    exception, so its ``with OvsSandbox()`` / ``finally`` stop the switch,
    the namespaces and libvirtd instead of leaving them running."""
    import signal

    def _exit(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _exit)
