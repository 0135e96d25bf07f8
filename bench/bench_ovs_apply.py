#!/usr/bin/env python3
"""QoS for 256 OVS ports: one qos-hooks call versus libvirt's per-port ovs-vsctl runs.

Same sandbox (tests/ovs_sandbox.py), same ports, same bandwidth, same run:

* qos-hooks: ``ovs_backend.apply_domain`` with one DomainQos holding all the
  interfaces: one OVSDB transaction, one wait for ovs-vswitchd, one netlink
  read-back of every port (timed with and without verification).
* libvirt:   what libvirt (virnetdevopenvswitch.c, >= 7.10) runs per
  interface: ``ovs-vsctl find queue`` and ``find qos`` by vm-id/ifname, one
  ``set port ... -- create qos ... -- create queue``, and one
  ``set Interface ... ingress_policing_rate/burst``; each ovs-vsctl waits for
  ovs-vswitchd, as libvirt's do (it passes ``--timeout=5`` and no
  ``--no-wait``).

First, the figure an operator sees: the whole ``qos-hooks apply`` command
(process start, imports, CLI, the shipped examples/qos-hooks.conf, domain XML
parsing, one transaction, verification) on a domain XML holding every port,
versus libvirt's way; then the in-process backend call as a second line.

``--scale 128,512,1024`` applies domain-sized requests of each size as a whole
process and prints the per-port cost (it should stay flat) and the peak RSS of
the process; ``--concurrent 64x16`` starts 64 ``qos-hooks apply`` processes of
16 ports each at once (as a mass VM start after a host reboot does).

Prints the times and the ratios (target: qos-hooks at least 20x faster).
Needs root, ovsdb-server and ovs-vswitchd.  Usage:
python3 bench/bench_ovs_apply.py [--ports 256] [--scale 128,512,1024] [--concurrent 64x16]
"""

import argparse
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qos_hooks.ovs import backend as ovs_backend  # noqa: E402
from qos_hooks.core.desired import DomainQos, InterfaceQos  # noqa: E402
from qos_hooks.core.policy import Bandwidth, Rate  # noqa: E402
from tests.ovs_sandbox import OvsSandbox, missing_requirement  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "examples", "qos-hooks.conf")
UUID = "25600000-0000-4000-8000-000000000001"
AVG, PEAK, BURST, OUT_AVG, OUT_BURST = 1250, 2500, 256, 625, 128   # libvirt units


def make_ports(sb, n):
    batch = os.path.join(sb.dir, "links.batch")
    with open(batch, "w") as f:
        for i in range(n):
            f.write("link add vnet%d type veth peer name vnet%dp\n" % (i, i))
            f.write("link set vnet%d up\nlink set vnet%dp up\n" % (i, i))
    sb.ns("ip", "-batch", batch)
    args = []
    for i in range(n):
        args += ["--", "add-port", sb.bridge, "vnet%d" % i, "--", "set", "Interface",
                 "vnet%d" % i, 'external_ids:attached-mac="%s"' % mac(i)]
    sb.vsctl(*args, wait=True, timeout=120)


