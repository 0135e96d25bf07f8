"""The OVS benchmarks still run (no timing asserted: the figures depend on the machine)."""

import os
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
    require()
    p = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench_ovs_apply.py"),
                        "--ports", "4", "--scale", "2,3", "--concurrent", "2x2"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "ratio libvirt / `qos-hooks apply` (whole process, 4 ports, shipped config)" in p.stdout
    assert "ratio libvirt / qos-hooks in-process" in p.stdout
    assert "(0 fatal differences" in p.stdout
    assert "scale: qos-hooks apply of     3 ports" in p.stdout
    assert "concurrent: 2 qos-hooks apply processes x 2 ports" in p.stdout
    assert "(0 failed)" in p.stdout
