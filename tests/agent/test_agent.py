"""``qos-hooks agent`` on the real stack: libvirtd 9.0 + qemu (TCG) + Open vSwitch
(tests/libvirtd_host.py), the agent run as its own process, exactly as the
systemd unit runs it (Type=notify: the test is the NOTIFY_SOCKET).

1. ``virsh attach-device --live`` of an OVS NIC with <bandwidth> (peak = 2x
   average), no hook called: OVSDB ends up with qos-hooks' rows and the kernel
   queue class holds average, not peak.
2. ``virsh domiftune --live``: libvirt writes its own mapping; the agent
   replaces it with ours at the new values, and says so.
3. a domain defined with a profile in its qos-hooks metadata, started with
   ``virsh start``: live bandwidth, iotune and cputune are the profile's.
4. ``kill -9`` of ovs-vswitchd and a restart: host-network steering flows
   back and every VM port verified; libvirtd restarted while the agent runs:
   a later hotplug is still handled.
5. no hook imports the agent (the hooks work without it: every other test
   in this suite runs without an agent).

Every wait is bounded polling; no wall-clock assertion.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid

import pytest

from qos_hooks.core import policy
from qos_hooks.core import profile_meta
from qos_hooks.ovs.mapping import OWNER_KEY, map_bandwidth
from tests.libvirtd_host import HostError, _run
from tests.ovs_sandbox import htb_rates
from tests.polling import wait_until

pytestmark = [pytest.mark.root, pytest.mark.libvirtd, pytest.mark.ovs]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOUND = 30            # seconds: generous, the machine is shared; never asserted as a time
CONF = """\
[settings]
ovsdb = {remote}
ovsdb_timeout = 10

[profile gold]
inbound.average = 1000
inbound.peak = 2000
inbound.burst = 256
outbound.average = 500
disk.total_bytes_sec = 10485760
disk.total_iops_sec = 400
cpu.period = 100000
cpu.quota = 50000

[profile silver]
inbound.average = 250
outbound.average = 125
"""
HOSTNET_NET = "qh13v10"
HOSTNET_UPLINK = "qh13up"


class AgentProc:
    """``python -m qos_hooks agent`` with a NOTIFY_SOCKET we read."""

    def __init__(self, host, tmp):
        self.host = host
        self.tmp = tmp
        self.conf = os.path.join(tmp, "qos-hooks.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(remote=host.remote))
        self.state = os.path.join(tmp, "hostnet.json")
        self.log_path = os.path.join(tmp, "agent.log")
        self.proc = None
        with socket.socket() as s:          # a free loopback port for /metrics
            s.bind(("127.0.0.1", 0))
            self.metrics_port = s.getsockname()[1]

    def start(self):
        sock_path = os.path.join(self.tmp, "notify.sock")
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(sock_path)
        ns.settimeout(BOUND)
        env = dict(os.environ, NOTIFY_SOCKET=sock_path, QOS_HOOKS_HOSTNET_STATE=self.state,
                   PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qos_hooks", "agent", "--config", self.conf,
             "--connect", self.host.uri, "--debounce", "0.1",
             "--metrics", "127.0.0.1:%d" % self.metrics_port],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd="/",
            start_new_session=True)
        try:
            msg = ns.recv(4096).decode()
        except socket.timeout:
            raise AssertionError("agent sent nothing on NOTIFY_SOCKET: %s" % self.text())
        finally:
            ns.close()
        if "READY=1" not in msg:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            raise AssertionError("no READY=1 but %r: %s" % (msg, self.text()))
        return self

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, what, start=0):
        _wait(lambda: re.search(pattern, self.text()[start:]), what + "\n" + self.text())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None


def _scrape(agent):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % agent.metrics_port,
                                timeout=30) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def agent(host, tmp_path_factory):
    a = AgentProc(host, str(tmp_path_factory.mktemp("agent")))
    a.start()
    try:
        yield a
    finally:
        a.stop()
        assert "Traceback" not in a.text(), a.text()


def _wait(pred, what, timeout=BOUND):
    return wait_until(pred, what, timeout, interval=0.1,
                      ignore=(KeyError, IndexError, HostError))


def _virsh(host, *args):
    return _run(["virsh", "-c", host.uri] + list(args), timeout=60).stdout


def _domain_xml(name, u, macs, bridge, bandwidth=None, metadata="", disk=None):
    nics = "".join("""
    <interface type='bridge'><mac address='%s'/><source bridge='%s'/>
      <virtualport type='openvswitch'/><model type='e1000'/>%s</interface>"""
                   % (m, bridge, "<bandwidth>%s</bandwidth>" % bandwidth if bandwidth else "")
                   for m in macs)
    disk_xml = ("""
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='%s'/><target dev='vda' bus='virtio'/></disk>""" % disk) if disk else ""
    return """<domain type='qemu'>
  <name>%s</name><uuid>%s</uuid>
  <metadata>%s</metadata>
  <memory unit='MiB'>32</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>%s%s
  </devices>
