"""The OVS benchmarks still run (no timing asserted: the figures depend on the machine)."""

import json
import os
import re
import subprocess
import sys

from tests.ovs_sandbox import require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH_DIR = os.path.join(ROOT, "bench")


def _bench(name):
    sys.path.insert(0, BENCH_DIR)
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_mapping_analysis_on_a_synthetic_trace():
    """A perfect shaper: 256 KiB at 16 Mbit/s, then 8 Mbit/s; sampled every 10 ms."""
    b = _bench("bench_ovs_mapping")
    avg, peak, burst = 8e6, 16e6, 256 * 1024
    samples, t, total = [], 100.0, 0.0
    samples.append((t, 0.0))
    sent_burst = 0.0
    while t < 110.0:
        t += 0.01
        rate = peak if sent_burst < burst else avg
        step = rate / 8 * 0.01
        if rate == peak:
            sent_burst += step - avg / 8 * 0.01
        total += step
        samples.append((t, total))
    # traffic starts at t=100.0: make the first sample the idle baseline
    sustained, excess, top = b.analyse(samples, 8, avg, peak, burst)
    assert abs(sustained - 1.0) < 0.01
    assert 0.9 < excess < 1.1
    assert 0.95 < top < 1.05


def test_mapping_plot_on_a_synthetic_trace(tmp_path):
    """--plot draws a small PNG from measured samples (matplotlib, Agg)."""
    b = _bench("bench_ovs_mapping")
    avg, peak, burst = 8e6, 16e6, 256 * 1024
    traces = {}
    for name, sustained in (("qos-hooks", avg), ("libvirt", peak)):
        samples, t, total, sent_burst = [(100.0, 0.0)], 100.0, 0.0, 0.0
        while t < 109.0:
            t += 0.01
            rate = peak if sent_burst < burst else sustained
            if rate == peak:
                sent_burst += (peak - avg) / 8 * 0.01
            total += rate / 8 * 0.01
            samples.append((t, total))
        traces[name] = samples
    curve = b.rate_curve(traces["qos-hooks"], 8)
    assert abs(curve[-1][1] / avg - 1) < 0.01 and abs(curve[0][1] / peak - 1) < 0.05
    excess = b.excess_curve(traces["qos-hooks"], 8, avg)
    assert abs(excess[-1][1] / burst - 1) < 0.05
    out = tmp_path / "plot.png"
    b.plot(str(out), traces, 8, avg, peak, burst)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10000 < len(data) < 200000


def test_committed_mapping_plot_is_shown_and_small():
    doc = os.path.join(ROOT, "docs", "ovs-mapping.md")
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    assert "](img/ovs-mapping-40mbit.png)" in text
    png = os.path.join(ROOT, "docs", "img", "ovs-mapping-40mbit.png")
    assert os.path.getsize(png) < 150000


def test_apply_bench_runs_on_a_few_ports():
    """A small bench/bench_ovs_apply.py: whole process, in process, scale
    steps that grow the switch, and concurrent real after_vm_start hooks
    with their helpers, all applying every port (the bench asserts the row
    counts itself)."""
    require()
    p = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench_ovs_apply.py"),
                        "--ports", "4", "--scale", "4,6", "--concurrent", "2x4"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "ratio libvirt / `qos-hooks apply` (whole process, 4 ports, shipped config)" in out
    assert "ratio libvirt / qos-hooks in-process" in out
    assert "(0 fatal differences" in out
    assert "switch: 4 -> 6 veth ports" in out, out
    assert "scale: qos-hooks apply of     6 ports: own work" in out, out
    assert "concurrent: 2 after_vm_start hooks (+ helper) x 4 ports" in out, out
    assert re.search(r"\(0 failed, \d+ committed but not verified in time: ovs-vswitchd "
                     r"behind; 8 QoS rows", out), out


def test_hooks_bench_times_every_hook_the_way_vdsm_and_libvirt_run_them():
    """One run of bench/bench_hooks.py: every hook row is timed (none
    skipped) against its parse-only baseline, on one interpreter."""
    require()
    p = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench_hooks.py"),
                        "--runs", "1", "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=600)
    assert p.returncode == 0, p.stderr.decode()
    rows = {r["hook"]: r for r in json.loads(p.stdout)}
    for point in ("before_vm_start", "after_vm_start", "after_vm_migrate_destination",
                  "after_nic_hotplug", "after_update_device", "qemu started", "qemu release",
                  "qemu migrate"):
        assert rows[point]["median_ms"] > 0 and rows[point]["ratio"] > 0, rows[point]
    assert not [r for r in rows.values() if "skipped" in r], rows


def _leftovers(prefix):
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if ("/tmp/%s-" % prefix).encode() in f.read():
                        procs.append(int(pid))
            except OSError:
                continue
    netns = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                           universal_newlines=True).stdout
    return procs, [ln.split()[0] for ln in netns.splitlines() if ln.startswith(prefix + "-")]


def test_a_killed_bench_leaves_no_switch_behind():
    """``kill`` (SIGTERM) in the middle of bench_ovs_apply: its sandbox switch
    (ovsdb-server, ovs-vswitchd, namespace) is stopped, as after Ctrl-C.  A
    bench killed this way used to leave a 1024-port vswitchd running, and
    busy, under every later measurement."""
    require()
    import signal
    import time
    assert _leftovers("qh3a") == ([], []), "a qh3a sandbox is already running"
    p = subprocess.Popen([sys.executable, os.path.join(BENCH_DIR, "bench_ovs_apply.py"),
                          "--ports", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    try:
        line = p.stdout.readline()          # the switch is up and has its ports
        assert line.startswith("switch: 0 -> 64 veth ports"), (line, p.stderr.read())
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    end = time.monotonic() + 30
    while _leftovers("qh3a") != ([], []) and time.monotonic() < end:
        time.sleep(0.2)
    assert _leftovers("qh3a") == ([], [])
