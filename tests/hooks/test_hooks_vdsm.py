"""Every VDSM hook executable, run the way VDSM runs it (tests/vdsm_runner.py),
its effect checked on the hook file and on a real Open vSwitch.

The OVS tests run the hook scripts inside the sandbox switch's network
namespace (as VDSM and OVS share one host), and route the OVS work through
the real root helper executable (``QOS_HOOKS_VIA_HELPER=1``), without sudo
since the suite is root; ``test_hooks_reach_the_helper_through_sudo`` takes
the sudo path.
"""

import os
import shutil
import subprocess
import sys

import pytest

from qos_hooks.core import policy
from tests.ovs_sandbox import htb_rates, require
from tests.policies import GOLD_CONF
from tests.vdsm_runner import HookError, run_hook_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOKS = os.path.join(REPO, "hooks")
HELPER = os.path.join(REPO, "libexec", "qos-hooks-helper")
UUID = "6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e"
MAC0 = "52:54:00:6b:1f:01"
MAC1 = "52:54:00:6b:1f:02"

DOMAIN = """<domain type='kvm'>
  <name>web01</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
      <ovirt-vm:device mac_address="{mac}">
        <ovirt-vm:custom/>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
{ifaces}
  </devices>
</domain>
"""

IFACE = """    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='br0'/>
      <virtualport type='openvswitch'/>{target}{bandwidth}
      <model type='virtio'/>
    </interface>"""


def iface_xml(mac, target=None, bandwidth=None, ovs=True):
    x = IFACE.format(mac=mac, target="\n      <target dev='%s'/>" % target if target else "",
                     bandwidth="\n      <bandwidth>%s</bandwidth>" % bandwidth if bandwidth else "")
    if not ovs:
        x = x.replace("\n      <virtualport type='openvswitch'/>", "")
    return x


# what VDSM hands after_update_device and after_nic_hotunplug: the vNIC as
# Interface.getXML() builds it (oVirt vdsm lib/vdsm/virt/vmdevices/network.py;
# lib/vdsm/virt/vm.py setLinkAndNetwork, hotunplugNic): source bridge = the
# network, link, bandwidth, alias; never <virtualport>, never <target dev>
GETXML_IFACE = """<interface type="bridge">
    <mac address="{mac}"/>
    <model type="virtio"/>
    <source bridge="{bridge}"/>
    <link state="up"/>{bandwidth}
    <alias name="ua-2b418ef2-91d8-4479-88b1-98461192a54e"/>
</interface>
"""


def getxml_iface(mac, bandwidth=None, bridge="br0"):
    return GETXML_IFACE.format(mac=mac, bridge=bridge, bandwidth=(
        "\n    <bandwidth>%s</bandwidth>" % bandwidth if bandwidth is not None else ""))


def domain_xml(*ifaces, mac=MAC0):
    return DOMAIN.format(uuid=UUID, mac=mac, ifaces="\n".join(ifaces))


def q(xml):
    """lxml writes attributes with double quotes: compare in one spelling."""
    return xml.replace('"', "'")


def hook_dir(point):
    return os.path.join(HOOKS, point)


@pytest.fixture
def make_env(tmp_path, gold_policy):
    def make(remote="unix:%s" % (tmp_path / "no-ovsdb.sock"), timeout=2, extra=""):
        conf = gold_policy(remote, timeout, extra)
        # the environment vdsmd was started with; the runner turns it into
        # vdsmd's own (PYTHONPATH=/usr/libexec/vdsm:..., LC_ALL=C.UTF8).  The
        # checkout stands in for the installed package.
        env = dict(os.environ, QOS_HOOKS_CONFIG=str(conf), QOS_HOOKS_VIA_HELPER="1",
                   QOS_HOOKS_SUDO="0", QOS_HOOKS_HELPER=HELPER, PYTHONPATH=REPO)
        return env
    return make


def run(point, data, env, **kw):
    # no timeout here, as in VDSM (lib/vdsm/common/hooks.py _runHooksDir):
    # the hook's own watchdog is the only bound, and a test that hangs says so
    return run_hook_dir(hook_dir(point), data, hook_point=point, base_env=env, **kw)


