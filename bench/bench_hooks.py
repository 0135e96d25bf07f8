#!/usr/bin/env python3
"""Wall time of every hook executable on a 16-NIC guest, against a hook that
only parses the XML; prints the median of several runs and the ratio.

Each run is a fresh process started the way its caller starts it:

* VDSM hooks (``hooks/<point>/50_qos_hooks``): no arguments, the XML in a
  temporary file named by ``$_hook_domxml``, custom properties and ``vmId``
  in the environment (tests/vdsm_runner.py semantics); the OVS hooks hand
  their work to the real root helper executable (``libexec/qos-hooks-helper``,
  a second process, as in production) without sudo, since sudo would reset
  the environment and the helper would not find this bench's OVS; sudo's own
  cost (``sudo -n /bin/true`` minus ``/bin/true``) is printed on its own line;
* the libvirt qemu hook (``libvirt-hooks/qemu.d/50_qos_hooks``): arguments
  ``DOMAIN OP SUBOP -``, the XML on stdin, in-process backend (root).

The OVS hooks work on a real Open vSwitch (tests/ovs_sandbox.py: a private
ovsdb-server + ovs-vswitchd in its own network namespace) with 16 ports
``vnet0..vnet15``; every hook and the baseline run inside that namespace
(``ip netns exec``, included in both).  Apply and clear alternate, so every
apply really creates 16 QoS + 16 Queue rows and every clear removes them.

The baseline "parse-only hook" is a Python script that imports lxml and
parses the same XML from the same place (file or stdin).  Runs of a hook and
of its baseline alternate so machine noise hits both alike.

Interpreter: the hooks, the helper and the baseline all run ONE interpreter,
``--python`` (default: ``/usr/bin/python3`` when it has lxml and ovs, as on
an EL9 host with python3-lxml and python3-openvswitch; else this one).  Its
directory goes first on PATH, since the executables start with
``#!/usr/bin/env python3``; qos_hooks comes from this checkout (PYTHONPATH).

    python3 bench/bench_hooks.py [--runs N] [--python PATH] [--tree DIR] [--json]

Needs root for the OVS part (without it, only the before_* hooks and the
qemu migrate hook are timed, and the rest is reported as skipped).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.benchlib import (byte_compile, default_python, python_path_env,  # noqa: E402
                            stop_on_sigterm)

# the checkout whose executables are timed (--tree: e.g. a git worktree of an
# older commit, for a before/after table from one machine and one session)
TREE = ROOT


def helper_path():
    return os.path.join(TREE, "libexec", "qos-hooks-helper")


def qemu_hook_path():
    return os.path.join(TREE, "libvirt-hooks", "qemu.d", "50_qos_hooks")
NICS = 16
UUID = "6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e"

CONFIG = """\
[settings]
default_profile = bench
ovsdb = {remote}
ovsdb_timeout = 5

