"""Which OVS rows a request may touch (issue 9 items 1 and 2), against a real
ovsdb-server (tests/ovs_sandbox.py).

The backend (used by the root helper and by ``qos-hooks apply`` as root)
acts only on the requesting VM's own port: one Interface, of a VM's type,
not a bridge's local port, ``external_ids:attached-mac`` == the request's
MAC and, where libvirt set it, ``external_ids:vm-id`` == the request's UUID.
Anything else, and the same port or MAC twice, is refused whole with exit 8
(qos_hooks.core.errors.PortRefused) and NOTHING changes in OVSDB.

Oracle: ``ovs-vsctl --format=json list TABLE`` for every table qos-hooks
reads or writes, byte for byte.  ovs-vswitchd is stopped while the refusals
run, so nothing else writes (it would update Interface statistics): the
database is exactly what the request found.
"""

import json
import os
import subprocess
import sys

import pytest

from qos_hooks.ovs import backend as ovs_backend
from qos_hooks.priv import protocol as privproto
from qos_hooks.core.desired import DomainQos, InterfaceQos
from qos_hooks.core.errors import EXIT_PERMISSION, PortRefused
from qos_hooks.ovs.mapping import OWNER_KEY
from qos_hooks.core.policy import Bandwidth, Rate
from tests.ovs_sandbox import require, running_sandbox

pytestmark = [pytest.mark.root, pytest.mark.ovs]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(REPO, "libexec", "qos-hooks-helper")
U = "6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e"
OTHER = "0d5e2a9c-1111-4c3e-9a57-1d2f3b4c5d6e"
MAC = "52:54:00:6b:1f:01"
MAC_OTHER = "52:54:00:6b:1f:99"
TIMEOUT = 20
BW = Bandwidth(inbound=Rate(average=1000, peak=2000, burst=256),
               outbound=Rate(average=500, burst=128))
TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface", "QoS", "Queue")


def _build(sb):
    """The VM's tap vnet0 and everything around it that is NOT the VM's."""
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC, "vm-id": U})
    # an uplink: a plain system interface, no attached-mac
    sb.add_port("uplink0", isolated=False)
    # another VM's tap (other MAC, other vm-id) carrying that VM's qos-hooks QoS
    sb.add_port("vnet1", isolated=False,
                external_ids={"attached-mac": MAC_OTHER, "vm-id": OTHER})
    tags = ["external_ids:%s=%s" % kv for kv in ((OWNER_KEY, OTHER),
                                                 ("qos-hooks-mac", '"%s"' % MAC_OTHER),
                                                 ("qos-hooks-ifname", "vnet1"))]
    sb.vsctl("set", "Port", "vnet1", "qos=@q", "--", "--id=@q", "create", "QoS",
             "type=linux-htb", "other_config:max-rate=5000000", "queues:0=@u", *tags,
             "--", "--id=@u", "create", "Queue", "other_config:min-rate=1000000",
             "other_config:max-rate=1000000", *tags)
    # a tap with the SAME MAC as our VM's but another domain's vm-id
    sb.add_port("vnet2", isolated=False, external_ids={"attached-mac": MAC, "vm-id": OTHER})
    # forged attached-mac/vm-id on types that are never a VM's
    forged = ["external_ids:attached-mac=\"%s\"" % MAC, "external_ids:vm-id=%s" % U]
    sb.vsctl("add-port", sb.bridge, "patch0", "--", "set", "Interface", "patch0", "type=patch",
             "options:peer=patch1", *forged)
    sb.vsctl("add-port", sb.bridge, "int0", "--", "set", "Interface", "int0", "type=internal",
             *forged)
    sb.vsctl("add-port", sb.bridge, "vxlan0", "--", "set", "Interface", "vxlan0", "type=vxlan",
             "options:remote_ip=192.0.2.1", *forged)
    # a bond: two interfaces in one port, one of them claiming the VM's MAC
    for dev in ("bonda", "bondb"):
        sb.add_veth(dev, isolated=False)
    sb.vsctl("add-bond", sb.bridge, "bond0", "bonda", "bondb", "--", "set", "Interface",
             "bonda", *forged)
    # the bridge's own local port, claiming the VM's MAC too
    sb.vsctl("set", "Interface", sb.bridge, *forged)