# -- the hook directories --------------------------------------------------------

OVS_POINTS = ("after_vm_start", "after_vm_migrate_destination", "after_nic_hotplug",
              "after_nic_hotunplug", "after_update_device", "after_vm_destroy")


def test_hook_directories_hold_only_the_executables():
    from qos_hooks.hooks.vdsm_vm import HOOK_POINTS, HANDLERS
    assert set(HOOK_POINTS) == set(HANDLERS)
    for point in HOOK_POINTS:
        files = os.listdir(hook_dir(point))
        assert files == ["50_qos_hooks"], (point, files)
        path = os.path.join(hook_dir(point), "50_qos_hooks")
        assert os.access(path, os.X_OK)
        text = open(path).read()
        assert text.startswith("#!/usr/bin/env python3\n")
        assert len(text.splitlines()) <= 11
        # the OVS points start the root helper before anything else
        # (qos_hooks.priv.client.prestart); all leave through exit_now
        if point in OVS_POINTS:
            assert "early = prestart(os.environ)" in text
            assert text.index("prestart(") < text.index("import vdsm_main")
            assert 'exit_now(vdsm_main("%s", early=early))' % point in text
        else:
            assert "prestart" not in text
            assert 'exit_now(vdsm_main("%s"))' % point in text


def test_runner_copies_vdsm_order_exit_2_and_non_executables(tmp_path, make_env):
    """Sorted order; exit 2 skips the rest; non-executable files never run."""
    d = tmp_path / "before_vm_start"
    d.mkdir()
    shutil.copy(os.path.join(hook_dir("before_vm_start"), "50_qos_hooks"), d / "50_qos_hooks")
    (d / "10_first").write_text("#!/bin/sh\necho first >&2\nexit 0\n")
    (d / "10_first").chmod(0o755)
    (d / "helper_module.py").write_text("raise SystemExit('must not run')\n")  # not executable
    res = run_hook_dir(str(d), domain_xml(iface_xml(MAC0)), base_env=make_env())
    assert [os.path.basename(r.path) for r in res.runs] == ["10_first", "50_qos_hooks"]
    assert "<inbound average='1000' peak='2000' burst='256'/>" in q(res.data)
    (d / "20_stop").write_text("#!/bin/sh\necho stop >&2\nexit 2\n")
    (d / "20_stop").chmod(0o755)
    with pytest.raises(HookError) as e:
        run_hook_dir(str(d), domain_xml(iface_xml(MAC0)), base_env=make_env())
    assert [os.path.basename(r.path) for r in e.value.result.runs] == ["10_first", "20_stop"]
    assert "<bandwidth>" not in e.value.result.data


# -- before_* hooks: the XML -------------------------------------------------------

def test_before_vm_start_rewrites_the_file(make_env):
    res = run("before_vm_start", domain_xml(iface_xml(MAC0)), make_env(), vm_id=UUID)
    assert res.rcs == (0,)
    assert "<inbound average='1000' peak='2000' burst='256'/>" in q(res.data)
    assert "<outbound average='500' burst='128'/>" in q(res.data)


def test_before_vm_start_vm_custom_property_picks_the_profile(make_env):
    res = run("before_vm_start", domain_xml(iface_xml(MAC0)), make_env(), vm_id=UUID,
              vm_custom={"qos_profile": "silver"})
    assert "<inbound average='250'/>" in q(res.data)


def test_before_vm_start_fails_closed_by_default(make_env):
    xml = domain_xml(iface_xml(MAC0))
    with pytest.raises(HookError) as e:
        run("before_vm_start", xml, make_env(), vm_custom={"qos_profile": "nope"})
    assert e.value.result.rcs == (2,)      # qos_hooks.hooks.vdsm_vm.FAIL_EXIT
    assert "unknown profile 'nope'" in e.value.result.stderr
    assert "unknown profile 'nope'" in str(e.value)    # what the engine sees
    assert e.value.result.data == xml


def test_before_vm_start_on_error_continue(make_env):
    xml = domain_xml(iface_xml(MAC0))
    env = make_env(extra="on_error.before_vm_start = continue")
    res = run("before_vm_start", xml, env, vm_custom={"qos_profile": "nope"})
    assert res.rcs == (0,) and res.data == xml
    assert "on_error=continue" in res.stderr