</domain>""" % (name, u, metadata, disk_xml, nics)


def _port_of_mac(host, mac):
    for i in host.rows("Interface", "name", "external_ids"):
        if i["external_ids"].get("attached-mac") == mac:
            return i["name"]
    return None


def _tc_rates(dev):
    return htb_rates(subprocess.run(["tc", "class", "show", "dev", dev], stdout=subprocess.PIPE,
                                    universal_newlines=True, check=True).stdout)


def _ours_applied(host, dev, bw, dom_uuid):
    """True when OVSDB and the kernel hold qos-hooks' mapping of ``bw`` on ``dev``."""
    want, _ = map_bandwidth(bw)
    ports = [p for p in host.rows("Port", "name", "qos") if p["name"] == dev]
    if not ports or not ports[0]["qos"]:
        return False
    qos = [r for r in host.rows("QoS") if r["_uuid"] == ports[0]["qos"]]
    if not qos or qos[0]["external_ids"].get(OWNER_KEY) != dom_uuid:
        return False
    if int(qos[0]["other_config"].get("max-rate", -1)) != want.qos_max_rate:
        return False
    queue = [r for r in host.rows("Queue") if r["_uuid"] == qos[0]["queues"].get(0)]
    if not queue or int(queue[0]["other_config"].get("max-rate", -1)) != want.queue_max_rate:
        return False
    iface = [i for i in host.rows("Interface", "name", "ingress_policing_rate")
             if i["name"] == dev][0]
    if iface["ingress_policing_rate"] != want.policing_rate:
        return False
    rates = _tc_rates(dev)
    return rates.get("1:1") == (want.queue_min_rate, want.queue_max_rate)


def _create(host, name, macs, bandwidth=None):
    u = str(uuid.uuid4())
    dom = host.conn().createXML(_domain_xml(name, u, macs, host.bridge, bandwidth), 0)
    return dom, u


def _hotplug(host, dom, mac, avg, peak, tmp):
    path = os.path.join(tmp, "nic-%s.xml" % mac.replace(":", ""))
    with open(path, "w") as f:
        f.write("<interface type='bridge'><mac address='%s'/><source bridge='%s'/>"
                "<virtualport type='openvswitch'/><model type='e1000'/>"
                "<bandwidth><inbound average='%d' peak='%d'/><outbound average='%d'/>"
                "</bandwidth></interface>" % (mac, host.bridge, avg, peak, avg))
    _virsh(host, "attach-device", dom.name(), path, "--live")