@pytest.fixture(scope="module")
def rig():
    with running_sandbox() as sb:
        _build(sb)
        # from here on only the request could write: freeze the database
        sb.stop_vswitchd()
        yield sb


def dump(sb):
    """``ovs-vsctl --format=json list T`` for each table: the bytes compared."""
    return {t: sb.vsctl("--format=json", "list", t) for t in TABLES}


def dq(*ifaces, uuid=U):
    return DomainQos(uuid, "web01", tuple(ifaces))


CASES = {
    "bridge local port": (dq(InterfaceQos(MAC, "br0", BW)),
                          ["port br0", "bridge br0's own local port"]),
    "uplink veth": (dq(InterfaceQos(MAC, "uplink0", BW)),
                    ["port uplink0", "attached-mac=(none)"]),
    "another VM's tap (other MAC)": (dq(InterfaceQos(MAC, "vnet1", BW)),
                                     ["port vnet1", "attached-mac=%s" % MAC_OTHER]),
    "another VM's tap (its MAC)": (dq(InterfaceQos(MAC_OTHER, "vnet1", BW)),
                                   ["port vnet1", "belongs to domain %s" % OTHER]),
    "same MAC, other vm-id": (dq(InterfaceQos(MAC, "vnet2", BW)),
                              ["port vnet2", "belongs to domain %s" % OTHER]),
    "patch port": (dq(InterfaceQos(MAC, "patch0", BW)), ["port patch0", "type patch"]),
    "internal port": (dq(InterfaceQos(MAC, "int0", BW)), ["port int0", "type internal"]),
    "tunnel port": (dq(InterfaceQos(MAC, "vxlan0", BW)), ["port vxlan0", "type vxlan"]),
    "bond": (dq(InterfaceQos(MAC, "bond0", BW)), ["port bond0", "2 interfaces"]),
    "no MAC in the request": (dq(InterfaceQos(None, "vnet0", BW)),
                              ["port vnet0", "carries no MAC"]),
    "own tap and an uplink": (dq(InterfaceQos(MAC, "vnet0", BW),
                                 InterfaceQos("52:54:00:6b:1f:02", "uplink0", BW)),
                              ["port uplink0"]),
    "same target dev twice": (dq(InterfaceQos(MAC, "vnet0", BW),
                                 InterfaceQos("52:54:00:6b:1f:02", "vnet0", BW)),
                              ["target_dev vnet0 appears twice"]),
    "same MAC twice": (dq(InterfaceQos(MAC, "vnet0", BW), InterfaceQos(MAC, None, BW)),
                       ["mac %s appears twice" % MAC]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_refuses_what_is_not_the_vms_own(rig, name):
    request, words = CASES[name]
    before = dump(rig)
    with pytest.raises(PortRefused) as exc:
        ovs_backend.apply_domain(request, remote=rig.remote, timeout=TIMEOUT)
    assert exc.value.exit_code == EXIT_PERMISSION == 8
    for w in words:
        assert w in str(exc.value), str(exc.value)
    assert "nothing was changed" in str(exc.value)
    assert dump(rig) == before


def test_a_mac_only_request_never_finds_another_vms_tap(rig):
    """By MAC (VDSM's getXML() documents), vm-id decides: another domain's
    tap with the MAC asked for is not this VM's vNIC; nothing is written."""
    before = dump(rig)
    report = ovs_backend.apply_domain(dq(InterfaceQos(MAC_OTHER, None, BW)), remote=rig.remote,
                                      timeout=TIMEOUT)
    assert [o.action for o in report.outcomes] == ["not-on-ovs"]
    assert report.plan.ops == ()
    assert dump(rig) == before


def test_clear_of_a_foreign_port_name_touches_nothing_of_another_vm(rig):
    """clear selects qos-hooks rows by uuid, MAC and interface name: naming
    another VM's port changes nothing."""
    before = dump(rig)
    ovs_backend.clear_domain(dq(InterfaceQos(MAC, "vnet1", Bandwidth())), remote=rig.remote,
                             timeout=TIMEOUT)
    assert dump(rig) == before


def _helper_env(tmp_path, remote):
    conf = tmp_path / "qos-hooks.conf"
    conf.write_text("[settings]\novsdb = %s\novsdb_timeout = %d\n" % (remote, TIMEOUT))
    env = dict(os.environ, QOS_HOOKS_CONFIG=str(conf),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SUDO_UID", None)
    return env


@pytest.mark.parametrize("name", ["bridge local port", "uplink veth", "same target dev twice"])
def test_the_root_helper_exits_8_naming_the_port(rig, tmp_path, name):
    """The real helper executable, as the VDSM hooks run it (without sudo:
    the suite is root; tests/priv/test_privhelper.py drives it the same way)."""
    if os.geteuid() != 0:
        require("needs root: the helper refuses to run as another user")
    request, words = CASES[name]
    before = dump(rig)
    p = subprocess.run([HELPER], input=privproto.build_request("apply", request),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=_helper_env(tmp_path, rig.remote), timeout=TIMEOUT + 30)
    err = p.stderr.decode()
    assert p.returncode == 8, err
    for w in words:
        assert w in err
    assert dump(rig) == before


def test_qos_hooks_apply_exits_8_naming_the_port(rig, tmp_path):
    xml = tmp_path / "dom.xml"
    xml.write_text("""<domain type='kvm'><name>web01</name><uuid>%s</uuid><devices>
      <interface type='bridge'><mac address='%s'/><source bridge='br0'/>
        <virtualport type='openvswitch'/><target dev='br0'/>
        <bandwidth><inbound average='1000'/></bandwidth></interface>
    </devices></domain>""" % (U, MAC))
    conf = tmp_path / "empty.conf"
    conf.write_text("[settings]\n")
    before = dump(rig)
    p = subprocess.run([sys.executable, "-m", "qos_hooks", "apply", "--config", str(conf),
                        "--ovsdb", rig.remote, "--timeout", str(TIMEOUT), str(xml)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=TIMEOUT + 30)
    assert p.returncode == 8, p.stderr
    assert "port br0" in p.stderr and "local port" in p.stderr
    assert dump(rig) == before


def test_the_vms_own_tap_is_applied(ovs_sandbox):
    """The positive control: the same rules let the VM's own tap through,
    by target dev and by MAC, with libvirt's vm-id or without one."""
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC, "vm-id": U})
    sb.add_port("vnet5", isolated=False, external_ids={"attached-mac": "52:54:00:6b:1f:05"})
    report = ovs_backend.apply_domain(
        dq(InterfaceQos(MAC, "vnet0", BW), InterfaceQos("52:54:00:6b:1f:05", None, BW)),
        remote=sb.remote, timeout=TIMEOUT, netns=sb.netns)
    assert [(o.port, o.action) for o in report.outcomes] == [("vnet0", "applied"),
                                                             ("vnet5", "applied")]
    for dev in ("vnet0", "vnet5"):
        port = sb.vsctl_json("Port", "qos", where=["name=%s" % dev])[0]
        qos = [q for q in sb.vsctl_json("QoS") if q["_uuid"] == port["qos"]][0]
        assert qos["external_ids"][OWNER_KEY] == U
    assert json.loads(sb.vsctl("--format=json", "get", "Interface", "vnet0",
                               "ingress_policing_rate")) == 4000


# -- clear: which rows a domain's clear removes (issue 16 items 9, 10) ---------------

QEMU_HOOK = os.path.join(REPO, "libvirt-hooks", "qemu.d", "50_qos_hooks")


def _live_xml(*ifaces):
    nics = "".join("""
    <interface type='bridge'><mac address='%s'/><source bridge='br0'/>
      <virtualport type='openvswitch'/><target dev='%s'/>
      <bandwidth><inbound average='1000'/><outbound average='500'/></bandwidth>
    </interface>""" % i for i in ifaces)
    return "<domain type='kvm'><name>web01</name><uuid>%s</uuid><devices>%s\n</devices></domain>" \
        % (U, nics)


def _qemu_hook(sb, tmp_path, op, sub, xml):
    """The libvirt qemu hook executable, with the environment libvirt gives it
    (virCommandAddEnvPassCommon), in the switch's namespace."""
    conf = tmp_path / "hook.conf"
    conf.write_text("[settings]\novsdb = %s\novsdb_timeout = %d\n" % (sb.remote, TIMEOUT))
    env = {"LC_ALL": "C", "PATH": os.environ["PATH"], "HOME": "/", "PYTHONPATH": REPO,
           "QOS_HOOKS_CONFIG": str(conf)}
    p = subprocess.run(sb.ns_argv([QEMU_HOOK, "web01", op, sub, "-"]), input=xml.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                       timeout=TIMEOUT + 30)
    return p.returncode, p.stderr.decode()


def _ours(sb):
    return [r for t in ("QoS", "Queue") for r in sb.vsctl_json(t)
            if r["external_ids"].get(OWNER_KEY) == U]


def test_stopped_removes_the_rows_of_a_nic_detached_by_plain_libvirt(ovs_sandbox, tmp_path):
    """``virsh detach-device`` on plain libvirt runs no hook: libvirt removes
    the port and our QoS/Queue rows stay, referenced by nothing.  The
    domain's ``stopped`` clear (whose XML no longer lists that NIC) removes
    them too."""
    sb = ovs_sandbox
    mac1 = "52:54:00:6b:1f:02"
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC, "vm-id": U})
    sb.add_port("vnet1", isolated=False, external_ids={"attached-mac": mac1, "vm-id": U})
    rc, err = _qemu_hook(sb, tmp_path, "started", "begin",
                         _live_xml((MAC, "vnet0"), (mac1, "vnet1")))
    assert rc == 0 and "ERROR" not in err, err
    assert len(_ours(sb)) == 4
    sb.del_port("vnet1")                          # libvirt's detach: the port goes
    assert len(_ours(sb)) == 4                    # ... and our rows of vnet1 stay
    rc, err = _qemu_hook(sb, tmp_path, "stopped", "end", _live_xml((MAC, "vnet0")))
    assert rc == 0 and "ERROR" not in err, err
    assert _ours(sb) == []


