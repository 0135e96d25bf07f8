"""The rewriter: fill versus override, profile precedence, skips with reasons,
the oVirt and plain CPU paths, idempotence, and everything else kept."""

import pytest

from qos_hooks.core import policy
from qos_hooks.core.domxml import DomainDoc
from qos_hooks.core.plan import SetCpuTune, SetDiskIoTune, SetInterfaceBandwidth, SetVcpuLimit
from qos_hooks.core.policy import Bandwidth, IoTune, Rate
from qos_hooks.core.rewrite import rewrite
from tests.core_helpers import config, strip_qos, validate

CONF = """\
[settings]
host_cpus = 8

[profile fill]
inbound.average = 100Mbit
inbound.peak = 200Mbit
outbound.average = 50Mbit
disk.total_iops_sec = 1000
cpu.limit = 50
cpu.shares = 2048

[profile override]
on_existing = override
inbound.average = 100Mbit
outbound.average = 50Mbit
disk.read_iops_sec = 300
cpu.limit = 25
cpu.shares = 512

[profile nic]
inbound.average = 1000

[profile floor]
inbound.average = 1000
inbound.floor = 500

[profile quota]
cpu.quota = 50000
cpu.period = 100000

[profile unlimited]
cpu.quota = -1

[profile period]
cpu.period = 50000

[profile grouped]
disk.total_iops_sec = 100
disk.group_name = shared

[profile sata]
disk.total_iops_sec = 100
[profile sata disk bus=sata]
total_iops_sec = 50
"""

OVIRT = """<?xml version='1.0' encoding='utf-8'?>
<domain xmlns:ovirt-tune="http://ovirt.org/vm/tune/1.0" xmlns:ovirt-vm="http://ovirt.org/vm/1.0" type="kvm">
  <name>vm1</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <memory>1048576</memory>
  <vcpu current="2">4</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
  </os>
  <metadata>
    <ovirt-tune:qos/>
    <ovirt-vm:vm>
      <ovirt-vm:custom>
        <ovirt-vm:qos_profile>{vm_profile}</ovirt-vm:qos_profile>
      </ovirt-vm:custom>
      <ovirt-vm:device mac_address="56:6f:00:00:00:02">
        <ovirt-vm:custom>
          <ovirt-vm:qos_profile>nic</ovirt-vm:qos_profile>
        </ovirt-vm:custom>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
  <devices>
    <!-- engine-made devices -->
    <disk device="disk" snapshot="no" type="file">
      <target bus="virtio" dev="vda"/>
      <source file="/rhev/a"/>
      <driver cache="none" name="qemu" type="qcow2"/>
    </disk>
    <disk device="cdrom" type="file">
      <target bus="sata" dev="sdc"/>
      <readonly/>
    </disk>
    <interface type="bridge">
      <model type="virtio"/>
      <source bridge="ovirtmgmt"/>
      <mac address="56:6f:00:00:00:01"/>
      <filterref filter="vdsm-no-mac-spoofing"/>
      <bandwidth/>
    </interface>
    <interface type="bridge">
      <model type="virtio"/>
      <source bridge="vmnet"/>
      <mac address="56:6f:00:00:00:02"/>
    </interface>
    <interface type="bridge">
      <model type="virtio"/>
      <source bridge="engine-qos"/>
      <mac address="56:6f:00:00:00:03"/>
      <bandwidth>
        <inbound average="2500" burst="1000" peak="3750"/>
      </bandwidth>
    </interface>
  </devices>
</domain>
"""

PLAIN = """<domain type='kvm'>
  <name>plain</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>4</vcpu>
  {cputune}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/a.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <iotune>
        <total_bytes_sec>5000000</total_bytes_sec>
      </iotune>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/b.qcow2'/>
      <target dev='sdb' bus='sata'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:00:00:01'/>
      <source bridge='br0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:00:00:02'/>
      <source network='default'/>
    </interface>
    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:00:00:03'/>
      <source>
        <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x1'/>
      </source>
    </interface>
  </devices>
</domain>
"""


def run(xml, profile=None, env_profile=None, conf=CONF, host_cpus=None):
    doc = DomainDoc(xml.encode("utf-8") if isinstance(xml, str) else xml, "dom.xml")
    sel = policy.Selection(cli_profile=profile, env_vm_profile=env_profile)
    plan = rewrite(doc, config(conf), sel, host_cpus=host_cpus)
    return doc, plan