def test_hotplug_gets_average_not_peak(host, agent, tmp_path):
    dom, u = _create(host, "qh13-hotplug", ["52:54:00:13:01:00"])
    try:
        mac = "52:54:00:13:01:01"
        _hotplug(host, dom, mac, 1000, 2000, str(tmp_path))
        bw = policy.Bandwidth(inbound=policy.Rate(average=1000, peak=2000),
                              outbound=policy.Rate(average=1000))
        _wait(lambda: _port_of_mac(host, mac), "the hotplugged port in OVSDB")
        dev = _port_of_mac(host, mac)
        _wait(lambda: _ours_applied(host, dev, bw, u), "qos-hooks mapping on %s\n%s"
              % (dev, agent.text()))
        # the kernel: the default queue holds average (8 Mbit/s), never peak (16)
        rates = _tc_rates(dev)
        assert rates["1:1"] == (8000000, 8000000), rates
        agent.wait_log(r"domain qh13-hotplug: 2 port\(s\) verified \S+ after hotplug of",
                       "the agent's verified line")
        # the agent serves its own health and the per-vNIC metrics (issue 14)
        text = _scrape(agent)
        assert re.search(r'qos_hooks_agent_event_to_verified_seconds_count\{kind="hotplug"\} '
                         r'[1-9]', text), text[-3000:]
        assert re.search(r'qos_hooks_agent_reconciles_total\{trigger="event"\} [1-9]', text)
        assert 'qos_hooks_agent_connected{peer="libvirt"} 1.0' in text
        assert 'qos_hooks_agent_connected{peer="ovsdb"} 1.0' in text
        limits = [ln for ln in text.splitlines()
                  if ln.startswith("qos_hooks_vnic_limit_average_bytes_per_second{")
                  and 'mac="%s"' % mac in ln and 'direction="inbound"' in ln]
        assert limits and limits[0].endswith(" 1e+06"), (limits, text[-3000:])
    finally:
        dom.destroy()


def test_domiftune_replaced_by_our_mapping(host, agent, tmp_path):
    mac = "52:54:00:13:02:00"
    dom, u = _create(host, "qh13-tune", [mac],
                     "<inbound average='1000' peak='2000'/><outbound average='500'/>")
    try:
        dev = re.search(r"<target dev='([^']+)'", dom.XMLDesc(0)).group(1)
        first = policy.Bandwidth(inbound=policy.Rate(average=1000, peak=2000),
                                 outbound=policy.Rate(average=500))
        _wait(lambda: _ours_applied(host, dev, first, u), "the hook's mapping at start")
        start = len(agent.text())
        _virsh(host, "domiftune", dom.name(), dev, "--inbound", "500,1500,64",
               "--outbound", "250", "--live")
        new = policy.Bandwidth(inbound=policy.Rate(average=500, peak=1500, burst=64),
                               outbound=policy.Rate(average=250))
        _wait(lambda: _ours_applied(host, dev, new, u), "our mapping at the new values\n%s"
              % agent.text())
        agent.wait_log(r"libvirt replaced QoS on %s after domiftune: restored average "
                       r"mapping" % dev, "the repair logged with its reason", start)
        # one QoS + Queue row for the port: libvirt's were destroyed, ours updated
        rows = [r for r in host.rows("QoS") if u in (r["external_ids"].get("vm-id"),
                                                     r["external_ids"].get(OWNER_KEY))]
        assert len(rows) == 1, rows
    finally:
        dom.destroy()


def _qemu_img(path):
    with open(path, "wb") as f:          # a raw image is just bytes
        f.truncate(1 << 20)