def test_before_nic_hotplug_uses_the_vnic_property(make_env):
    res = run("before_nic_hotplug", iface_xml(MAC1), make_env(), vm_id=UUID,
              params={"qos_profile": "silver"})
    assert res.rcs == (0,)
    assert res.data.lstrip().startswith("<interface")
    assert "<inbound average='250'/>" in q(res.data) and "<outbound average='125'/>" in q(res.data)


def test_before_nic_hotplug_replaces_empty_engine_bandwidth(make_env):
    # iface_xml(bandwidth="") wrote no <bandwidth> at all: the engine's empty one
    xml = iface_xml(MAC1).replace("<model", "<bandwidth/>\n      <model")
    assert "<bandwidth/>" in xml
    res = run("before_nic_hotplug", xml, make_env(), vm_id=UUID)
    assert res.data.count("<bandwidth") == 1
    assert "<inbound average='1000' peak='2000' burst='256'/>" in q(res.data)


def test_before_nic_hotplug_bad_profile_aborts_the_hotplug(make_env):
    with pytest.raises(HookError):
        run("before_nic_hotplug", iface_xml(MAC1), make_env(), params={"qos_profile": "nope"})


# -- which message reaches the engine (issue 10, item 2) ----------------------------

def _with_silent_neighbour(tmp_path, point):
    """Our executable as 50_qos_hooks plus a script that sorts after it and
    succeeds silently, as ovirt-provider-ovn's before_nic_hotplug hook does."""
    d = tmp_path / point
    d.mkdir()
    shutil.copy(os.path.join(hook_dir(point), "50_qos_hooks"), d / "50_qos_hooks")
    (d / "60_silent").write_text("#!/bin/sh\nexit 0\n")
    (d / "60_silent").chmod(0o755)
    return str(d)


@pytest.mark.parametrize("point,data,kw", [
    ("before_vm_start", domain_xml(iface_xml(MAC0)), {"vm_custom": {"qos_profile": "nope"}}),
    ("before_nic_hotplug", iface_xml(MAC1), {"params": {"qos_profile": "nope"}}),
    ("before_update_device", iface_xml(MAC1), {"params": {"qos_profile": "nope"}}),
])
def test_our_message_is_the_hook_error_with_a_silent_script_after_us(tmp_path, make_env,
                                                                      point, data, kw):
    """VDSM raises HookError with the stderr of the LAST script it ran
    (lib/vdsm/common/hooks.py _runHooksDir; before_vm_start: errors[-1]).
    Exit 2 stops the loop at our script, so the engine gets our message,
    not ``Hook Error: (b'',)`` (tests/hooks/test_vdsm_runner.py shows the b''
    with exit 1)."""
    d = _with_silent_neighbour(tmp_path, point)
    with pytest.raises(HookError) as e:
        run_hook_dir(d, data, hook_point=point, base_env=make_env(), vm_id=UUID, **kw)
    assert e.value.result.rcs == (2,)
    (msg,) = e.value.value
    assert b"unknown profile 'nope'" in msg and msg.startswith(b"qos-hooks[")
    assert str(e.value).startswith("Hook Error: (b\"qos-hooks[")


def test_after_hook_failure_lets_the_next_script_run(tmp_path, make_env):
    """after_*: VDSM ignores errors (raiseError=False), so on_error=fail exits
    1 and the scripts after ours still run."""
    d = _with_silent_neighbour(tmp_path, "after_vm_start")
    env = make_env(remote="unix:/nonexistent", timeout=1,
                   extra="on_error.after_vm_start = fail")
    live = domain_xml(iface_xml(MAC0, target="vnet0", bandwidth="<inbound average='1000'/>"))
    res = run_hook_dir(d, live, hook_point="after_vm_start", base_env=env, vm_id=UUID)
    assert res.rcs == (1, 0)


# -- the XML as VDSM and the engine shape it --------------------------------------------