def mac(i):
    return "52:54:00:25:%02x:%02x" % (i // 256, i % 256)


def reset(sb, n):
    args = []
    for i in range(n):
        args += ["--", "clear", "Port", "vnet%d" % i, "qos", "--", "set", "Interface",
                 "vnet%d" % i, "ingress_policing_rate=0", "ingress_policing_burst=0"]
    sb.vsctl(*args, wait=True, timeout=120)
    sb.vsctl("--all", "destroy", "QoS", "--", "--all", "destroy", "Queue", wait=True, timeout=120)


def libvirt_style(sb, n):
    vsctl = ["ovs-vsctl", "--db=" + sb.remote, "--timeout=60"]  # libvirt: 5 (CPU is shared here)
    for i in range(n):
        ifname = "vnet%d" % i
        vm = 'external-ids:vm-id="%s"' % UUID
        ifn = 'external-ids:ifname="%s"' % ifname
        for table in ("queue", "qos"):
            subprocess.run(vsctl + ["--no-heading", "--columns=_uuid", "find", table, vm, ifn],
                           check=True, stdout=subprocess.PIPE, env=sb.env)
        rate = ["other_config:min-rate=%d" % (AVG * 8000), "other_config:burst=%d" % (BURST * 8192),
                "other_config:max-rate=%d" % (PEAK * 8000)]
        subprocess.run(vsctl + ["set", "port", ifname, "qos=@qos1", vm, ifn, "--", "--id=@qos1",
                                "create", "qos", "type=linux-htb"] + rate
                       + ["queues:0=@queue0", vm, ifn, "--", "--id=@queue0", "create", "queue"]
                       + rate + [vm, ifn], check=True, stdout=subprocess.PIPE, env=sb.env)
        subprocess.run(vsctl + ["set", "Interface", ifname, "ingress_policing_rate=%d" % (OUT_AVG * 8),
                                "ingress_policing_burst=%d" % (OUT_BURST * 8)],
                       check=True, stdout=subprocess.PIPE, env=sb.env)


def qos_hooks_style(sb, n, verify):
    bw = Bandwidth(inbound=Rate(average=AVG, peak=PEAK, burst=BURST),
                   outbound=Rate(average=OUT_AVG, burst=OUT_BURST))
    dq = DomainQos(UUID, "bench", tuple(InterfaceQos(mac(i), "vnet%d" % i, bw) for i in range(n)))
    return ovs_backend.apply_domain(dq, remote=sb.remote, timeout=300, verify=verify,
                                    netns=sb.netns)


def domain_xml(ports, uuid=UUID, name="bench", bridge="br0"):
    """A live domain XML with one OVS interface per port index in ``ports``."""
    nics = "".join(
        "<interface type='bridge'><mac address='%s'/><source bridge='%s'/>"
        "<virtualport type='openvswitch'/><target dev='vnet%d'/><model type='virtio'/>"
        "<bandwidth><inbound average='%d' peak='%d' burst='%d'/>"
        "<outbound average='%d' burst='%d'/></bandwidth></interface>"
        % (mac(i), bridge, i, AVG, PEAK, BURST, OUT_AVG, OUT_BURST) for i in ports)
    return ("<domain type='kvm' id='1'><name>%s</name><uuid>%s</uuid>"
            "<memory unit='KiB'>1048576</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>%s</devices></domain>"
            % (name, uuid, nics))


def apply_argv(sb, path):
    """``qos-hooks apply`` as an operator (or the libvirt hook) runs it."""
    return [sys.executable, "-m", "qos_hooks", "apply", "--config", CONFIG, "--ovsdb", sb.remote,
            "--timeout", "300", "--netns", sb.netns, path]


def whole_process(sb, ports, tag="dom"):
    """Run ``qos-hooks apply`` on a domain holding ``ports``; return (seconds, peak RSS KiB)."""
    path = os.path.join(sb.dir, "%s.xml" % tag)
    with open(path, "w") as f:
        f.write(domain_xml(ports))
    env = dict(os.environ, PYTHONPATH=REPO)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.monotonic()
    p = subprocess.run(apply_argv(sb, path), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    dt = time.monotonic() - t
    if p.returncode != 0:
        sys.exit("bench_ovs_apply: qos-hooks apply exit %d: %s" % (p.returncode, p.stderr[-2000:]))
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return dt, max(rss, before)


def concurrent(sb, procs, per):
    """``procs`` apply processes of ``per`` ports each, all started at once."""
    env = dict(os.environ, PYTHONPATH=REPO)
    running = []
    t = time.monotonic()
    for k in range(procs):
        path = os.path.join(sb.dir, "c%d.xml" % k)
        uuid = "25600000-0000-4000-8000-%012d" % k
        with open(path, "w") as f:
            f.write(domain_xml(range(k * per, (k + 1) * per), uuid=uuid, name="c%d" % k))
        running.append(subprocess.Popen(apply_argv(sb, path), env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, universal_newlines=True))
    failed = 0
    for p in running:
        _, err = p.communicate()
        if p.returncode != 0:
            failed += 1
            sys.stderr.write("apply exit %d: %s\n" % (p.returncode, err[-500:]))
    return time.monotonic() - t, failed


def count(sb, table):
    return len([x for x in sb.vsctl("--bare", "--columns=_uuid", "list", table).split() if x])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", type=int, default=256)
    ap.add_argument("--scale", default="", help="comma-separated port counts, e.g. 128,512,1024")
    ap.add_argument("--concurrent", default="", help="PROCSxPORTS, e.g. 64x16")
    args = ap.parse_args()
    reason = missing_requirement()
    if reason:
        sys.exit("bench_ovs_apply: %s" % reason)
    n = args.ports
    sizes = [int(x) for x in args.scale.split(",") if x]
    procs, per = (int(x) for x in args.concurrent.split("x")) if args.concurrent else (0, 0)
    n_ports = max([n, procs * per] + sizes)
    import logging
    logging.getLogger("qos_hooks").setLevel(logging.ERROR)
    with OvsSandbox(prefix="qh3a") as sb:
        t = time.monotonic()
        make_ports(sb, n_ports)
        print("%d veth ports on the bridge in %.1fs" % (n_ports, time.monotonic() - t))

        t = time.monotonic()
        libvirt_style(sb, n)
        t_libvirt = time.monotonic() - t
        assert count(sb, "QoS") == n and count(sb, "Queue") == n
        reset(sb, n)

        t_proc, rss = whole_process(sb, range(n))
        assert count(sb, "QoS") == n and count(sb, "Queue") == n
        reset(sb, n)

        t = time.monotonic()
        report = qos_hooks_style(sb, n, verify=True)
        t_ours = time.monotonic() - t
        assert count(sb, "QoS") == n and count(sb, "Queue") == n
        fatal = [d for d in report.differences if d.fatal]
        reset(sb, n)

        t = time.monotonic()
        qos_hooks_style(sb, n, verify=False)
        t_ours_nv = time.monotonic() - t
        reset(sb, n)

        scale = []
        for size in sizes:
            t_s, rss_s = whole_process(sb, range(size), tag="scale%d" % size)
            assert count(sb, "QoS") == size
            scale.append((size, t_s, rss_s))
            reset(sb, size)
        conc = None
        if procs:
            conc = concurrent(sb, procs, per)
            reset(sb, procs * per)

    print("ratio libvirt / `qos-hooks apply` (whole process, %d ports, shipped config): %.1fx"
          "   target: >= 20x (stretch 30x)" % (n, t_libvirt / t_proc))
    print("libvirt-style (4 ovs-vsctl per port, sequential): %7.2fs  (%.1f ms/port)"
          % (t_libvirt, 1000 * t_libvirt / n))
    print("qos-hooks apply, whole process:                   %7.2fs  (%.2f ms/port, peak RSS %d MiB)"
          % (t_proc, 1000 * t_proc / n, rss // 1024))
    print("qos-hooks, one call, with verification:           %7.2fs  (%d fatal differences, "
          "%d transaction attempt(s))" % (t_ours, len(fatal), report.attempts))
    print("qos-hooks, one call, --no-verify:                 %7.2fs" % t_ours_nv)
    print("ratio libvirt / qos-hooks in-process (verified): %.1fx   (no verify: %.1fx)"
          % (t_libvirt / t_ours, t_libvirt / t_ours_nv))
    for size, t_s, rss_s in scale:
        print("scale: qos-hooks apply of %5d ports: %7.2fs  %.2f ms/port  peak RSS %d MiB"
              % (size, t_s, 1000 * t_s / size, rss_s // 1024))
    if conc is not None:
        t_c, failed = conc
        print("concurrent: %d qos-hooks apply processes x %d ports: %.2fs  %.2f ms/port  "
              "(%d failed)" % (procs, per, t_c, 1000 * t_c / (procs * per), failed))


if __name__ == "__main__":
    main()