def test_profile_in_metadata_applied_at_virsh_start(host, agent, tmp_path):
    import libvirt
    disk = str(tmp_path / "disk.raw")
    _qemu_img(disk)
    u = str(uuid.uuid4())
    meta = "<qh:qos xmlns:qh='%s' profile='gold'/>" % profile_meta.NS
    name = "qh13-profile"
    conn = host.conn()
    conn.defineXML(_domain_xml(name, u, ["52:54:00:13:03:00"], host.bridge, metadata=meta,
                               disk=disk))
    try:
        _virsh(host, "start", name)
        dom = conn.lookupByName(name)
        dev = re.search(r"<target dev='(vnet[^']+)'", dom.XMLDesc(0)).group(1)

        def profile_live():
            p = dom.interfaceParameters(dev, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            io = dom.blockIoTune("vda", libvirt.VIR_DOMAIN_AFFECT_LIVE)
            return ((p["inbound.average"], p["inbound.peak"], p["outbound.average"])
                    == (1000, 2000, 500) and io["total_bytes_sec"] == 10485760
                    and io["total_iops_sec"] == 400)
        _wait(profile_live, "the gold profile live\n%s" % agent.text())
        # cputune: the agent made the call `set --live` makes
        # (setSchedulerParametersFlags vcpu_period/vcpu_quota, accepted by
        # libvirt); on this rig (TCG guest, cgroup v1 in a container) libvirt
        # 9.0 accepts it without a vCPU thread to cap, so the scheduler
        # parameters are compared with what `qos-hooks set --live` itself
        # leaves on the same domain: identical
        agent.wait_log(r"set <cputune> period=100000, quota=50000 from profile 'gold'",
                       "the cputune call")
        sched = dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        r = subprocess.run([sys.executable, "-m", "qos_hooks", "set", "--config", agent.conf,
                            "--connect", host.uri, "--domain", name, "--profile", "gold",
                            "--live"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == sched
        gold = policy.Bandwidth(inbound=policy.Rate(average=1000, peak=2000, burst=256),
                                outbound=policy.Rate(average=500))
        _wait(lambda: _ours_applied(host, dev, gold, u), "gold on OVS")
        # the agent marked the live metadata; the persistent definition is untouched
        assert profile_meta.read(_root(dom.XMLDesc(0))).applied == "gold"
        inactive = profile_meta.read(_root(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        assert (inactive.profile, inactive.applied) == ("gold", None)
        assert re.search(r"domain %s: profile gold \(metadata\) applied live" % name,
                         agent.text())
        # `qos-hooks set --store-profile` writes the element for the next start
        r = subprocess.run([sys.executable, "-m", "qos_hooks", "set", "--config", agent.conf,
                            "--connect", host.uri, "--domain", name, "--profile", "silver",
                            "--persistent", "--store-profile"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
        assert r.returncode == 0, r.stderr
        inactive = profile_meta.read(_root(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        assert (inactive.profile, inactive.applied) == ("silver", None)
    finally:
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass


def _root(xml):
    from lxml import etree
    return etree.fromstring(xml.encode())


def _flows(host):
    from qos_hooks.hostnet import ovs as hostnet_ovs
    p = _run(["ovs-ofctl", "dump-flows", "unix:%s/%s.mgmt" % (host.dir, host.bridge),
              "cookie=%#x/-1" % hostnet_ovs.COOKIE], check=False, env=host.env)
    return [ln for ln in p.stdout.splitlines() if "cookie=" in ln]


def _restart_vswitchd(host):
    pidfile = os.path.join(host.dir, "ovs-vswitchd.pid")
    with open(pidfile) as f:
        pid = int(f.read().strip())
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not os.path.exists("/proc/%d" % pid), "ovs-vswitchd gone")
    # the netdev datapath leaves its taps behind (FIELD_NOTES section 5)
    for dev in ("ovs-netdev", host.bridge):
        _run(["ip", "link", "del", dev], check=False)
    _run(["ovs-vswitchd", host.remote, "--pidfile=" + pidfile,
          "--unixctl=" + os.path.join(host.dir, "ovs-vswitchd.ctl"),
          "--log-file=" + os.path.join(host.dir, "ovs-vswitchd.log"),
          "--detach", "--no-chdir"], env=host.env)


def _hostnet_setup(host, agent):
    from qos_hooks.hostnet import ovs as hostnet_ovs
    for name in (HOSTNET_UPLINK, HOSTNET_NET):
        _run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
             check=False)
        _run(["ip", "link", "set", name, "up"])
    host.vsctl("--may-exist", "add-port", host.bridge, HOSTNET_UPLINK)
    host.vsctl("--may-exist", "add-port", host.bridge, HOSTNET_NET, "tag=10")
    with open(agent.state, "w") as f:
        json.dump({"version": 1, "pending": {}, "applied": {HOSTNET_NET: {
            "hostQos": {"out": {"ls": {"m2": 30}, "ul": {"m2": 50000000}}},
            "uplink": HOSTNET_UPLINK, "vlan": 10, "profile": None}}}, f)
    os.environ["QOS_HOOKS_OVS_RUNDIR"] = host.dir
    try:
        hostnet_ovs.resync_host_networks(host.remote, 10, state_file=agent.state)
    finally:
        del os.environ["QOS_HOOKS_OVS_RUNDIR"]


def test_vswitchd_kill_restart_flows_and_ports_back(host, agent):
    mac = "52:54:00:13:04:00"
    bw = "<inbound average='1000' peak='2000'/><outbound average='500'/>"
    dom, u = _create(host, "qh13-vswitchd", [mac], bw)
    try:
        _hostnet_setup(host, agent)
        assert len(_flows(host)) == 2, _flows(host)
        dev = re.search(r"<target dev='([^']+)'", dom.XMLDesc(0)).group(1)
        want = policy.Bandwidth(inbound=policy.Rate(average=1000, peak=2000),
                                outbound=policy.Rate(average=500))
        _wait(lambda: _ours_applied(host, dev, want, u), "applied at start")
        start = len(agent.text())
        _restart_vswitchd(host)
        agent.wait_log(r"after the ovs-vswitchd restart: host network flows re-applied on "
                       r"%s; [1-9]\d* VM port\(s\) verified" % HOSTNET_UPLINK,
                       "the agent's restart pass", start)
        assert len(_flows(host)) == 2, _flows(host)
        assert _ours_applied(host, dev, want, u)
    finally:
        dom.destroy()
        for name in (HOSTNET_UPLINK, HOSTNET_NET):
            host.vsctl("--if-exists", "del-port", name)
            _run(["ip", "link", "del", name], check=False)
        os.unlink(agent.state)


def test_libvirtd_restart_then_hotplug_still_handled(host, agent, tmp_path):
    dom, u = _create(host, "qh13-lvrestart", ["52:54:00:13:05:00"])
    name = dom.name()
    try:
        connects = agent.text().count("connected to libvirt at")
        host.stop_libvirtd()
        host.relaunch_libvirtd()
        _wait(lambda: agent.text().count("connected to libvirt at") > connects,
              "the agent reconnected\n%s" % agent.text())
        dom = host.conn().lookupByName(name)
        mac = "52:54:00:13:05:01"
        _hotplug(host, dom, mac, 2000, 4000, str(tmp_path))
        bw = policy.Bandwidth(inbound=policy.Rate(average=2000, peak=4000),
                              outbound=policy.Rate(average=2000))
        _wait(lambda: _port_of_mac(host, mac), "the hotplugged port")
        dev = _port_of_mac(host, mac)
        _wait(lambda: _ours_applied(host, dev, bw, u), "hotplug after the libvirtd restart")
    finally:
        host.conn().lookupByName(name).destroy()


def test_no_hook_imports_the_agent():
    """The hooks never depend on the agent (nor on libvirt-python's event loop)."""
    entry = ("import sys; import qos_hooks.hooks.vdsm_vm, qos_hooks.hooks.libvirt_qemu, "
             "qos_hooks.hooks.vdsm_network, qos_hooks.hostnet.ovs, qos_hooks.priv.helper; "
             "bad = [m for m in sys.modules if m.startswith('qos_hooks.agent')]; "
             "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", entry], cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stdout + r.stderr
    hook_files = []
    for top in ("hooks", "libvirt-hooks", "libexec"):
        for d, _, files in os.walk(os.path.join(REPO, top)):
            hook_files += [os.path.join(d, f) for f in files]
    for path in hook_files + [os.path.join(REPO, "qos_hooks", f) for f in
                              ("hooks/vdsm_vm.py", "hooks/libvirt_qemu.py", "hooks/runner.py",
                               "hooks/vdsm_network.py", "priv/helper.py")]:
        with open(path, errors="replace") as f:
            assert "agent" not in re.sub(r"#.*", "", f.read()).replace("user_agent", ""), path
