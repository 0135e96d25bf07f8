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

Prints both times and the ratio (target: qos-hooks at least 20x faster).
Needs root, ovsdb-server and ovs-vswitchd.  Usage:
python3 bench/bench_ovs_apply.py [--ports 256]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qos_hooks import ovs_backend  # noqa: E402
from qos_hooks.desired import DomainQos, InterfaceQos  # noqa: E402
from qos_hooks.policy import Bandwidth, Rate  # noqa: E402
from tests.ovs_sandbox import OvsSandbox, missing_requirement  # noqa: E402

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


def count(sb, table):
    return len([x for x in sb.vsctl("--bare", "--columns=_uuid", "list", table).split() if x])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", type=int, default=256)
    args = ap.parse_args()
    reason = missing_requirement()
    if reason:
        sys.exit("bench_ovs_apply: %s" % reason)
    n = args.ports
    import logging
    logging.getLogger("qos_hooks").setLevel(logging.ERROR)
    with OvsSandbox(prefix="qh3a") as sb:
        t = time.monotonic()
        make_ports(sb, n)
        print("%d veth ports on the bridge in %.1fs" % (n, time.monotonic() - t))

        t = time.monotonic()
        libvirt_style(sb, n)
        t_libvirt = time.monotonic() - t
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

    print("libvirt-style (4 ovs-vsctl per port, sequential): %7.2fs  (%.1f ms/port)"
          % (t_libvirt, 1000 * t_libvirt / n))
    print("qos-hooks, one call, with verification:           %7.2fs  (%d fatal differences, "
          "%d transaction attempt(s))" % (t_ours, len(fatal), report.attempts))
    print("qos-hooks, one call, --no-verify:                 %7.2fs" % t_ours_nv)
    print("ratio libvirt / qos-hooks (verified): %.1fx   (no verify: %.1fx)   target: >= 20x"
          % (t_libvirt / t_ours, t_libvirt / t_ours_nv))


if __name__ == "__main__":
    main()
