"""bench/bench_before_vm_start.py runs end to end (one short run).

No timing is asserted here: the figure depends on the machine.  What is
checked is that the bench drives the real hook as VDSM does and that the hook
rewrites all 32 interfaces and 32 disks (the bench exits 2 otherwise), and
that the generated domain is valid libvirt XML.
"""

import json
import re
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


def _require_ovs():
    from tests.ovs_sandbox import missing_requirement, require
    if os.geteuid() != 0:
        require("needs root: the OVS benches start a sandbox switch")
    reason = missing_requirement()
    if reason:
        require(reason)


def test_bench_hooks_times_every_hook_the_way_vdsm_and_libvirt_run_them():
    """One run of bench/bench_hooks.py: every hook row is timed (none
    skipped) against its parse-only baseline, on one interpreter."""
    _require_ovs()
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_hooks.py"),
                        "--runs", "1", "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=600)
    assert p.returncode == 0, p.stderr.decode()
    rows = {r["hook"]: r for r in json.loads(p.stdout)}
    for point in ("before_vm_start", "after_vm_start", "after_vm_migrate_destination",
                  "after_nic_hotplug", "after_update_device", "qemu started", "qemu release",
                  "qemu migrate"):
        assert rows[point]["median_ms"] > 0 and rows[point]["ratio"] > 0, rows[point]
    assert not [r for r in rows.values() if "skipped" in r], rows


def test_bench_ovs_apply_runs_every_mode():
    """A small bench/bench_ovs_apply.py: whole process, in process, a scale
    step that grows the switch, and concurrent hooks with their helpers, all
    applying every port (the bench asserts the row counts itself)."""
    _require_ovs()
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_ovs_apply.py"),
                        "--ports", "8", "--scale", "8,12", "--concurrent", "3x4"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600,
                       universal_newlines=True)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "ratio libvirt / `qos-hooks apply` (whole process, 8 ports" in out, out
    assert "switch: 8 -> 12 veth ports" in out and "apply of    12 ports: own work" in out, out
    assert "concurrent: 3 after_vm_start hooks (+ helper) x 4 ports" in out, out
    assert re.search(r"\(0 failed, \d+ committed but not verified in time: ovs-vswitchd behind; 12 QoS rows", out), out
