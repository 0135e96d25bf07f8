"""``qos-hooks status DOMAIN_XML`` for taps NOT on Open vSwitch (qos_hooks.kernel.tap_status).

Pure tests of the desired-to-tc mapping and the comparison, then the command
against a real kernel: a veth in a fresh network namespace (``qh7-...``)
given by hand, with ``tc``, what libvirt's virNetDevBandwidthSet puts on a
tap.  The oracle that sets and removes state is the ``tc`` command.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from qos_hooks.kernel import tap_status
from qos_hooks.core.domxml import DomainDoc
from qos_hooks.core.policy import Bandwidth, Rate
from qos_hooks.kernel.tc import HtbClass, KernelPort
from tests.kernel.helpers import sh as _sh

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAC = "52:54:00:6b:1f:07"


# -- pure: <bandwidth> -> expected tc values -------------------------------------------

def test_expected_units_inbound_shapes_outbound_polices():
    e = tap_status.expected(Bandwidth(inbound=Rate(average=1000, peak=2000, burst=256),
                                      outbound=Rate(average=500)))
    # rate units: tc "kbps" = 1000 bytes/s; burst: tc "kb" = 1024 bytes
    assert (e.htb, e.rate, e.ceil, e.burst, e.htb_from) == (True, 1000000, 2000000, 262144,
                                                           "inbound")
    # no outbound burst: libvirt polices with burst = average KiB
    assert (e.police, e.police_rate, e.police_burst, e.police_from) == (True, 500000, 512000,
                                                                       "outbound")


def test_expected_without_peak_or_burst():
    e = tap_status.expected(Bandwidth(inbound=Rate(average=125)))
    assert (e.rate, e.ceil, e.burst) == (125000, 125000, None)   # ceil = rate, tc's burst
    assert not e.police


def test_expected_floor_only_or_empty_sets_nothing():
    assert tap_status.expected(Bandwidth(inbound=Rate(floor=100))) == tap_status.Expected()
    assert tap_status.expected(None) == tap_status.Expected()


def test_expected_police_burst_capped_like_libvirt():
    e = tap_status.expected(Bandwidth(outbound=Rate(average=2 ** 40)))
    assert e.police_burst == (2 ** 32 - 1) // 1024 * 1024   # fits tc's unsigned int


def test_expected_swapped_for_macvtap():
    bw = Bandwidth(inbound=Rate(average=1000), outbound=Rate(average=300, peak=400, burst=8))
    e = tap_status.expected(bw, swapped=True)
    assert (e.htb_from, e.rate, e.ceil, e.burst) == ("outbound", 300000, 400000, 8192)
    assert (e.police_from, e.police_rate) == ("inbound", 1000000)


DOMAIN = """<domain type='kvm'>
  <name>web07</name>
  <uuid>6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d07</uuid>
  <devices>%s
  </devices>
