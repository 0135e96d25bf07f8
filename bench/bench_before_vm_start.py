#!/usr/bin/env python3
"""Time the VDSM ``before_vm_start`` hook against the cost of starting Python
with lxml, and print the median ratio (target: at most 1.5x).

What is timed, each run a fresh process, as VDSM runs it
(lib/vdsm/common/hooks.py): ``hooks/before_vm_start/50_qos_hooks`` with no
arguments, the domain XML in a temporary file named by ``$_hook_domxml``,
``QOS_HOOKS_CONFIG`` naming the policy file an operator really has (the
shipped examples/qos-hooks.conf, profile ``gold``, by default; ``--config``
and ``--profile`` pick another, ``--bench-config`` the small policy written
for this bench), the VM custom property ``qos_profile`` in the environment.  The domain has 32 interfaces and 32
disks, so the rewrite does real work (bandwidth on every vNIC, iotune on
every disk, a CPU cap); the file is restored before every run.

The floor is ``python3 -c 'import lxml.etree'``: any Python hook that parses
XML with lxml pays that much.  Runs alternate between the two commands so
that machine noise hits both alike.

    python3 bench/bench_before_vm_start.py [--runs N] [--json] [--config FILE --profile NAME | --bench-config]

Exit status: 0 when the median ratio is at most the target, 1 above it
(``--no-fail`` always exits 0), 2 when the hook itself failed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = os.path.join(ROOT, "hooks", "before_vm_start", "50_qos_hooks")
sys.path.insert(0, ROOT)

from bench.benchlib import byte_compile, default_python  # noqa: E402
TARGET = 1.5
SHIPPED_CONFIG = os.path.join(ROOT, "examples", "qos-hooks.conf")
SHIPPED_PROFILE = "gold"

BENCH_CONFIG = """\
[settings]
ovsdb = unix:/nonexistent/qos-hooks-bench/db.sock
host_cpus = 16

[profile bench]
on_existing = override
inbound.average = 100Mbit
inbound.peak = 200Mbit
inbound.burst = 1MiB
outbound.average = 50Mbit
outbound.burst = 512KiB
disk.total_bytes_sec = 200MB/s
disk.total_iops_sec = 2000
disk.total_iops_sec_max = 4000
disk.total_iops_sec_max_length = 10
cpu.limit = 50
cpu.shares = 2048