def ovirt(vm_profile="fill"):
    return OVIRT.format(vm_profile=vm_profile)


def plain(cputune=""):
    return PLAIN.format(cputune=cputune)


def ops(plan, kind):
    return [op for op in plan.ops if isinstance(op, kind)]


def bw_of(doc, mac):
    return next(i.bandwidth for i in DomainDoc(doc.serialize()).interfaces() if i.mac == mac)


# -- bandwidth: fill versus override ----------------------------------------------------

def test_fill_fills_gaps_and_keeps_the_engines_qos():
    doc, plan = run(ovirt("fill"))
    # empty <bandwidth/> from the engine: filled from the VM profile
    assert bw_of(doc, "56:6f:00:00:00:01") == Bandwidth(
        inbound=Rate(average=12500, peak=25000), outbound=Rate(average=6250))
    # the engine's inbound is kept; only the missing outbound is added
    assert bw_of(doc, "56:6f:00:00:00:03") == Bandwidth(
        inbound=Rate(average=2500, peak=3750, burst=1000), outbound=Rate(average=6250))
    bw_ops = ops(plan, SetInterfaceBandwidth)
    assert "inbound average 20Mbit/s (2500 KB/s), peak 30Mbit/s (3750 KB/s), burst " \
           "1000KiB (kept from the XML)" in bw_ops[2].describe()


def test_override_replaces_the_engines_qos():
    doc, _ = run(ovirt("override"))
    assert bw_of(doc, "56:6f:00:00:00:03") == Bandwidth(
        inbound=Rate(average=12500), outbound=Rate(average=6250))


def test_empty_bandwidth_is_replaced_not_appended():
    doc, _ = run(ovirt("fill"))
    out = DomainDoc(doc.serialize())
    for iface in out.root.findall("devices/interface"):
        assert len(iface.findall("bandwidth")) == 1


# -- profile selection precedence -------------------------------------------------------

def test_vnic_profile_from_metadata_wins_for_that_vnic():
    doc, plan = run(ovirt("fill"))
    assert bw_of(doc, "56:6f:00:00:00:02") == Bandwidth(inbound=Rate(average=1000))
    op = [o for o in ops(plan, SetInterfaceBandwidth) if o.mac == "56:6f:00:00:00:02"][0]
    assert op.profile == "nic (vNIC custom property qos_profile (metadata))"


def test_cli_profile_beats_env_and_metadata():
    doc, plan = run(ovirt("fill"), profile="override", env_profile="fill")
    assert bw_of(doc, "56:6f:00:00:00:01").outbound == Rate(average=6250)
    assert ops(plan, SetDiskIoTune)[0].profile == "override"
    # ...but the vNIC's own property still wins for its vNIC
    assert bw_of(doc, "56:6f:00:00:00:02") == Bandwidth(inbound=Rate(average=1000))


def test_env_profile_beats_metadata():
    _, plan = run(ovirt("fill"), env_profile="override")
    assert ops(plan, SetDiskIoTune)[0].profile == "override"


def test_default_profile_when_nothing_names_one():
    conf = CONF.replace("host_cpus = 8", "host_cpus = 8\ndefault_profile = nic")
    doc, plan = run(plain(), conf=conf)
    assert [o.mac for o in ops(plan, SetInterfaceBandwidth)] == [
        "52:54:00:00:00:01", "52:54:00:00:00:02"]


def test_no_profile_changes_nothing():
    doc, plan = run(plain())
    assert plan.is_empty() and not doc.changed and doc.serialize() == doc.original


# -- skips with a logged reason ---------------------------------------------------------

def test_hostdev_interface_is_skipped_with_a_reason():
    _, plan = run(plain(), profile="nic")
    assert ("skipped interface 52:54:00:00:00:03: <interface type='hostdev'> does not "
            "support <bandwidth> (libvirt virNetDevSupportsBandwidth)") in plan.warnings


def test_empty_cdrom_is_skipped_with_a_reason():
    doc, plan = run(ovirt("fill"))
    assert "skipped disk sdc: empty cdrom drive (no medium to throttle)" in plan.warnings
    assert DomainDoc(doc.serialize()).disks()[1].iotune is None


def test_vhostuser_disk_is_skipped():
    xml = plain().replace("<disk type='file' device='disk'>\n      <source file='/var/lib/"
                          "libvirt/images/b.qcow2'/>",
                          "<disk type='vhostuser' device='disk'>\n      <source type='unix' "
                          "path='/tmp/vhost'/>")
    _, plan = run(xml, profile="fill")
    assert any(w.startswith("skipped disk sdb: vhost-user disks bypass") for w in plan.warnings)


