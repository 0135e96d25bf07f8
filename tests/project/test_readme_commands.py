"""The README's first command works with the distribution's own python3.

Debian 12's /usr/bin/python3 is "externally managed" (PEP 668): pip refuses
to install into it, which made the first command of the README fail on a stock
host.  The Makefile now makes a virtual environment from it instead; this runs
``make dry-run`` with ``PYTHON=/usr/bin/python3`` into a fresh venv and checks
that the system interpreter is left as it was.
"""

import os
import subprocess

from tests.ovs_sandbox import require

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM_PY = "/usr/bin/python3"


def _system_python_problem():
    if not os.path.exists(SYSTEM_PY):
        return "needs the distribution's %s" % SYSTEM_PY
    probe = subprocess.run([SYSTEM_PY, "-c", "import ensurepip"], capture_output=True)
    if probe.returncode != 0 and os.geteuid() != 0:
        return "needs python3-venv for %s (or root, to let the Makefile install it)" % SYSTEM_PY
    return None


def _externally_managed():
    out = subprocess.run([SYSTEM_PY, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
                         capture_output=True, universal_newlines=True, check=True).stdout.strip()
    return os.path.exists(os.path.join(out, "EXTERNALLY-MANAGED"))


def test_make_dry_run_with_the_system_python3(tmp_path):
    require(_system_python_problem())
    venv = tmp_path / "venv"
    p = subprocess.run(["make", "-s", "dry-run", "PYTHON=" + SYSTEM_PY, "VENV=%s" % venv],
                       cwd=REPO, capture_output=True, universal_newlines=True, timeout=600,
                       env=dict(os.environ, PIP_NO_INPUT="1"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("--- a/ovirt-guest.xml"), p.stdout[:300]
    assert "plan:" in p.stdout
    # the venv is made from the system interpreter, and the package lives there only
    made_from = (venv / ".qos-hooks-made-from").read_text().strip()
    assert made_from == os.path.realpath(SYSTEM_PY)
    outside = subprocess.run([SYSTEM_PY, "-c", "import qos_hooks"], cwd="/", capture_output=True,
                             env={"PATH": "/usr/bin:/bin"})
    assert outside.returncode != 0, "qos_hooks was installed into %s" % SYSTEM_PY
    if _externally_managed():
        # what the old Makefile did, for the record: the system pip refuses
        refused = subprocess.run([SYSTEM_PY, "-m", "pip", "install", "--dry-run", "-e", REPO],
                                 capture_output=True, universal_newlines=True, cwd="/")
        if "No module named pip" not in refused.stderr:
            assert refused.returncode != 0
            assert "externally-managed-environment" in refused.stderr
    # a second run reuses the venv (no pip: the metadata did not change)
    stamp = (venv / ".qos-hooks-installed").stat().st_mtime_ns
    p2 = subprocess.run(["make", "-s", "dry-run", "PYTHON=" + SYSTEM_PY, "VENV=%s" % venv],
                        cwd=REPO, capture_output=True, universal_newlines=True, timeout=300)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert p2.stdout == p.stdout
    assert (venv / ".qos-hooks-installed").stat().st_mtime_ns == stamp