[profile bench]
on_existing = fill
inbound.average = 100Mbit
inbound.peak = 200Mbit
inbound.burst = 1MiB
outbound.average = 50Mbit
outbound.burst = 512KiB
"""

PARSE_ONLY_FILE = ("import os, lxml.etree\n"
                   "lxml.etree.parse(os.environ['_hook_domxml'])\n")
PARSE_ONLY_STDIN = "import sys, lxml.etree\nlxml.etree.fromstring(sys.stdin.buffer.read())\n"


def mac(i):
    return "52:54:00:be:00:%02x" % i


def iface(i, target=True, bandwidth=True):
    return ("    <interface type='bridge'>\n"
            "      <mac address='%s'/>\n"
            "      <source bridge='br0'/>\n"
            "      <virtualport type='openvswitch'/>\n%s%s"
            "      <model type='virtio'/>\n"
            "    </interface>\n") % (
        mac(i), "      <target dev='vnet%d'/>\n" % i if target else "",
        "      <bandwidth>\n        <inbound average='12500' peak='25000' burst='1024'/>\n"
        "        <outbound average='6250' burst='512'/>\n      </bandwidth>\n"
        if bandwidth else "")


def domain(target=True, bandwidth=True):
    return ("<domain type='kvm'>\n  <name>bench16</name>\n  <uuid>%s</uuid>\n"
            "  <memory unit='KiB'>1048576</memory>\n  <vcpu>2</vcpu>\n"
            "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <devices>\n%s"
            "  </devices>\n</domain>\n") % (
        UUID, "".join(iface(i, target, bandwidth) for i in range(NICS)))


class Runner:
    def __init__(self, env, prefix, workdir, python):
        self.env, self.prefix, self.dir = env, list(prefix), workdir
        self.parse_file = os.path.join(workdir, "parse_only_file.py")
        self.parse_stdin = os.path.join(workdir, "parse_only_stdin.py")
        for path, code in ((self.parse_file, PARSE_ONLY_FILE),
                           (self.parse_stdin, PARSE_ONLY_STDIN)):
            with open(path, "w") as f:
                f.write("#!%s\n%s" % (python, code))
            os.chmod(path, 0o755)

    def vdsm(self, script, xml, extra_env=None):
        fd, path = tempfile.mkstemp(dir=self.dir)
        os.write(fd, xml.encode())
        os.close(fd)
        env = dict(self.env, _hook_domxml=path, vmId=UUID, **(extra_env or {}))
        t0 = time.perf_counter()
        p = subprocess.run(self.prefix + [script], env=env, cwd="/", stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        os.unlink(path)
        if p.returncode != 0 or b"ERROR" in p.stderr:
            raise SystemExit("%s failed (%d): %s" % (script, p.returncode, p.stderr.decode()))
        return dt

    def qemu(self, op, xml, sub="begin"):
        argv = [qemu_hook_path(), "bench16", op, sub, "-"] if op else [self.parse_stdin]
        # libvirtd runs the qemu hook as root: the backend in process, no helper
        env = {k: v for k, v in self.env.items() if k != "QOS_HOOKS_VIA_HELPER"}
        t0 = time.perf_counter()
        p = subprocess.run(self.prefix + argv, env=env, input=xml.encode(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        if p.returncode != 0 or b"ERROR" in p.stderr:
            raise SystemExit("qemu hook %s failed (%d): %s" % (op, p.returncode,
                                                               p.stderr.decode()))
        return dt


def hook(point):
    return os.path.join(TREE, "hooks", point, "50_qos_hooks")


def bench(runs, with_ovs, python):
    results = []
    work = tempfile.mkdtemp(prefix="qh4-bench-")
    sb = None
    try:
        remote = "unix:/nonexistent/qh4-bench/db.sock"
        prefix = []
        if with_ovs:
            from tests.ovs_sandbox import OvsSandbox
            sb = OvsSandbox(prefix="qh4b").start()
            for i in range(NICS):
                sb.add_veth("vnet%d" % i)
            sb.vsctl(*sum([["--", "add-port", sb.bridge, "vnet%d" % i, "--", "set",
                            "Interface", "vnet%d" % i,
                            "external_ids:attached-mac=\"%s\"" % mac(i)]
                           for i in range(NICS)], []), wait=True)
            remote = sb.remote
            prefix = ["ip", "netns", "exec", sb.netns]
        conf = os.path.join(work, "qos-hooks.conf")
        with open(conf, "w") as f:
            f.write(CONFIG.format(remote=remote))
        env = dict(os.environ, PYTHONPATH=TREE + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PATH=python_path_env(python),
                   QOS_HOOKS_CONFIG=conf, QOS_HOOKS_VIA_HELPER="1",
                   QOS_HOOKS_SUDO="0", QOS_HOOKS_HELPER=helper_path(), QOS_HOOKS_LOG_LEVEL="WARNING")
        r = Runner(env, prefix, work, python)
        live = domain()
        bare = domain(target=False, bandwidth=False)
        one = iface(0, target=False, bandwidth=False)
        one_bw = iface(0, target=False)
        base_file = lambda xml: r.vdsm(r.parse_file, xml)  # noqa: E731

        def measure(name, fn, base, skip=None):
            if skip:
                results.append({"hook": name, "skipped": skip})
                return
            t, b = [], []
            for _ in range(runs):
                t.append(fn())
                b.append(base())
            results.append({"hook": name, "median_ms": statistics.median(t) * 1000,
                            "baseline_ms": statistics.median(b) * 1000,
                            "ratio": statistics.median(t) / statistics.median(b)})

        no_ovs = None if with_ovs else "needs root for the OVS sandbox"
        measure("before_vm_start", lambda: r.vdsm(hook("before_vm_start"), bare),
                lambda: base_file(bare))
        measure("before_nic_hotplug", lambda: r.vdsm(hook("before_nic_hotplug"), one,
                                                     {"qos_profile": "bench"}),
                lambda: base_file(one))
        measure("before_update_device", lambda: r.vdsm(hook("before_update_device"), one,
                                                       {"qos_profile": "bench"}),
                lambda: base_file(one))

        # apply/clear pairs, alternating so each apply creates and each clear removes
        def pair(apply_point, clear_point, xml):
            ta, tc, ba, bc = [], [], [], []
            for _ in range(runs):
                ta.append(r.vdsm(hook(apply_point), xml))
                ba.append(base_file(xml))
                tc.append(r.vdsm(hook(clear_point), xml))
                bc.append(base_file(xml))
            # the same clear hook is timed after two different applies: say which
            clear_label = "%s (clears %s)" % (clear_point, apply_point)
            for name, t, b in ((apply_point, ta, ba), (clear_label, tc, bc)):
                results.append({"hook": name, "median_ms": statistics.median(t) * 1000,
                                "baseline_ms": statistics.median(b) * 1000,
                                "ratio": statistics.median(t) / statistics.median(b)})

        if with_ovs:
            pair("after_vm_start", "after_vm_destroy", live)
            pair("after_vm_migrate_destination", "after_vm_destroy", live)
            pair("after_nic_hotplug", "after_nic_hotunplug", one_bw)
            pair("after_update_device", "after_nic_hotunplug", one_bw)
            # libvirt qemu hook (root, in-process backend)
            tq_s, tq_r, bq = [], [], []
            for _ in range(runs):
                tq_s.append(r.qemu("started", live))
                tq_r.append(r.qemu("release", live, "end"))
                bq.append(r.qemu(None, live))
            for name, t in (("qemu started", tq_s), ("qemu release", tq_r)):
                results.append({"hook": name, "median_ms": statistics.median(t) * 1000,
                                "baseline_ms": statistics.median(bq) * 1000,
                                "ratio": statistics.median(t) / statistics.median(bq)})
        else:
            for name in ("after_vm_start", "after_vm_destroy", "after_vm_migrate_destination",
                         "after_nic_hotplug", "after_nic_hotunplug", "after_update_device",
                         "qemu started", "qemu release"):
                measure(name, None, None, skip=no_ovs)
        measure("qemu migrate", lambda: r.qemu("migrate", bare), lambda: r.qemu(None, bare))
        sudo = shutil.which("sudo")
        if sudo and os.geteuid() == 0:
            ts, tt = [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                subprocess.run([sudo, "-n", "/bin/true"], check=True)
                ts.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                subprocess.run(["/bin/true"], check=True)
                tt.append(time.perf_counter() - t0)
            results.append({"hook": "(sudo -n overhead per helper call)",
                            "median_ms": (statistics.median(ts) - statistics.median(tt)) * 1000})
    finally:
        if sb is not None:
            sb.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--python", help="the interpreter for the hooks, the helper and the "
                    "baseline (default: /usr/bin/python3 when it has lxml and ovs)")
    ap.add_argument("--tree", help="time the executables of this checkout instead (e.g. a "
                    "git worktree of an older commit); the sandbox comes from this one")
    args = ap.parse_args(argv)
    stop_on_sigterm()
    python = args.python or default_python()
    python_path_env(python)
    global TREE
    TREE = os.path.abspath(args.tree) if args.tree else ROOT
    byte_compile(python, TREE)
    with_ovs = os.geteuid() == 0
    if with_ovs:
        from tests.ovs_sandbox import missing_requirement
        with_ovs = missing_requirement() is None
    results = bench(args.runs, with_ovs, python)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("%d-NIC guest, median of %d runs; baseline = a hook that only parses the XML; "
          "interpreter %s; tree %s" % (NICS, args.runs, python, TREE))
    print("%-54s %10s %12s %7s" % ("hook", "median ms", "baseline ms", "ratio"))
    for r in results:
        if "skipped" in r:
            print("%-54s skipped: %s" % (r["hook"], r["skipped"]))
        elif "ratio" not in r:
            print("%-54s %10.1f" % (r["hook"], r["median_ms"]))
        else:
            print("%-54s %10.1f %12.1f %6.2fx" % (r["hook"], r["median_ms"], r["baseline_ms"],
                                                  r["ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