def test_floor_only_on_network_interfaces():
    doc, plan = run(plain(), profile="floor")
    assert bw_of(doc, "52:54:00:00:00:02") == Bandwidth(inbound=Rate(average=1000, floor=500))
    assert bw_of(doc, "52:54:00:00:00:01") == Bandwidth(inbound=Rate(average=1000))
    assert ("interface 52:54:00:00:00:01: dropped inbound floor from profile 'floor': libvirt "
            "supports 'floor' only on <interface type='network'>") in plan.warnings


def test_group_conflict_with_an_existing_disk_is_skipped():
    xml = plain().replace("<total_bytes_sec>5000000</total_bytes_sec>",
                          "<total_bytes_sec>5000000</total_bytes_sec>\n"
                          "        <group_name>shared</group_name>")
    doc, plan = run(xml, profile="grouped")
    assert any(w.startswith("skipped disk sdb: another disk of this domain is in throttle "
                            "group 'shared'") for w in plan.warnings)
    assert not ops(plan, SetDiskIoTune)


# -- disks -------------------------------------------------------------------------------

def test_iotune_fill_keeps_an_existing_iotune_and_override_replaces_it():
    doc, plan = run(plain(), profile="fill")
    disks = DomainDoc(doc.serialize()).disks()
    assert disks[0].iotune == IoTune((("total_bytes_sec", 5000000),))
    assert disks[1].iotune == IoTune((("total_iops_sec", 1000),))
    doc, plan = run(plain(), profile="override")
    disks = DomainDoc(doc.serialize()).disks()
    assert disks[0].iotune == IoTune((("read_iops_sec", 300),))
    assert ops(plan, SetDiskIoTune)[0].previous == IoTune((("total_bytes_sec", 5000000),))


def test_disk_rules_by_bus():
    doc, plan = run(plain(), profile="sata")
    assert [(o.target_dev, o.rule, o.iotune.as_dict()) for o in ops(plan, SetDiskIoTune)] == [
        ("sdb", "bus=sata", {"total_iops_sec": 50})]


# -- CPU: oVirt versus plain libvirt -----------------------------------------------------

def test_ovirt_cap_goes_to_vcpulimit_and_shares_to_cputune():
    doc, plan = run(ovirt("fill"))
    out = DomainDoc(doc.serialize())
    assert out.vcpu_limit() == 50
    assert out.cputune() == {"shares": 2048}        # no quota/period: MOM owns them
    assert [type(o) for o in plan.ops if isinstance(o, (SetVcpuLimit, SetCpuTune))] == [
        SetVcpuLimit, SetCpuTune]


def test_ovirt_explicit_quota_becomes_vcpulimit():
    # 50000/100000 us per vCPU x 2 vCPUs on 8 host CPUs = 12.5% -> 13 (rounded)
    doc, plan = run(ovirt("quota"), host_cpus=8)
    assert DomainDoc(doc.serialize()).vcpu_limit() == 13
    assert DomainDoc(doc.serialize()).cputune() == {}
    assert any("expressed as vcpuLimit=13%" in w for w in plan.warnings)


def test_ovirt_unlimited_quota_and_ignored_period():
    doc, plan = run(ovirt("unlimited"))
    assert DomainDoc(doc.serialize()).vcpu_limit() == 100
    doc, plan = run(ovirt("period"))
    assert not doc.changed or DomainDoc(doc.serialize()).cputune() == {}
    assert any(w.startswith("oVirt domain: cpu.period=50000 ignored") for w in plan.warnings)


def test_ovirt_fill_keeps_an_existing_vcpulimit_override_replaces_it():
    xml = ovirt("fill").replace("<ovirt-tune:qos/>",
                                "<ovirt-tune:qos>\n      <vcpuLimit>70</vcpuLimit>\n"
                                "    </ovirt-tune:qos>")
    doc, plan = run(xml)
    assert DomainDoc(doc.serialize()).vcpu_limit() == 70 and not ops(plan, SetVcpuLimit)
    doc, plan = run(xml.replace(">fill<", ">override<"))
    assert DomainDoc(doc.serialize()).vcpu_limit() == 25


