"""bench/bench_before_vm_start.py runs end to end (one short run).

No timing is asserted here: the figure depends on the machine.  What is
checked is that the bench drives the real hook as VDSM does and that the hook
rewrites all 32 interfaces and 32 disks (the bench exits 2 otherwise), and
that the generated domain is valid libvirt XML.
"""

import json
import os
import subprocess
import sys

from tests.core_helpers import ROOT, validate

BENCH = os.path.join(ROOT, "bench", "bench_before_vm_start.py")


def test_bench_runs_the_hook():
    p = subprocess.run([sys.executable, BENCH, "--runs", "1", "--warmup", "0", "--json",
                        "--no-fail"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    result = json.loads(p.stdout)
    assert result["nics"] == 32 and result["disks"] == 32 and result["target"] == 1.5
    assert result["hook_median_ms"] > 0 and result["floor_median_ms"] > 0


def test_bench_domain_is_valid():
    sys.path.insert(0, os.path.dirname(BENCH))
    try:
        import bench_before_vm_start as bench
    finally:
        sys.path.pop(0)
    ok, msg = validate(bench.domain_xml())
    assert ok, msg

