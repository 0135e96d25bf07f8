"""Domain XML: safe parsing, reading the QoS-relevant parts, edits that keep the rest."""

import io

import pytest

from qos_hooks.core import domxml
from qos_hooks.core.domxml import DomainDoc, NS_OVIRT_TUNE
from qos_hooks.core.errors import EXIT_INPUT, DomainXmlError
from qos_hooks.core.policy import Bandwidth, IoTune, Rate

OVIRT = b"""<?xml version='1.0' encoding='utf-8'?>
<domain xmlns:ovirt-tune="http://ovirt.org/vm/tune/1.0" xmlns:ovirt-vm="http://ovirt.org/vm/1.0" type="kvm">
  <name>vm1</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <vcpu current="4">16</vcpu>
  <metadata>
    <ovirt-tune:qos/>
    <ovirt-vm:vm>
      <ovirt-vm:custom>
        <ovirt-vm:qos_profile>gold</ovirt-vm:qos_profile>
      </ovirt-vm:custom>
      <ovirt-vm:device mac_address="56:6F:1A:2B:00:02">
        <ovirt-vm:custom>
          <ovirt-vm:qos_profile> silver </ovirt-vm:qos_profile>
        </ovirt-vm:custom>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
  <devices>
    <disk device="disk" type="file">
      <source file="/a.img"/>
      <target bus="virtio" dev="vda"/>
      <iotune>
        <total_iops_sec>100</total_iops_sec>
        <read_bytes_sec>0</read_bytes_sec>
        <group_name>g</group_name>
      </iotune>
    </disk>
    <disk device="cdrom" type="file">
      <target bus="sata" dev="sdc"/>
    </disk>
    <disk device="disk" type="vhostuser">
      <source type="unix" path="/tmp/vhost.sock"/>
      <target bus="virtio" dev="vdz"/>
    </disk>
    <interface type="bridge">
      <mac address="56:6F:1A:2B:00:01"/>
      <source bridge="br0"/>
      <bandwidth/>
    </interface>
    <interface type="bridge">
      <mac address="56:6f:1a:2b:00:02"/>
      <source bridge="br1"/>
      <virtualport type="openvswitch"/>
      <target dev="vnet3"/>
      <model type="virtio"/>
      <bandwidth>
        <inbound average="2500" burst="1000" peak="3750"/>
        <outbound average="0"/>
      </bandwidth>
    </interface>
    <interface type="hostdev">
      <mac address="56:6f:1a:2b:00:03"/>
    </interface>
  </devices>
</domain>
"""

PLAIN = b"""<domain type='kvm'>
  <name>plain</name>
  <!-- a comment that must survive -->
  <?some-pi with data?>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:00:00:01'/>
      <source network='default'/>
      <unknown-element x='1' a='2'/>
    </interface>
  </devices>
</domain>
"""


def test_reads_identity_and_metadata():
    doc = DomainDoc(OVIRT, "ovirt.xml")
    assert (doc.name, doc.uuid, doc.vcpus) == ("vm1", "11111111-2222-3333-4444-555555555555", 4)
    assert doc.is_ovirt and not doc.is_interface_only
    assert doc.vm_custom("qos_profile") == "gold"
    # MAC match is case-insensitive; values are stripped
    assert doc.device_custom("56:6f:1a:2b:00:02", "qos_profile") == "silver"
    assert doc.device_custom("56:6f:1a:2b:00:01", "qos_profile") is None
    assert doc.vcpu_limit() is None
    plain = DomainDoc(PLAIN)
    assert not plain.is_ovirt and plain.vcpus == 2 and plain.vm_custom("qos_profile") is None


def test_reads_interfaces():
    ifaces = DomainDoc(OVIRT).interfaces()
    assert [(i.type, i.mac) for i in ifaces] == [
        ("bridge", "56:6f:1a:2b:00:01"), ("bridge", "56:6f:1a:2b:00:02"),
        ("hostdev", "56:6f:1a:2b:00:03")]
    assert ifaces[0].bandwidth == Bandwidth()             # the engine's empty <bandwidth/>
    # zero means unset to libvirt: outbound average="0" reads as an empty rate
    assert ifaces[1].bandwidth == Bandwidth(inbound=Rate(average=2500, peak=3750, burst=1000),
                                            outbound=Rate())
    assert ifaces[1].on_ovs and ifaces[1].target_dev == "vnet3" and ifaces[1].model == "virtio"
    assert ifaces[2].bandwidth is None and not ifaces[2].supports_bandwidth
    assert ifaces[1].label == "interface 56:6f:1a:2b:00:02/vnet3"


