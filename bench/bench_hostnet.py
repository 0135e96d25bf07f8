#!/usr/bin/env python3
"""Measure a host network's upper limit on the OVS switch type with iperf3.

Setup (all in a private ovs-vswitchd, netdev datapath, own namespace; nothing
touches /run/openvswitch or the root namespace):

* bridge ``vdsmbr_qh5bench`` as VDSM would build it: the "NIC" ``qh5nic``
  as uplink, and per network a port named like the network, with access
  VLAN tag 10 for ``qh5v10``; each network's host stack is a namespace on the
  far end of that port's veth (the client);
* the far side of the uplink (``qh5nicx``, the physical switch) is a second
  bridge ``qh5far`` with one server namespace per network (access port, VLAN
  tag stripped there), running ``iperf3 -s``;
* ``before_network_setup`` and ``after_network_setup`` run as VDSM runs them
  (tests/vdsm_runner.py) on an engine-shaped request (``ul.m2`` in bit/s,
  ``ls.m2`` a weight): the OVS QoS is whatever the hooks build.

The configured upper limit is a rate of Ethernet frames: hfsc (VDSM) and
htb (OVS) both count whole frames.  iperf3 reports TCP goodput, which is
below that by the headers (1448 payload bytes per 1514-byte frame at MTU
1500: 95.6%).  So for every upper limit the bench prints iperf3's goodput,
the same measurement expressed as a frame rate (goodput x (MTU+14)/MSS,
MSS from iperf3's own report), and, as a cross-check, the rate the uplink's
htb class counted itself; each divided by the configured limit.
Target: measured (frame rate from iperf3) / configured within 5%.

The VLAN row is reported separately and honestly: the userspace datapath
keeps ``set_queue``'s priority in its own packet metadata and never hands it
to the kernel socket that sends on a system port (Open vSwitch 3.1,
lib/netdev-linux.c sends without SO_PRIORITY), so the kernel htb puts every
packet in the default class (queue 0).  The bench shows where the VLAN
network's bytes went (class 1:b = queue 10 vs 1:1); with the kernel datapath
(production) ``set_queue`` sets skb->priority and the class is used.

    python3 bench/bench_hostnet.py [--seconds N] [--json] [--no-fail]

Exit status: 0 when every untagged row meets the target, 1 otherwise
(``--no-fail``: always 0), 2 when the setup or a hook failed, 3 when a
requirement (root, OVS, iperf3) is missing.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.benchlib import stop_on_sigterm  # noqa: E402
from tests.ovs_sandbox import OvsSandbox, missing_requirement  # noqa: E402
from tests.vdsm_runner import JSON, run_hook_dir  # noqa: E402

BRIDGE = "vdsmbr_qh5bench"
FAR = "qh5far"
UPLINK = "qh5nic"
UPLINK_PEER = "qh5nicx"
HOOKS = os.path.join(ROOT, "hooks")
TARGET = 0.05
MBIT = 10 ** 6
MTU = 1500
LIMITS = (20, 50, 100)          # Mbit/s, the engine's "upper limit" field
VLAN_LIMIT = 30


def engine_request(networks):
    nets = {}
    for name, attrs in networks.items():
        base = {"bridged": True, "mtu": 1500, "switch": "ovs", "nic": UPLINK,
                "defaultRoute": False, "bootproto": "none", "nameservers": []}
        base.update({k: v for k, v in attrs.items() if v is not None})
        nets[name] = base
    return {"request": {"networks": nets, "bondings": {},
                        "options": {"connectivityCheck": "true", "commitOnSuccess": True}}}


def host_qos(linkshare, upperlimit_mbit):
    return {"out": {"ls": {"m2": linkshare}, "ul": {"m2": upperlimit_mbit * MBIT}}}


def setup_networks(env, networks):
    req = engine_request(networks)
    for hp in ("before_network_setup", "after_network_setup"):
        res = run_hook_dir(os.path.join(HOOKS, hp), req, kind=JSON, base_env=env,
                           raise_error=False)
        if res.rcs != (0,):
            raise RuntimeError("%s failed: %s" % (hp, res.stderr))


class Bench:
    def __init__(self, seconds):
        self.seconds = seconds
        self.sb = OvsSandbox(prefix="qh5", bridge=BRIDGE)
        self.tmp = tempfile.mkdtemp(prefix="qh5-bench-")
        self.servers = {}

    def start(self):
        sb = self.sb
        sb.start()
        sb.vsctl("add-br", FAR, "--", "set", "Bridge", FAR, "datapath_type=netdev", wait=True)
        # the uplink: a veth pair with both ends in the switch namespace
        sb.ns("ip", "link", "add", UPLINK, "type", "veth", "peer", "name", UPLINK_PEER)
        for dev in (UPLINK, UPLINK_PEER):
            sb.ns("ethtool", "-K", dev, "tx", "off")
            sb.ns("ip", "link", "set", dev, "up")
        sb.vsctl("add-port", BRIDGE, UPLINK, "--", "add-port", FAR, UPLINK_PEER, wait=True)
        # networks: client namespaces on vdsmbr, server namespaces on the far bridge
        for net, tag, client, server in (("qh5mgmt", None, "10.56.0.2/24", "10.56.0.1/24"),
                                         ("qh5v10", 10, "10.56.10.2/24", "10.56.10.1/24")):
            self.sb.add_port(net, ip=client)
            srv_port = "qh5s%s" % (tag or 0)
            peer = self._add_far_port(srv_port, server)
            if tag:
                sb.vsctl("set", "Port", net, "tag=%d" % tag, "--",
                         "set", "Port", srv_port, "tag=%d" % tag, wait=True)
            self.servers[net] = (peer, server.split("/")[0])
        conf = os.path.join(self.tmp, "qos-hooks.conf")
        with open(conf, "w") as f:
            f.write("[settings]\novsdb = %s\novsdb_timeout = 10\n" % sb.remote)
        self.env = dict(os.environ, QOS_HOOKS_CONFIG=conf,
                        QOS_HOOKS_HOSTNET_STATE=os.path.join(self.tmp, "hostnet.json"),
                        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def _add_far_port(self, name, ip):
        sb = self.sb
        peer_ns = "%s-f%d" % (sb.prefix, len(sb.peer_namespaces))
        subprocess.run(["ip", "netns", "add", peer_ns], check=True)
        sb.peer_namespaces.append(peer_ns)
        sb.ns("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0",
              "netns", peer_ns)
        for dev, ns in ((name, sb.netns), ("eth0", peer_ns)):
            sb.ns("ethtool", "-K", dev, "tx", "off", netns=ns)
            sb.ns("ip", "link", "set", dev, "up", netns=ns)
        sb.ns("ip", "link", "set", "lo", "up", netns=peer_ns)
        sb.ns("ip", "addr", "add", ip, "dev", "eth0", netns=peer_ns)
        sb.vsctl("add-port", FAR, name, wait=True)
        return peer_ns

    def stop(self):
        self.sb.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def class_bytes(self):
        """htb class -> bytes sent, from ``tc -s class show`` on the uplink
        (iproute2 here prints htb classes as text even with -j)."""
        out = self.sb.ns("tc", "-s", "class", "show", "dev", UPLINK).stdout
        res = {}
        for m in re.finditer(r"class htb (\S+) .*?\n\s*Sent (\d+) bytes", out):
            res[m.group(1)] = int(m.group(2))
        return res

    def iperf(self, net):
        """TCP goodput (bit/s) from the network's namespace to its server."""
        peer, addr = self.servers[net]
        client = self.sb.ports[net]
        errors = []
        for _ in range(3):
            srv = subprocess.Popen(self.sb.ns_argv(["iperf3", "-s", "-1", "-p", "5299"], peer),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(0.5)       # let the server listen
                p = self.sb.ns("iperf3", "-c", addr, "-p", "5299", "-t", str(self.seconds),
                               "-O", "1", "-J", netns=client, check=False,
                               timeout=self.seconds + 30)
                try:
                    data = json.loads(p.stdout)
                except ValueError:
                    data = {"error": (p.stderr or p.stdout)[-300:]}
                if p.returncode == 0 and "sum_received" in data.get("end", {}):
                    mss = data.get("start", {}).get("tcp_mss_default") or 1448
                    return data["end"]["sum_received"]["bits_per_second"], mss
                errors.append(data.get("error") or "exit %d" % p.returncode)
            finally:
                try:
                    srv.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    srv.kill()      # the iperf3 server we started
                    srv.wait()
        raise RuntimeError("iperf3 on %s failed: %s" % (net, "; ".join(errors)))

    def measure(self, net, queue_class):
        b0 = self.class_bytes()
        goodput, mss = self.iperf(net)
        b1 = self.class_bytes()
        delta = {k: b1.get(k, 0) - b0.get(k, 0) for k in b1}
        # wire rate of the class: its bytes over the client's run, the omitted
        # first second (-O 1) included
        wire = delta.get(queue_class, 0) * 8 / (self.seconds + 1)
        # iperf3's goodput as a rate of Ethernet frames: each MSS of payload
        # travels in one MTU-sized IP packet plus a 14-byte Ethernet header
        l2 = goodput * (MTU + 14) / mss
        return goodput, l2, wire, delta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 duration per run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-fail", action="store_true")
    args = ap.parse_args(argv)
    stop_on_sigterm()
    why = missing_requirement() or (None if shutil.which("iperf3") else "needs iperf3")
    if why:
        print("bench_hostnet: cannot run: %s" % why, file=sys.stderr)
        return 3
    bench = Bench(args.seconds)
    rows = []
    try:
        bench.start()
        base = bench.measure("qh5mgmt", "1:1")
        rows.append({"network": "qh5mgmt", "vlan": None, "configured": None,
                     "goodput": base[0], "l2": base[1], "wire": None,
                     "note": "no host QoS (baseline)"})
        for limit in LIMITS:
            setup_networks(bench.env, {"qh5mgmt": {"hostQos": host_qos(50, limit)}})
            good, l2, wire, _ = bench.measure("qh5mgmt", "1:1")
            rows.append({"network": "qh5mgmt", "vlan": None, "configured": limit * MBIT,
                         "goodput": good, "l2": l2, "wire": wire,
                         "note": "queue 0 (default class 1:1)"})
        # the VLAN network: queue 10 (class 1:b), steered by flows
        setup_networks(bench.env, {"qh5mgmt": {"hostQos": None},
                                   "qh5v10": {"vlan": 10,
                                              "hostQos": host_qos(50, VLAN_LIMIT)}})
        good, l2, wire, delta = bench.measure("qh5v10", "1:b")
        rows.append({"network": "qh5v10", "vlan": 10, "configured": VLAN_LIMIT * MBIT,
                     "goodput": good, "l2": l2, "wire": wire,
                     "note": "INFORMATIONAL: queue 10 (class 1:b) sent %d bytes, the default "
                             "class 1:1 %d: the userspace datapath does not hand set_queue "
                             "to the kernel qdisc" % (delta.get("1:b", 0), delta.get("1:1", 0))})
    except Exception as e:
        print("bench_hostnet: setup or hook failed: %s" % e, file=sys.stderr)
        return 2
    finally:
        bench.stop()

    ok = True
    for r in rows:
        if r["configured"]:
            r["goodput_ratio"] = r["goodput"] / r["configured"]
            r["ratio"] = r["l2"] / r["configured"]
            r["wire_ratio"] = r["wire"] / r["configured"] if r["wire"] else None
            r["target_met"] = abs(r["ratio"] - 1) <= TARGET if r["vlan"] is None else None
            if r["target_met"] is False:
                ok = False
    if args.json:
        print(json.dumps({"target": "iperf3 measured (as Ethernet frame rate) / configured "
                                    "within %d%%" % (TARGET * 100), "rows": rows}, indent=2))
    else:
        print("host network upper limit on OVS (linux-htb, userspace datapath), iperf3 TCP "
              "%ds, MTU %d" % (args.seconds, MTU))
        print("measured = iperf3 goodput as Ethernet frames (x (MTU+14)/MSS); target "
              "measured/configured within %d%%; htb = the uplink class's own byte counter"
              % (TARGET * 100))
        print("%-8s %-4s %11s %13s %7s %13s %7s %13s %7s" % (
            "network", "vlan", "configured", "goodput", "ratio", "measured", "ratio",
            "htb", "ratio"))

        def f(v):
            return "%.2f Mbit/s" % (v / 1e6) if v else "-"

        def q(v):
            return "%.3f" % v if v else "-"
        for r in rows:
            print("%-8s %-4s %11s %13s %7s %13s %7s %13s %7s  %s%s" % (
                r["network"], r["vlan"] or "-",
                "%d Mbit/s" % (r["configured"] / 1e6) if r["configured"] else "-",
                f(r["goodput"]), q(r.get("goodput_ratio")), f(r["l2"]), q(r.get("ratio")),
                f(r["wire"]), q(r.get("wire_ratio")), r["note"],
                {True: " [target met]", False: " [TARGET MISSED]",
                 None: ""}[r.get("target_met")]))
    return 0 if ok or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