def test_plain_cap_goes_to_cputune():
    # 50% of 8 host CPUs over 4 vCPUs: quota = 0.5 * 100000 * 8 / 4
    doc, plan = run(plain(), profile="fill", host_cpus=8)
    assert DomainDoc(doc.serialize()).cputune() == {"period": 100000, "quota": 100000,
                                                    "shares": 2048}
    op = ops(plan, SetCpuTune)[0]
    assert op.reason == "cpu.limit=50% of 8 host CPUs over 4 vCPUs"
    assert "vcpuLimit" not in doc.serialize().decode()


def test_plain_fill_keeps_an_existing_cap_whole():
    xml = plain("<cputune>\n    <quota>20000</quota>\n  </cputune>")
    doc, plan = run(xml, profile="fill", host_cpus=8)
    # the cap (period + quota) is one unit: no period added to someone's quota
    assert DomainDoc(doc.serialize()).cputune() == {"quota": 20000, "shares": 2048}
    doc, plan = run(xml, profile="override", host_cpus=8)
    assert DomainDoc(doc.serialize()).cputune() == {"period": 100000, "quota": 50000,
                                                    "shares": 512}


def test_plain_explicit_quota_and_period():
    doc, _ = run(plain(), profile="quota")
    assert DomainDoc(doc.serialize()).cputune() == {"period": 100000, "quota": 50000}


# -- what must not change ------------------------------------------------------------------

@pytest.mark.parametrize("xml,profile", [
    (ovirt("fill"), None), (ovirt("override"), None), (plain(), "fill"),
    (plain(), "override"), (plain(), "floor"), (plain(), "quota"), (ovirt("quota"), None),
])
def test_idempotent_keeps_the_rest_and_validates(xml, profile):
    doc, plan = run(xml, profile=profile, host_cpus=8)
    assert not plan.is_empty()
    out = doc.serialize()
    # second run: nothing to do, same bytes
    doc2, plan2 = run(out, profile=profile, host_cpus=8)
    assert plan2.is_empty(), plan2.render_text()
    assert doc2.serialize() == out
    # every non-QoS node is still there, unchanged
    assert strip_qos(out) == strip_qos(xml.encode())
    ok, msg = validate(xml.encode())
    assert ok, msg
    ok, msg = validate(out)
    assert ok, msg


def test_comments_namespaces_and_attribute_order_kept():
    doc, _ = run(ovirt("fill"))
    out = doc.serialize().decode()
    assert "<!-- engine-made devices -->" in out
    assert out.startswith("<?xml version='1.0' encoding='utf-8'?>\n<domain "
                          'xmlns:ovirt-tune="http://ovirt.org/vm/tune/1.0" '
                          'xmlns:ovirt-vm="http://ovirt.org/vm/1.0" type="kvm">')
    assert '<disk device="disk" snapshot="no" type="file">' in out
    assert '<driver cache="none" name="qemu" type="qcow2"/>' in out
    assert "<ovirt-vm:qos_profile>fill</ovirt-vm:qos_profile>" in out


def test_only_qos_lines_differ():
    import difflib
    doc, _ = run(ovirt("fill"))
    before = ovirt("fill").splitlines()
    after = doc.serialize().decode().splitlines()
    changed = [l for l in difflib.ndiff(before, after) if l[:1] in "+-"]
    allowed = ("<bandwidth", "</bandwidth>", "<inbound ", "<outbound ", "<iotune>",
               "</iotune>", "<total_iops_sec>", "<cputune>", "</cputune>", "<shares>",
               "<ovirt-tune:qos", "</ovirt-tune:qos>", "<vcpuLimit>")
    for line in changed:
        assert line[2:].strip().startswith(allowed), line


def test_nic_hotplug_document():
    """before_nic_hotplug / before_update_device hand over one <interface>:
    the vNIC's property (environment) picks the profile; no disks, no CPU."""
    nic = b"<interface type='bridge'><mac address='52:54:00:aa:00:01'/>" \
          b"<source bridge='br0'/><bandwidth/></interface>"
    doc = DomainDoc(nic, "nic.xml", allow_interface=True)
    plan = rewrite(doc, config(CONF), policy.Selection(env_nic_profile="fill"), host_cpus=8)
    assert [type(o) for o in plan.ops] == [SetInterfaceBandwidth]
    out = DomainDoc(doc.serialize(), allow_interface=True)
    assert out.interfaces()[0].bandwidth == Bandwidth(inbound=Rate(average=12500, peak=25000),
                                                      outbound=Rate(average=6250))
    assert plan.ops[0].profile == "fill (vNIC custom property qos_profile (environment))"