def test_reads_disks_and_why_iotune_cannot_apply():
    disks = DomainDoc(OVIRT).disks()
    assert disks[0].iotune == IoTune((("total_iops_sec", 100), ("group_name", "g")))
    assert disks[0].iotune_unsupported_reason() is None
    assert disks[1].iotune_unsupported_reason() == "empty cdrom drive (no medium to throttle)"
    assert "vhost-user" in disks[2].iotune_unsupported_reason()


def test_unchanged_document_is_returned_byte_for_byte():
    doc = DomainDoc(PLAIN)
    doc.interfaces(), doc.disks(), doc.cputune()
    assert doc.serialize() is doc.original


def test_set_bandwidth_replaces_the_empty_element():
    doc = DomainDoc(OVIRT)
    doc.set_bandwidth(0, Bandwidth(inbound=Rate(average=100, peak=200, burst=10)))
    out = doc.serialize()
    again = DomainDoc(out)
    iface = again.root.findall("devices/interface")[0]
    assert len(iface.findall("bandwidth")) == 1
    assert b'      <bandwidth>\n        <inbound average="100" peak="200" burst="10"/>\n' \
           b'      </bandwidth>\n    </interface>' in out


def test_unchanged_direction_keeps_its_attribute_order():
    doc = DomainDoc(OVIRT)
    bw = doc.interfaces()[1].bandwidth
    doc.set_bandwidth(1, Bandwidth(inbound=bw.inbound, outbound=Rate(average=7)))
    out = doc.serialize()
    assert b'<inbound average="2500" burst="1000" peak="3750"/>' in out
    assert b'<outbound average="7"/>' in out


def test_set_vcpu_limit_writes_an_unnamespaced_child():
    # vdsm reads <ovirt-tune:qos><vcpuLimit> with find_first(qos, "vcpuLimit")
    # (lib/vdsm/virt/vm.py _updateVcpuLimit) and writes it the same way in
    # updateVmPolicy: the child has no namespace.
    doc = DomainDoc(OVIRT)
    doc.set_vcpu_limit(40)
    out = doc.serialize()
    assert b"<ovirt-tune:qos>\n      <vcpuLimit>40</vcpuLimit>\n    </ovirt-tune:qos>" in out
    again = DomainDoc(out)
    q = again.root.find("metadata/{%s}qos" % NS_OVIRT_TUNE)
    assert q.find("vcpuLimit").text == "40"
    assert again.vcpu_limit() == 40


def test_set_vcpu_limit_creates_the_qos_element():
    doc = DomainDoc(OVIRT.replace(b"    <ovirt-tune:qos/>\n", b""))
    doc.set_vcpu_limit(10)
    out = doc.serialize()
    assert b"<ovirt-tune:qos>" in out and b"<vcpuLimit>10</vcpuLimit>" in out
    assert DomainDoc(out).vcpu_limit() == 10


def test_set_cputune_goes_after_vcpu_and_keeps_comments_and_pis():
    doc = DomainDoc(PLAIN)
    doc.set_cputune({"period": 100000, "quota": 50000})
    out = doc.serialize()
    assert b"<vcpu placement=\"static\">2</vcpu>\n  <cputune>\n    <period>100000</period>\n" \
           b"    <quota>50000</quota>\n  </cputune>\n" in out
    assert b"<!-- a comment that must survive -->" in out
    assert b"<?some-pi with data?>" in out
    assert b'<unknown-element x="1" a="2"/>' in out
    assert DomainDoc(out).cputune() == {"period": 100000, "quota": 50000}


def test_set_iotune_replaces_the_whole_element():
    doc = DomainDoc(OVIRT)
    doc.set_iotune(0, IoTune((("read_iops_sec", 5),)))
    again = DomainDoc(doc.serialize())
    assert again.disks()[0].iotune == IoTune((("read_iops_sec", 5),))
    assert len(again.root.findall("devices/disk")[0].findall("iotune")) == 1


def test_a_single_interface_document():
    data = b"<interface type='bridge'><mac address='52:54:00:aa:bb:cc'/></interface>"
    doc = DomainDoc(data, allow_interface=True)
    assert doc.is_interface_only and doc.disks() == [] and doc.name is None
    assert doc.interfaces()[0].mac == "52:54:00:aa:bb:cc"
    with pytest.raises(DomainXmlError) as e:
        DomainDoc(data, "nic.xml")
    assert str(e.value) == "nic.xml:1: root element is <interface>, expected <domain>"