</domain>
"""
BW_XML = "<bandwidth><inbound average='1000' peak='2000' burst='256'/></bandwidth>"


def iface_xml(itype="bridge", dev="vnet7", mac=MAC, ovs=False, bw=BW_XML):
    return ("<interface type='%s'><mac address='%s'/><source bridge='br0'/>%s%s%s</interface>"
            % (itype, mac, "<virtualport type='openvswitch'/>" if ovs else "",
               "<target dev='%s'/>" % dev if dev else "", bw))


def test_interface_checks_selects_libvirt_taps_only():
    xml = DOMAIN % "".join([
        iface_xml(dev="vnet1"),
        iface_xml("network", dev="vnet2", mac="52:54:00:00:00:02"),
        iface_xml(dev="vnet3", ovs=True),                       # OVS: the OVS backend's
        iface_xml(dev="vnet4", bw=""),                          # no <bandwidth>
        iface_xml(dev="vnet5", bw="<bandwidth/>"),              # empty <bandwidth>
        iface_xml("user", dev="vnet6"),                         # libvirt sets no tc here
        iface_xml("ethernet", dev="tap8"),
        iface_xml(dev=None, mac="52:54:00:00:00:09"),
        iface_xml("direct", dev="macvtap0"),
    ])
    checks = tap_status.interface_checks(DomainDoc(xml).interfaces())
    assert [(c.label, c.type, c.expected is not None) for c in checks] == [
        ("vnet1", "bridge", True), ("vnet2", "network", True), ("tap8", "ethernet", False),
        ("52:54:00:00:00:09", "bridge", False), ("macvtap0", "direct", True)]
    assert "virDomainNetTypeSharesHostView" in checks[2].reason
    assert "target dev" in checks[3].reason
    # macvtap, swapped: the VM's inbound is policed on the device, not shaped
    assert (checks[4].expected.htb, checks[4].expected.police_from) == (False, "inbound")


# -- pure: comparison against a KernelPort --------------------------------------------

EXP = tap_status.expected(Bandwidth(inbound=Rate(average=1000, peak=2000, burst=256),
                                    outbound=Rate(average=500)))


def kport(classes=(("1:1", 1000000, 2000000, 262144),), root="htb", default=1, ingress=True,
          filters=1, exists=True):
    cls = {h: HtbClass(h, "ffff:ffff", r, c, b, 1600) for h, r, c, b in classes}
    return KernelPort("vnet7", exists, root, "1:0" if root else None, ingress, filters,
                      cls if root == "htb" else {}, default if root == "htb" else None)


def keys(diffs):
    return [(d.key, d.fatal) for d in diffs]


def test_compare_matching_old_layout():
    assert tap_status.compare("vnet7", EXP, kport()) == []


def test_compare_matching_new_layout_default_2():
    k = kport(classes=(("1:1", 2000000, 2000000, 262144), ("1:2", 1000000, 2000000, 262144)),
              default=2)
    assert tap_status.compare("vnet7", EXP, k) == []
    k = kport(classes=(("1:1", 2000000, 3000000, 262144), ("1:2", 1000000, 2000000, 262144)),
              default=2)
    assert keys(tap_status.compare("vnet7", EXP, k)) == [("class 1:1 ceil (B/s)", True)]


def test_compare_root_gone_and_wrong_rate():
    d = tap_status.compare("vnet7", EXP, kport(root=None))
    assert keys(d) == [("root qdisc", True)]
    assert "desired htb 1:, actual none" in str(d[0])
    d = tap_status.compare("vnet7", EXP, kport(classes=(("1:1", 900000, 2000000, 262144),)))
    assert keys(d) == [("class 1:1 rate/ceil (B/s)", True)]
    assert "desired (1000000, 2000000), actual (900000, 2000000)" in str(d[0])
    d = tap_status.compare("vnet7", EXP, kport(classes=(("1:5", 1000000, 2000000, 262144),)))
    assert keys(d) == [("htb default class 1:1", True)]


def test_compare_burst_tolerance():
    # the kernel keeps burst as time (psched ticks): a few bytes of rounding are fine
    assert tap_status.compare("vnet7", EXP, kport(classes=(("1:1", 1000000, 2000000, 262100),))) == []
    d = tap_status.compare("vnet7", EXP, kport(classes=(("1:1", 1000000, 2000000, 1600),)))
    assert keys(d) == [("class 1:1 burst (B)", True)]


def test_compare_ingress_and_police_filter():
    assert keys(tap_status.compare("vnet7", EXP, kport(ingress=False, filters=0))) == [
        ("ingress qdisc", True)]
    for avail, fatal in ((None, False), (False, False), (True, True)):
        d = tap_status.compare("vnet7", EXP, kport(filters=0), police_available=avail)
        assert keys(d) == [("ingress police filter", fatal)]
        assert "NOT limited" in d[0].note


def test_compare_device_absent_is_drift():
    d = tap_status.compare("vnet7", EXP, kport(exists=False))
    assert keys(d) == [("device", True)] and "--netns" in d[0].note


def test_police_available(tmp_path):
    assert tap_status.police_available(str(tmp_path)) is None     # no module tree at all
    moddir = tmp_path / "lib" / "modules" / os.uname().release
    moddir.mkdir(parents=True)
    (moddir / "modules.builtin").write_text("kernel/net/sched/sch_htb.ko\n")
    (moddir / "modules.dep").write_text("kernel/net/sched/cls_u32.ko:\n")
    assert tap_status.police_available(str(tmp_path)) is False
    (moddir / "modules.dep").write_text("kernel/net/sched/act_police.ko.xz:\n")
    assert tap_status.police_available(str(tmp_path)) is True
    (tmp_path / "sys" / "module" / "act_police").mkdir(parents=True)
    assert tap_status.police_available(str(tmp_path)) is True


def test_render_marks_drift_and_not_checked():
    drift = tap_status.TapStatus("vnet7", MAC, "bridge", EXP, kport(root=None).to_dict(),
                                 tuple(tap_status.compare("vnet7", EXP, kport(root=None))))
    skipped = tap_status.TapStatus("tap8", MAC, "ethernet", None, {}, (), "why not")
    text = "\n".join(tap_status.render((drift, skipped)))
    assert "DRIFT tap vnet7" in text and "DRIFT: vnet7 kernel root qdisc" in text
    assert "not checked: why not" in text
    assert json.dumps([drift.to_dict(), skipped.to_dict()])


# -- the command against a real kernel -------------------------------------------------

def _require(reason):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true and a requirement is missing: %s" % reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def netns():
    """A fresh network namespace ``qh7-<id>`` with a veth ``vnet7`` (peer ``vnet7p``)."""
    if os.geteuid() != 0:
        _require("needs root (network namespaces, veth, tc)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            _require("needs %s on PATH (Debian: iproute2)" % tool)
    name = "qh7-%s" % uuid.uuid4().hex[:6]
    p = _sh("ip", "netns", "add", name, check=False)
    if p.returncode != 0:
        _require("needs network namespace support ('ip netns add' failed: %s)" % p.stderr.strip())
    try:
        _sh("ip", "-n", name, "link", "add", "vnet7", "type", "veth", "peer", "name", "vnet7p")
        for dev in ("vnet7", "vnet7p"):
            _sh("ip", "-n", name, "link", "set", dev, "up")
        yield name
    finally:
        _sh("ip", "netns", "del", name, check=False)


def tc(ns, *args, check=True):
    return _sh("ip", "netns", "exec", ns, "tc", *args, check=check)


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, QOS_HOOKS_CONFIG="/nonexistent")
    return subprocess.run([sys.executable, "-m", "qos_hooks"] + list(args), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


LIVE = DOMAIN % iface_xml(bw="<bandwidth><inbound average='1000' peak='2000' burst='256'/>"
                             "<outbound average='500'/></bandwidth>")


@pytest.fixture
def files(tmp_path):
    live = tmp_path / "live.xml"
    live.write_text(LIVE)
    conf = tmp_path / "empty.conf"
    conf.write_text("[settings]\n")
    # no OVS interface: status must not even try this socket (it would exit 5)
    return str(live), ["--config", str(conf), "--ovsdb", "unix:%s" % (tmp_path / "no-db.sock")]


def libvirt_like(ns, rate="1000kbps", layout=1):
    """What virNetDevBandwidthSet puts on a tap, minus sfq/fw/police (not on this kernel)."""
    if layout == 1:
        tc(ns, "qdisc", "add", "dev", "vnet7", "root", "handle", "1:", "htb", "default", "1")
        tc(ns, "class", "add", "dev", "vnet7", "parent", "1:", "classid", "1:1", "htb",
           "rate", rate, "ceil", "2000kbps", "burst", "256kb")
    else:
        tc(ns, "qdisc", "add", "dev", "vnet7", "root", "handle", "1:", "htb", "default", "2")
        tc(ns, "class", "add", "dev", "vnet7", "parent", "1:", "classid", "1:1", "htb",
           "rate", "2000kbps", "ceil", "2000kbps", "burst", "256kb")
        tc(ns, "class", "add", "dev", "vnet7", "parent", "1:1", "classid", "1:2", "htb",
           "rate", rate, "ceil", "2000kbps", "burst", "256kb")
    tc(ns, "qdisc", "add", "dev", "vnet7", "ingress")
    # libvirt's police filter: refused by a kernel without act_police (this CI's)
    tc(ns, "filter", "add", "dev", "vnet7", "parent", "ffff:", "protocol", "all", "u32",
       "match", "u32", "0", "0", "police", "rate", "500kbps", "burst", "500kb", "mtu", "64kb",
       "drop", "flowid", ":1", check=False)


def filters_present(ns):
    return bool(tc(ns, "filter", "show", "dev", "vnet7", "parent", "ffff:").stdout.strip())


@pytest.mark.root
def test_status_linux_bridge_tap_ok_then_drift(netns, files):
    live, common = files
    libvirt_like(netns)
    p = run("status", *common, "--netns", netns, live)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok    tap vnet7" in p.stdout
    assert "rate 8Mbit/s ceil 16Mbit/s" in p.stdout
    if not filters_present(netns):
        assert "not enforced: vnet7 kernel ingress police filter" in p.stdout

    js = run("status", *common, "--netns", netns, "--json", live)
    assert js.returncode == 0, js.stdout + js.stderr
    d = json.loads(js.stdout)
    assert d["drift"] is False and d["ports"] == []
    [tap] = d["tap_ports"]
    assert (tap["dev"], tap["type"], tap["drift"]) == ("vnet7", "bridge", False)
    assert tap["desired"]["rate"] == 1000000 and tap["kernel"]["htb_default"] == 1

    # someone removes the htb: drift, naming the device and what is missing
    tc(netns, "qdisc", "del", "dev", "vnet7", "root")
    p = run("status", *common, "--netns", netns, live)
    assert p.returncode == 7, p.stdout + p.stderr
    assert "DRIFT tap vnet7" in p.stdout
    assert "DRIFT: vnet7 kernel root qdisc: desired htb 1:, actual" in p.stdout
    js = run("status", *common, "--netns", netns, "--json", live)
    assert js.returncode == 7 and json.loads(js.stdout)["drift"] is True

    # back with a wrong rate: drift naming desired and actual (bytes/s)
    tc(netns, "qdisc", "del", "dev", "vnet7", "ingress")
    libvirt_like(netns, rate="900kbps")
    p = run("status", *common, "--netns", netns, live)
    assert p.returncode == 7, p.stdout + p.stderr
    assert ("DRIFT: vnet7 kernel class 1:1 rate/ceil (B/s): desired (1000000, 2000000), "
            "actual (900000, 2000000)") in p.stdout

    # the ingress qdisc gone too
    tc(netns, "qdisc", "del", "dev", "vnet7", "ingress")
    p = run("status", *common, "--netns", netns, live)
    assert p.returncode == 7 and "DRIFT: vnet7 kernel ingress qdisc" in p.stdout


@pytest.mark.root
def test_status_newer_libvirt_layout_and_missing_device(netns, files, tmp_path):
    live, common = files
    libvirt_like(netns, layout=2)
    p = run("status", *common, "--netns", netns, live)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "default 2" in p.stdout
    # a domain whose tap is not there (not running, or another namespace)
    gone = tmp_path / "gone.xml"
    gone.write_text(LIVE.replace("vnet7", "vnet9"))
    p = run("status", *common, "--netns", netns, str(gone))
    assert p.returncode == 7, p.stdout + p.stderr
    assert "DRIFT: vnet9 kernel device: desired present, actual absent" in p.stdout


def test_status_domain_without_qos_needs_no_ovsdb(files, tmp_path):
    _, common = files
    plain = tmp_path / "plain.xml"
    plain.write_text(DOMAIN % iface_xml(bw=""))
    p = run("status", *common, str(plain))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no interface of web07 has QoS to check" in p.stdout


@pytest.mark.root
@pytest.mark.ovs
def test_status_domain_with_ovs_port_and_bridge_tap(ovs_sandbox, files, tmp_path):
    """Both kinds in one domain: OVS ports reported as before, the tap after them."""
    sb = ovs_sandbox
    _, common = files
    common = common[:2] + ["--ovsdb", sb.remote, "--timeout", "20"]
    ovs_mac = "52:54:00:6b:1f:01"
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": ovs_mac})
    sb.ns("ip", "link", "add", "vnet7", "type", "veth", "peer", "name", "vnet7p")
    sb.ns("ip", "link", "set", "vnet7", "up")
    libvirt_like(sb.netns)
    both = tmp_path / "both.xml"
    both.write_text(DOMAIN % (iface_xml(dev="vnet0", mac=ovs_mac, ovs=True) + LIVE.split(
        "<devices>")[1].split("</devices>")[0]))
    p = run("apply", *common, "--netns", sb.netns, str(both))
    assert p.returncode == 0, p.stdout + p.stderr
    p = run("status", *common, "--netns", sb.netns, str(both))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok    vnet0  mac %s" % ovs_mac in p.stdout and "ok    tap vnet7" in p.stdout
    d = json.loads(run("status", *common, "--netns", sb.netns, "--json", str(both)).stdout)
    assert [x["port"] for x in d["ports"]] == ["vnet0"]
    assert [x["dev"] for x in d["tap_ports"]] == ["vnet7"]
    sb.ns("tc", "qdisc", "del", "dev", "vnet7", "root")
    p = run("status", *common, "--netns", sb.netns, str(both))
    assert p.returncode == 7 and "DRIFT tap vnet7" in p.stdout and "ok    vnet0" in p.stdout