def test_before_vm_start_on_build_domain_xml_shape(make_env):
    """vm.py _buildDomainXML: ElementTree output, namespace declarations on
    <domain>, the vNIC with custom properties moved to the end of <devices>."""
    from tests.vdsm_runner import build_domain_xml
    xml = domain_xml(iface_xml(MAC0)).replace(
        "<ovirt-vm:custom/>",
        "<ovirt-vm:custom><ovirt-vm:qos_profile>silver</ovirt-vm:qos_profile></ovirt-vm:custom>")
    xml = xml.replace("<devices>", "<devices>\n    <controller type='usb'/>")
    shaped = build_domain_xml(xml)
    assert shaped.index("<controller") < shaped.index("<interface")
    res = run("before_vm_start", shaped, make_env(), vm_id=UUID)
    assert res.rcs == (0,), res.stderr
    assert "<inbound average='250'/>" in q(res.data)       # the vNIC's profile


def test_before_nic_hotplug_on_the_engine_hotplug_shape(make_env):
    """ovirt-engine buildHotplugNic -> vm.py hotplugNic: the hook gets the
    bare <interface> with the engine's empty <bandwidth/>, and the vNIC's
    custom properties from <metadata> as params."""
    from tests.vdsm_runner import engine_hotplug_xml, hotplug_nic_xml
    eng = engine_hotplug_xml("<interface type='bridge'><mac address='%s'/>"
                             "<source bridge='ovirtmgmt'/><alias name='ua-1'/>"
                             "<bandwidth/></interface>" % MAC1, {"qos_profile": "silver"})
    nic, params = hotplug_nic_xml(eng)
    assert "<bandwidth />" in nic
    res = run("before_nic_hotplug", nic, make_env(), vm_id=UUID, params=params)
    assert res.rcs == (0,), res.stderr
    assert res.data.count("<bandwidth") == 1
    assert "<inbound average='250'/>" in q(res.data)


def test_before_update_device_keeps_engine_qos_and_fills_gaps(make_env):
    # the engine's new vNIC QoS (inbound) stays; the profile fills outbound
    # (VDSM's update XML: Interface.getXML(), no virtualport, no target dev)
    xml = getxml_iface(MAC1, "<inbound average='3000'/>")
    res = run("before_update_device", xml, make_env(), vm_id=UUID)
    assert "<inbound average='3000'/>" in q(res.data)
    assert "<outbound average='500' burst='128'/>" in q(res.data)


def test_after_hooks_without_ovs_interfaces_need_no_ovsdb(make_env):
    env = make_env()  # OVSDB remote does not exist
    live = domain_xml(iface_xml(MAC0, target="vnet0", ovs=False))
    for point in ("after_vm_start", "after_vm_migrate_destination", "after_vm_destroy"):
        res = run(point, live, env, vm_id=UUID)
        assert res.rcs == (0,), (point, res.stderr)
        assert "ERROR" not in res.stderr, (point, res.stderr)
    # VDSM's getXML() vNIC (no virtualport): no OVSDB socket on this host, so
    # it cannot be on OVS; the root helper is not even started
    for point in ("after_update_device", "after_nic_hotunplug", "after_nic_hotplug"):
        res = run(point, getxml_iface(MAC1, "<inbound average='1000'/>"), env, vm_id=UUID)
        assert res.rcs == (0,), (point, res.stderr)
        assert "ERROR" not in res.stderr and "helper" not in res.stderr, (point, res.stderr)


# -- after_* hooks on a real OVS ----------------------------------------------------

def _ovs_rows(sb):
    return sb.vsctl_json("QoS"), sb.vsctl_json("Queue")


def _tc_rates(sb, dev):
    """{classid: (rate bit/s, ceil bit/s)} of the htb classes on dev (tc text)."""
    return htb_rates(sb.tc_text("class", "show", "dev", dev))