@pytest.mark.parametrize("data,message", [
    (b"", "f.xml: empty document"),
    (b"  \n", "f.xml: empty document"),
    (b"<domain>", "f.xml:1: not well-formed XML: "),
    (b"<network/>", "f.xml:1: root element is <network>, expected <domain>"),
    (b"<domain xmlns='urn:x'/>", "f.xml:1: root element is <{urn:x}domain>, expected <domain>"),
    (b"<domain><vcpu>two</vcpu></domain>", None),
    (b"<?xml version='1.0'?>\n<!DOCTYPE domain>\n<domain/>",
     "f.xml:2: DOCTYPE/ENTITY declarations are not allowed in a libvirt XML document"),
])
def test_refused_documents(data, message):
    try:
        doc = DomainDoc(data, "f.xml")
        doc.vcpus
    except DomainXmlError as e:
        assert e.exit_code == EXIT_INPUT
        if message is None:
            assert str(e) == "f.xml:1: <vcpu>: not a non-negative integer: 'two'"
        else:
            assert str(e).startswith(message), str(e)
        assert "\n" not in str(e)
    else:
        raise AssertionError("accepted %r" % data)


@pytest.mark.parametrize("snippet,message", [
    (b"<interface type='bridge'><bandwidth><inbound average='-5'/></bandwidth></interface>",
     "f.xml:1: <inbound average='-5'>: not a non-negative integer"),
    (b"<disk><iotune><total_iops_sec>1e3</total_iops_sec></iotune></disk>",
     "f.xml:1: <iotune><total_iops_sec>1e3</total_iops_sec>: not a non-negative integer"),
    (b"<cputune/>", None),
])
def test_bad_numbers_in_the_xml(snippet, message):
    if snippet.startswith(b"<cputune"):
        doc = DomainDoc(b"<domain><cputune><quota>lots</quota></cputune></domain>", "f.xml")
        with pytest.raises(DomainXmlError) as e:
            doc.cputune()
        assert str(e.value) == "f.xml:1: <cputune><quota>: not an integer: 'lots'"
        return
    doc = DomainDoc(b"<domain><devices>" + snippet + b"</devices></domain>", "f.xml")
    with pytest.raises(DomainXmlError) as e:
        doc.interfaces() if b"interface" in snippet else doc.disks()
    assert str(e.value) == message


def test_read_limited_refuses_more_than_the_limit():
    assert domxml.read_limited(io.BytesIO(b"x" * 10), "s", limit=10) == b"x" * 10
    with pytest.raises(DomainXmlError) as e:
        domxml.read_limited(io.BytesIO(b"x" * 11), "s", limit=10)
    assert str(e.value) == "s: document is larger than the limit of 10 bytes"


def test_size_limit_in_parse():
    big = b"<domain>" + b" " * domxml.MAX_XML_BYTES + b"</domain>"
    with pytest.raises(DomainXmlError) as e:
        DomainDoc(big, "big.xml")
    assert "big.xml: document is %d bytes; the limit is %d bytes" % (
        len(big), domxml.MAX_XML_BYTES) == str(e.value)


@pytest.mark.parametrize("data,message", [
    (b"<?xml version='1.0' encoding='ISO-8859-1'?>\n<domain><name>caf\xe9</name></domain>",
     "f.xml:1: document declares encoding 'ISO-8859-1'; libvirt domain XML is UTF-8"),
    (b"<?xml version='1.0' encoding='UTF-7'?><domain/>",
     "f.xml:1: document declares encoding 'UTF-7'; libvirt domain XML is UTF-8"),
    ("<domain/>".encode("utf-16"),
     "f.xml: document is not UTF-8 (UTF-16, UTF-32 or binary data); libvirt domain XML is UTF-8"),
    ("<domain/>".encode("utf-32-le"), "f.xml: document is not UTF-8"),
])
def test_only_utf8_documents(data, message):
    with pytest.raises(DomainXmlError) as e:
        DomainDoc(data, "f.xml")
    assert str(e.value).startswith(message)


def test_utf8_declarations_and_bom_are_fine():
    for head in (b"<?xml version='1.0' encoding='UTF-8'?>", b'<?xml version="1.0"?>',
                 b"\xef\xbb\xbf<?xml version='1.0' encoding='utf-8'?>", b""):
        doc = DomainDoc(head + "<domain><name>caf\u00e9</name></domain>".encode("utf-8"))
        assert doc.name == "caf\u00e9"