def test_a_migration_sources_stopped_spares_the_destinations_rows(ovs_sandbox, tmp_path):
    """Two libvirt daemons sharing one OVSDB: the destination applied on its
    own port (same domain UUID and MAC, another interface name); the
    source's ``stopped`` (XML with the source's <target dev>) then clears
    only the source's rows."""
    sb = ovs_sandbox
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC, "vm-id": U})
    rc, err = _qemu_hook(sb, tmp_path, "started", "begin", _live_xml((MAC, "vnet0")))
    assert rc == 0 and "ERROR" not in err, err
    source_rows = {r["_uuid"] for r in _ours(sb)}
    # the destination's port: same MAC and vm-id, another name
    sb.add_port("vnet7", isolated=False, external_ids={"attached-mac": MAC, "vm-id": U})
    ovs_backend.apply_domain(dq(InterfaceQos(MAC, "vnet7", BW)), remote=sb.remote,
                             timeout=TIMEOUT, netns=sb.netns)
    dest = {r["_uuid"]: r for r in _ours(sb) if r["_uuid"] not in source_rows}
    assert len(dest) == 2
    dest_port_qos = sb.vsctl("get", "Port", "vnet7", "qos").strip()
    dest_policing = sb.vsctl("get", "Interface", "vnet7", "ingress_policing_rate").strip()
    # the source side: libvirt removes its port, then runs 'stopped'
    sb.del_port("vnet0")
    rc, err = _qemu_hook(sb, tmp_path, "stopped", "end", _live_xml((MAC, "vnet0")))
    assert rc == 0 and "ERROR" not in err, err
    assert {r["_uuid"]: r for r in _ours(sb)} == dest
    assert sb.vsctl("get", "Port", "vnet7", "qos").strip() == dest_port_qos
    assert sb.vsctl("get", "Interface", "vnet7", "ingress_policing_rate").strip() \
        == dest_policing == "4000"