def assert_ovs_has(sb, dev, bandwidth, domain_uuid=UUID):
    """OVSDB and the kernel hold what this project's mapping defines."""
    from qos_hooks.ovs.mapping import OWNER_KEY, map_bandwidth
    want, _ = map_bandwidth(bandwidth)
    port = sb.vsctl_json("Port", "name", "qos", where=["name=%s" % dev])[0]
    iface = sb.vsctl_json("Interface", "ingress_policing_rate", "ingress_policing_burst",
                          where=["name=%s" % dev])[0]
    assert iface["ingress_policing_rate"] == want.policing_rate
    assert iface["ingress_policing_burst"] == want.policing_burst
    if not want.has_inbound:
        assert port["qos"] in ([], None)
        return
    qos = [q for q in sb.vsctl_json("QoS") if q["_uuid"] == port["qos"]][0]
    assert qos["type"] == "linux-htb"
    assert qos["external_ids"][OWNER_KEY] == domain_uuid
    assert int(qos["other_config"]["max-rate"]) == want.qos_max_rate
    queue = [q for q in sb.vsctl_json("Queue") if q["_uuid"] == qos["queues"][0]][0]
    assert int(queue["other_config"]["min-rate"]) == want.queue_min_rate
    assert int(queue["other_config"]["max-rate"]) == want.queue_max_rate
    # the kernel: ovs-vswitchd made root htb 1:, class 1:fffe (QoS max-rate)
    # and class 1:1 for queue 0
    sb.wait_for(lambda: "1:1" in _tc_rates(sb, dev), "htb class 1:1 on %s" % dev)
    rates = _tc_rates(sb, dev)
    assert rates["1:fffe"][1] == want.qos_max_rate
    assert rates["1:1"] == (want.queue_min_rate, want.queue_max_rate)


def _bw(inbound=None, outbound=None):
    return policy.Bandwidth(inbound=policy.Rate(**inbound) if inbound else None,
                            outbound=policy.Rate(**outbound) if outbound else None)


GOLD = _bw({"average": 1000, "peak": 2000, "burst": 256}, {"average": 500, "burst": 128})
SILVER = _bw({"average": 250}, {"average": 125})


def _ns_prefix(sb):
    return ["ip", "netns", "exec", sb.netns]


def test_vm_start_migrate_destroy_on_ovs(ovs_sandbox, make_env):
    sb = ovs_sandbox
    sb.add_port("vnet0", mac=MAC0, external_ids={"attached-mac": MAC0, "vm-id": UUID})
    env = make_env(remote=sb.remote)
    start = run("before_vm_start", domain_xml(iface_xml(MAC0)), env, vm_id=UUID)
    live = start.data.replace("<virtualport type='openvswitch'/>",
                              "<virtualport type='openvswitch'/>\n      <target dev='vnet0'/>")
    res = run("after_vm_start", live, env, vm_id=UUID, argv_prefix=_ns_prefix(sb))
    assert res.rcs == (0,), res.stderr
    assert "ERROR" not in res.stderr, res.stderr
    assert_ovs_has(sb, "vnet0", GOLD)
    qos, queues = _ovs_rows(sb)
    assert (len(qos), len(queues)) == (1, 1)
    # an incoming migration applies the same state (idempotent: no new rows)
    res = run("after_vm_migrate_destination", live, env, vm_id=UUID,
              argv_prefix=_ns_prefix(sb))
    assert res.rcs == (0,), res.stderr
    assert_ovs_has(sb, "vnet0", GOLD)
    assert tuple(map(len, _ovs_rows(sb))) == (1, 1)
    res = run("after_vm_destroy", live, env, vm_id=UUID, argv_prefix=_ns_prefix(sb))
    assert res.rcs == (0,), res.stderr
    assert tuple(map(len, _ovs_rows(sb))) == (0, 0)
    iface = sb.vsctl_json("Interface", "ingress_policing_rate", where=["name=vnet0"])[0]
    assert iface["ingress_policing_rate"] == 0