[profile bench disk bus=sata]
total_iops_sec = 500
"""


def domain_xml(nics=32, disks=32):
    """An oVirt-style domain with ``nics`` interfaces and ``disks`` disks."""
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<domain xmlns:ovirt-tune="http://ovirt.org/vm/tune/1.0" '
           'xmlns:ovirt-vm="http://ovirt.org/vm/1.0" type="kvm">',
           "  <name>bench</name>",
           "  <uuid>00000000-0000-4000-8000-000000000032</uuid>",
           "  <memory>4194304</memory>",
           '  <vcpu current="4">16</vcpu>',
           '  <os><type arch="x86_64" machine="q35">hvm</type></os>',
           "  <metadata>", "    <ovirt-tune:qos/>", "    <ovirt-vm:vm>",
           "      <ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>",
           "    </ovirt-vm:vm>", "  </metadata>", "  <devices>"]
    for i in range(disks):
        bus, dev = ("sata", "sd%s" % chr(97 + i % 26)) if i % 4 == 3 else \
            ("virtio", "vd%s%s" % ("" if i < 26 else "a", chr(97 + i % 26)))
        out += ['    <disk device="disk" snapshot="no" type="file">',
                '      <target bus="%s" dev="%s"/>' % (bus, dev),
                '      <source file="/rhev/data-center/mnt/s/images/d%d/v%d"/>' % (i, i),
                '      <driver cache="none" io="threads" name="qemu" type="qcow2"/>',
                '      <alias name="ua-disk-%d"/>' % i,
                "    </disk>"]
    for i in range(nics):
        out += ['    <interface type="bridge">',
                '      <model type="virtio"/>',
                '      <source bridge="ovirtmgmt"/>',
                '      <mac address="56:6f:1a:2b:%02x:%02x"/>' % (i // 256, i % 256),
                '      <filterref filter="vdsm-no-mac-spoofing"/>',
                "      <bandwidth/>",
                "    </interface>"]
    out += ["  </devices>", "</domain>", ""]
    return "\n".join(out).encode("utf-8")


def _time(argv, env, before=None):
    if before is not None:
        before()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    return elapsed, proc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21, help="runs of each command (default 21)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even above the target")
    ap.add_argument("--config", default=SHIPPED_CONFIG,
                    help="policy file (default: the shipped examples/qos-hooks.conf)")
    ap.add_argument("--profile", default=SHIPPED_PROFILE,
                    help="profile the VM asks for (default: %s)" % SHIPPED_PROFILE)
    ap.add_argument("--bench-config", action="store_true",
                    help="use the small policy written for this bench (profile 'bench')")
    ap.add_argument("--python", help="the interpreter for the hook and the floor (default: "
                    "/usr/bin/python3 when it has lxml and ovs, as on EL9)")
    args = ap.parse_args(argv)
    python = args.python or default_python()
    byte_compile(python)

    with tempfile.TemporaryDirectory(prefix="qos-hooks-bench-") as tmp:
        conf, profile = os.path.abspath(args.config), args.profile
        if args.bench_config:
            conf, profile = os.path.join(tmp, "qos-hooks.conf"), "bench"
            with open(conf, "w") as f:
                f.write(BENCH_CONFIG)
        xml_path = os.path.join(tmp, "domain.xml")
        original = domain_xml()

        def restore():
            with open(xml_path, "wb") as f:
                f.write(original)

        env = dict(os.environ)
        env.update({"_hook_domxml": xml_path, "QOS_HOOKS_CONFIG": conf,
                    "qos_profile": profile, "vmId": "00000000-0000-4000-8000-000000000032",
                    "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", "")})
        env.pop("QOS_HOOKS_LOG_LEVEL", None)   # VDSM's default: INFO, one line per change
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        hook = [python, HOOK]
        floor = [python, "-c", "import lxml.etree"]

        # check once that the hook really rewrites the domain
        restore()
        _, proc = _time(hook, env)
        with open(xml_path, "rb") as f:
            rewritten = f.read()
        if proc.returncode != 0 or rewritten.count(b"<iotune>") != 32 \
                or rewritten.count(b"<inbound ") != 32:
            sys.stderr.write("bench: the hook did not rewrite the domain (exit %d):\n%s\n"
                             % (proc.returncode, proc.stderr.decode("utf-8", "replace")))
            return 2

        for _ in range(args.warmup):
            _time(floor, env)
            _time(hook, env, restore)
        hook_t, floor_t = [], []
        for _ in range(args.runs):
            floor_t.append(_time(floor, env)[0])
            hook_t.append(_time(hook, env, restore)[0])

    h, fl = statistics.median(hook_t), statistics.median(floor_t)
    ratio = h / fl
    min_ratio = min(hook_t) / min(floor_t)   # less sensitive to a busy machine
    result = {"runs": args.runs, "hook_median_ms": round(h * 1000, 2),
              "floor_median_ms": round(fl * 1000, 2), "ratio": round(ratio, 3),
              "min_ratio": round(min_ratio, 3),
              "target": TARGET, "within_target": ratio <= TARGET,
              "nics": 32, "disks": 32, "python": python,
              "config": conf if not args.bench_config else "(bench config)", "profile": profile}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("before_vm_start (32 NICs, 32 disks, %s, profile %s): median %.1f ms over %d runs"
              % (result["config"], profile, h * 1000, args.runs))
        print("floor python3 -c 'import lxml.etree': median %.1f ms" % (fl * 1000))
        print("fastest runs: hook %.1f ms, floor %.1f ms (ratio %.2fx)"
              % (min(hook_t) * 1000, min(floor_t) * 1000, min_ratio))
        print("ratio %.2fx (target <= %.1fx): %s"
              % (ratio, TARGET, "OK" if ratio <= TARGET else "ABOVE TARGET"))
    return 0 if ratio <= TARGET or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