def test_nic_hotplug_update_unplug_on_ovs(ovs_sandbox, make_env):
    sb = ovs_sandbox
    env = make_env(remote=sb.remote)
    plugged = run("before_nic_hotplug", iface_xml(MAC1), env, vm_id=UUID,
                  params={"qos_profile": "silver"}).data
    # libvirt attaches the tap; VDSM's after_nic_hotplug gets the pre-attach
    # XML (no target dev): the port is found by external_ids:attached-mac
    sb.add_port("vnet7", mac=MAC1, external_ids={"attached-mac": MAC1, "vm-id": UUID})
    res = run("after_nic_hotplug", plugged, env, vm_id=UUID, argv_prefix=_ns_prefix(sb))
    assert res.rcs == (0,), res.stderr
    assert "ERROR" not in res.stderr, res.stderr
    assert_ovs_has(sb, "vnet7", SILVER)
    # the engine changes the vNIC's QoS while the VM runs: new limits now.
    # VDSM builds the update's XML with Interface.getXML(): no virtualport,
    # no target dev; the port is found by attached-mac + vm-id
    new = getxml_iface(MAC1, "<inbound average='1000' peak='2000' burst='256'/>"
                             "<outbound average='500' burst='128'/>")
    updated = run("before_update_device", new, env, vm_id=UUID).data
    res = run("after_update_device", updated, env, vm_id=UUID, argv_prefix=_ns_prefix(sb))
    assert res.rcs == (0,), res.stderr
    assert "ERROR" not in res.stderr, res.stderr
    assert_ovs_has(sb, "vnet7", GOLD)
    assert tuple(map(len, _ovs_rows(sb))) == (1, 1)  # the old rows are gone
    res = run("after_nic_hotunplug", getxml_iface(MAC1, "<inbound average='1000'/>"), env,
              vm_id=UUID, argv_prefix=_ns_prefix(sb))
    assert res.rcs == (0,), res.stderr
    assert "ERROR" not in res.stderr, res.stderr
    assert tuple(map(len, _ovs_rows(sb))) == (0, 0)


def test_getxml_vnics_on_a_linux_bridge_never_reach_the_helper(ovs_sandbox, make_env):
    """A getXML() vNIC whose source bridge is a Linux bridge is not on OVS:
    the hook decides so from sysfs, without the root helper or OVSDB; a MAC
    no OVS Interface carries is "not an OVS vNIC" too (one lookup, exit 0)."""
    sb = ovs_sandbox
    sb.ns("ip", "link", "add", "lxbr0", "type", "bridge")
    env = make_env(remote=sb.remote)
    for point in ("after_update_device", "after_nic_hotunplug"):
        res = run(point, getxml_iface(MAC1, "<inbound average='1000'/>", bridge="lxbr0"), env,
                  vm_id=UUID, argv_prefix=_ns_prefix(sb))
        assert res.rcs == (0,), (point, res.stderr)
        assert "helper" not in res.stderr and "ERROR" not in res.stderr, res.stderr
        res = run(point, getxml_iface(MAC1, "<inbound average='1000'/>"), env, vm_id=UUID,
                  argv_prefix=_ns_prefix(sb))
        assert res.rcs == (0,), (point, res.stderr)
        assert "ERROR" not in res.stderr, res.stderr
    assert tuple(map(len, _ovs_rows(sb))) == (0, 0)


@pytest.mark.parametrize("mode", ["stopped", "paused"])
def test_ovsdb_down_is_bounded_and_follows_on_error(ovs_sandbox, make_env, mode):
    """OVSDB gone, or accepting connections and never answering (SIGSTOP):
    the hook ends within its bound (the runner would kill it and fail the
    test) and exits by the failure policy."""
    sb = ovs_sandbox
    sb.add_port("vnet0", mac=MAC0, external_ids={"attached-mac": MAC0})
    live = domain_xml(iface_xml(MAC0, target="vnet0", bandwidth="<inbound average='1000'/>"))
    if mode == "stopped":
        sb.stop_ovsdb()
    else:
        sb.pause_ovsdb()
    try:
        res = run("after_vm_start", live, make_env(remote=sb.remote, timeout=1), vm_id=UUID,
                  argv_prefix=_ns_prefix(sb))
        assert res.rcs == (0,)
        assert "on_error=continue" in res.stderr
        env = make_env(remote=sb.remote, timeout=1, extra="on_error.after_vm_start = fail")
        res = run("after_vm_start", live, env, vm_id=UUID, argv_prefix=_ns_prefix(sb))
        assert res.rcs == (1,)
        assert "on_error=fail" in res.stderr
    finally:
        if mode == "paused":
            sb.resume_ovsdb()


def test_hooks_reach_the_helper_through_sudo(tmp_path, make_env):
    """Not root in production: the hook runs ``sudo -n HELPER``.  Here (root,
    no vdsm user) sudo still resets the environment, so the helper ignores
    the caller's config and reports the default remote as unreachable; the
    hook logs the helper's lines and carries on (after_* default)."""
    if os.geteuid() != 0 or shutil.which("sudo") is None:
        require("needs root and sudo (tests/install-deps.sh)")
    wrapper = tmp_path / "qos-hooks-helper"
    wrapper.write_text("#!%s\nimport sys\nsys.path.insert(0, %r)\n"
                       "from qos_hooks.priv.helper import main\nsys.exit(main())\n"
                       % (sys.executable, REPO))
    wrapper.chmod(0o755)
    env = make_env()
    env.update(QOS_HOOKS_SUDO="1", QOS_HOOKS_HELPER=str(wrapper))
    live = domain_xml(iface_xml(MAC0, target="vnet0", bandwidth="<inbound average='1000'/>"))
    res = run("after_vm_start", live, env, vm_id=UUID)
    assert res.rcs == (0,)
    assert "helper: qos-hooks" in res.stderr and "by=root" in res.stderr
    assert "no-ovsdb.sock" not in res.stderr


def test_hook_point_import_cost_stays_light():
    """before_vm_start must not import ovs, pyroute2 or libvirt."""
    code = ("import sys, qos_hooks.hooks.vdsm_vm as h; import qos_hooks.core.domxml, qos_hooks.core.rewrite; "
            "print(sorted(m for m in ('ovs', 'pyroute2', 'libvirt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         universal_newlines=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def _procs_with(marker):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_hanging_helper_is_killed_and_the_hook_bounded(tmp_path, make_env):
    """A helper that never answers (stuck on OVSDB, or anything else): the
    hook kills its process group at ovsdb_timeout + HELPER_MARGIN and exits
    by the failure policy; nothing of the helper is left running."""
    marker = "qh4-hang-%d" % os.getpid()
    hang = tmp_path / marker  # its path is in the shell's command line
    hang.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")
    hang.chmod(0o755)
    env = make_env(timeout=1)
    env.update(QOS_HOOKS_HELPER=str(hang))
    live = domain_xml(iface_xml(MAC0, target="vnet0", bandwidth="<inbound average='1000'/>"))
    res = run("after_vm_start", live, env, vm_id=UUID)
    assert res.rcs == (0,)
    assert "did not finish within" in res.stderr
    env_fail = dict(env)
    env_fail["QOS_HOOKS_CONFIG"] = str(tmp_path / "fail.conf")
    (tmp_path / "fail.conf").write_text(GOLD_CONF.format(
        remote="unix:/nonexistent", timeout=1, extra="on_error.after_vm_start = fail"))
    res = run("after_vm_start", live, env_fail, vm_id=UUID)
    assert res.rcs == (1,)
    assert _procs_with(marker) == []
    # and the check above can see such a process at all
    p = subprocess.Popen([str(hang)])
    try:
        import time
        deadline = time.monotonic() + 10
        while p.pid not in _procs_with(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert p.pid in _procs_with(marker)
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("point,extra", [
    ("after_vm_start", ""),
    # continue: exit 0, so the script after ours runs (exit 2 would stop the
    # loop and leave VDSM -- and the runner -- blocked reading the FIFO)
    ("before_vm_start", "on_error.before_vm_start = continue"),
])
def test_watchdog_is_the_only_bound(tmp_path, make_env, point, extra):
    """VDSM waits for a hook without a timeout (_runHooksDir: communicate()),
    and so does the runner: the hook's own watchdog must end it.  A script
    before ours swaps the data file for a FIFO with no writer, so our hook
    blocks in open(2) forever; the watchdog (ovsdb_timeout + HOOK_MARGIN)
    exits by the failure policy, and a script after ours puts a file back
    for VDSM to re-read."""
    d = tmp_path / point
    d.mkdir()
    shutil.copy(os.path.join(hook_dir(point), "50_qos_hooks"), d / "50_qos_hooks")
    (d / "10_fifo").write_text('#!/bin/sh\nrm -f "$_hook_domxml"\nmkfifo "$_hook_domxml"\n')
    (d / "90_restore").write_text('#!/bin/sh\nrm -f "$_hook_domxml"\n'
                                  'printf "<domain/>" > "$_hook_domxml"\n')
    for n in ("10_fifo", "90_restore"):
        (d / n).chmod(0o755)
    env = make_env(timeout=1, extra=extra)
    res = run_hook_dir(str(d), domain_xml(iface_xml(MAC0)), hook_point=point,
                       base_env=env, vm_id=UUID)
    assert res.rcs == (0, 0, 0)
    assert "%s exceeded its bound of 5.0s" % point in res.stderr
    assert "on_error=continue" in res.stderr and res.data == "<domain/>"


# -- the root helper starts first (qos_hooks.priv.client.prestart) ---------------------

SPY = '''\
import os, sys
_log = open(os.environ["QH_SPY_LOG"], "a")
_spawn = os.posix_spawnp
def _spy_spawn(path, argv, *a, **kw):
    _log.write("spawn %s\\n" % argv[-1]); _log.flush()
    return _spawn(path, argv, *a, **kw)
os.posix_spawnp = _spy_spawn
class _Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("lxml.etree", "qos_hooks.core.policy", "qos_hooks.hooks.vdsm_vm"):
            _log.write("import %s\\n" % name); _log.flush()
        return None
sys.meta_path.insert(0, _Spy())
'''


def _spied_run(tmp_path, point, xml, env):
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir(exist_ok=True)
    (spy_dir / "sitecustomize.py").write_text(SPY)
    log = tmp_path / "spy.log"
    if log.exists():
        log.unlink()
    env = dict(env, PYTHONPATH=str(spy_dir) + os.pathsep + env["PYTHONPATH"],
               QH_SPY_LOG=str(log))
    res = run(point, xml, env, vm_id=UUID)
    return res, (log.read_text().splitlines() if log.exists() else [])


@pytest.mark.parametrize("point", OVS_POINTS)
def test_ovs_hooks_start_the_helper_before_importing_lxml(tmp_path, make_env, point):
    """The executables of the OVS hook points start the root helper before
    they import the policy code or lxml, so the helper's start-up runs while
    the hook parses.  Seen from inside the hook process: a sitecustomize
    spy logs os.posix_spawnp and the imports, in order."""
    env = make_env()
    xml = (domain_xml(iface_xml(MAC0, target="vnet0", bandwidth="<inbound average='1000'/>"))
           if point in ("after_vm_start", "after_vm_migrate_destination", "after_vm_destroy")
           else iface_xml(MAC0, bandwidth="<inbound average='1000'/>"))
    res, events = _spied_run(tmp_path, point, xml, env)
    assert events, res.stderr
    assert events[0] == "spawn %s" % HELPER, events
    assert "import lxml.etree" in events and "import qos_hooks.hooks.vdsm_vm" in events
    assert [e for e in events if e.startswith("spawn")] == ["spawn %s" % HELPER], events
    # the helper then did the work (here: OVSDB is down, so it says so)
    assert "no-ovsdb.sock" in res.stderr, res.stderr


def test_no_early_helper_without_openvswitch_in_the_xml(tmp_path, make_env):
    """A domain whose XML never says openvswitch starts no helper at all."""
    env = make_env()
    live = domain_xml(iface_xml(MAC0, target="vnet0", ovs=False))
    res, events = _spied_run(tmp_path, "after_vm_start", live, env)
    assert res.rcs == (0,), res.stderr
    assert not [e for e in events if e.startswith("spawn")], events


def test_an_early_helper_with_nothing_to_do_is_released(tmp_path, make_env):
    """The XML says openvswitch, but no vNIC is on OVS (here: only in the
    description): the early helper gets an empty stdin and exits 0 quietly;
    the hook reaps it and reports no helper message."""
    env = make_env()
    live = domain_xml(iface_xml(MAC0, target="vnet0", ovs=False)).replace(
        "<vcpu>", "<description>moved off openvswitch</description>\n  <vcpu>")
    res, events = _spied_run(tmp_path, "after_vm_start", live, env)
    assert res.rcs == (0,), res.stderr
    assert events[0] == "spawn %s" % HELPER, events
    assert "helper" not in res.stderr and "ERROR" not in res.stderr, res.stderr
