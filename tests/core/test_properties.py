"""Property tests (hypothesis): for generated domains and policies, the rewrite

* is idempotent: a second rewrite plans nothing and returns the same bytes;
* keeps every non-QoS node (elements, attributes, text, comments, PIs);
* produces XML that passes ``virt-xml-validate FILE domain`` whenever the
  input did.

``virt-xml-validate`` is a subprocess, so the example count is moderate; in
CI (``CI`` set in the environment) the examples are derandomized so a run is
reproducible.  ``QOS_HOOKS_HYPOTHESIS_EXAMPLES`` changes the count.
"""

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qos_hooks.core import policy
from qos_hooks.core.domxml import DomainDoc
from qos_hooks.core.rewrite import rewrite
from tests.core_helpers import strip_qos, validate

EXAMPLES = int(os.environ.get("QOS_HOOKS_HYPOTHESIS_EXAMPLES", "50"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
COMMENT = st.text("abc xyz-_.", min_size=0, max_size=12).map(
    lambda t: "<!-- %s -->" % re.sub("-+", "-", t))   # XML: no "--" inside a comment


# -- policies ---------------------------------------------------------------------------

@st.composite
def rate_keys(draw, direction):
    if not draw(st.booleans()):
        return []
    keys = []
    floor = direction == "inbound" and draw(st.booleans())
    with_avg = not floor or draw(st.booleans())
    if with_avg:
        # inbound stays within what OVS linux-htb stores (policy.OVS_HTB_RATE_MAX)
        avg = draw(st.integers(1, 3 * 10 ** 6))
        keys.append(("%s.average" % direction, str(avg)))
        if draw(st.booleans()):
            keys.append(("%s.peak" % direction, str(avg + draw(st.integers(0, 10 ** 6)))))
        if draw(st.booleans()):
            # at least one MTU (issue 9 item 10)
            burst = draw(st.integers(policy.BW_BURST_MTU_MIN, 4194303))
            keys.append(("%s.burst" % direction, str(burst)))
    if floor:
        keys.append(("inbound.floor", str(draw(st.integers(1, 10 ** 6)))))
    return keys


@st.composite
def iotune_keys(draw, prefix="disk."):
    keys = []
    any_iops = False
    for base in ("bytes_sec", "iops_sec"):
        shape = draw(st.sampled_from(["none", "total", "rw"]))
        kinds = {"none": [], "total": ["total"], "rw": draw(st.sampled_from(
            [["read"], ["write"], ["read", "write"]]))}[shape]
        for kind in kinds:
            v = draw(st.integers(1, 10 ** 9))
            keys.append(("%s%s_%s" % (prefix, kind, base), str(v)))
            any_iops = any_iops or base == "iops_sec"
            if draw(st.booleans()):
                m = v + draw(st.integers(0, 10 ** 9))
                keys.append(("%s%s_%s_max" % (prefix, kind, base), str(m)))
                if draw(st.booleans()):
                    keys.append(("%s%s_%s_max_length" % (prefix, kind, base),
                                 str(draw(st.integers(1, 100)))))
    if any_iops and draw(st.booleans()):
        keys.append((prefix + "size_iops_sec", str(draw(st.sampled_from([512, 4096, 65536])))))
    if keys and draw(st.booleans()):
        keys.append((prefix + "group_name", "g" + draw(NAME)))
    return keys


@st.composite
def cpu_keys(draw):
    keys = []
    cap = draw(st.sampled_from(["none", "limit", "quota"]))
    if cap == "limit":
        keys.append(("cpu.limit", str(draw(st.integers(1, 100)))))
    elif cap == "quota":
        keys.append(("cpu.quota", str(draw(st.one_of(st.just(-1),
                                                      st.integers(1000, 10 ** 7))))))
        if draw(st.booleans()):
            keys.append(("cpu.period", str(draw(st.integers(1000, 1000000)))))
    if draw(st.booleans()):
        keys.append(("cpu.shares", str(draw(st.integers(2, 10000)))))
    return keys


@st.composite
def profile_text(draw, name):
    keys = [("on_existing", draw(st.sampled_from(["fill", "override"])))]
    keys += draw(rate_keys("inbound")) + draw(rate_keys("outbound"))
    keys += draw(iotune_keys()) + draw(cpu_keys())
    body = "[profile %s]\n" % name + "".join("%s = %s\n" % kv for kv in keys)
    if draw(st.booleans()):
        rule = [kv for kv in draw(iotune_keys(prefix=""))
                if kv[0] != "group_name"]   # one set of values per group
        body += "[profile %s disk bus=sata]\n" % name + "".join("%s = %s\n" % kv for kv in rule)
    return body


@st.composite
def configs(draw):
    text = "[settings]\nhost_cpus = %d\n" % draw(st.integers(1, 64))
    text += draw(profile_text("vm")) + draw(profile_text("nic"))
    return policy.parse_config(text, "generated.conf")


# -- domains --------------------------------------------------------------------------------

IFACE_SOURCES = {
    "bridge": "<source bridge='br0'/>",
    "network": "<source network='default'/>",
    "direct": "<source dev='eth0' mode='bridge'/>",
    "ethernet": "",
    "user": "",
    "hostdev": "<source><address type='pci' domain='0x0000' bus='0x03' slot='0x00' "
               "function='0x1'/></source>",
}


@st.composite
def existing_bandwidth(draw):
    choice = draw(st.sampled_from(["none", "empty", "set"]))
    if choice == "none":
        return ""
    if choice == "empty":
        return "<bandwidth/>"
    parts = []
    for d in ("inbound", "outbound"):
        if draw(st.booleans()):
            avg = draw(st.integers(1, 10 ** 6))
            attrs = [("average", avg)]
            if draw(st.booleans()):
                attrs.append(("peak", avg + draw(st.integers(0, 1000))))
            if draw(st.booleans()):
                attrs.append(("burst", draw(st.integers(1, 10 ** 5))))
            attrs = draw(st.permutations(attrs))
            parts.append("<%s %s/>" % (d, " ".join("%s='%s'" % a for a in attrs)))
    return "<bandwidth>%s</bandwidth>" % "".join(parts)


@st.composite
def interface(draw, i):
    itype = draw(st.sampled_from(sorted(IFACE_SOURCES)))
    mac = "52:54:00:00:%02x:%02x" % (i // 256, i % 256)
    bits = ["<mac address='%s'/>" % mac, IFACE_SOURCES[itype]]
    if itype in ("bridge", "network", "ethernet", "direct") and draw(st.booleans()):
        bits.append("<target dev='vnet%d'/>" % i)
    if itype != "hostdev" and draw(st.booleans()):
        bits.append("<model type='virtio'/>")
    if itype in ("bridge", "network", "direct", "ethernet"):
        bits.append(draw(existing_bandwidth()))
    if draw(st.booleans()):
        bits.append(draw(COMMENT))
    bits = draw(st.permutations(bits))
    extra = " managed='yes'" if itype == "hostdev" else ""
    return mac, "<interface type='%s'%s>%s</interface>" % (itype, extra, "".join(bits))


@st.composite
def existing_iotune(draw):
    if not draw(st.booleans()):
        return ""
    kind = draw(st.sampled_from(["total", "read"]))
    return "<iotune><%s_iops_sec>%d</%s_iops_sec></iotune>" % (
        kind, draw(st.integers(1, 10 ** 5)), kind)


@st.composite
def disk(draw, i):
    device = draw(st.sampled_from(["disk", "disk", "cdrom"]))
    bus = draw(st.sampled_from(["virtio", "sata", "scsi"])) if device == "disk" else "sata"
    dev = ("vd" if bus == "virtio" else "sd") + "abcdefghijklmnop"[i]
    src = "<source file='/var/lib/libvirt/images/d%d.img'/>" % i
    if device == "cdrom" and draw(st.booleans()):
        src = ""                                      # an empty drive
    bits = [src, "<target dev='%s' bus='%s'/>" % (dev, bus),
            "<driver name='qemu' type='raw'/>", draw(existing_iotune())]
    if device == "cdrom":
        bits.append("<readonly/>")
    bits = draw(st.permutations(bits))
    return "<disk type='file' device='%s'>%s</disk>" % (device, "".join(bits))


@st.composite
def domains(draw):
    ovirt = draw(st.booleans())
    nnics = draw(st.integers(0, 4))
    ndisks = draw(st.integers(0, 4))
    nics = [draw(interface(i)) for i in range(nnics)]
    disks = [draw(disk(i)) for i in range(ndisks)]
    vcpus = draw(st.integers(1, 16))
    top = ["<name>%s</name>" % draw(NAME), "<memory unit='KiB'>1048576</memory>",
           "<vcpu placement='static'>%d</vcpu>" % vcpus,
           "<os><type arch='x86_64' machine='pc'>hvm</type></os>"]
    if draw(st.booleans()):
        top.append("<cputune><shares>%d</shares>%s</cputune>" % (
            draw(st.integers(2, 10000)),
            draw(st.sampled_from(["", "<period>100000</period><quota>50000</quota>"]))))
    md = ["<app:thing xmlns:app='urn:example:app' k='v'>%s</app:thing>" % draw(NAME)]
    if ovirt:
        vm_prop = draw(st.sampled_from(["", "vm"]))
        dev_md = "".join(
            "<ovirt-vm:device mac_address='%s'><ovirt-vm:custom><ovirt-vm:qos_profile>nic"
            "</ovirt-vm:qos_profile></ovirt-vm:custom></ovirt-vm:device>" % mac
            for mac, _ in nics if draw(st.booleans()))
        md.append(draw(st.sampled_from(["<ovirt-tune:qos/>", ""])))
        md.append("<ovirt-vm:vm><ovirt-vm:custom>%s</ovirt-vm:custom>%s</ovirt-vm:vm>" % (
            "<ovirt-vm:qos_profile>%s</ovirt-vm:qos_profile>" % vm_prop if vm_prop else "",
            dev_md))
    if md:
        top.append("<metadata>%s</metadata>" % "".join(draw(st.permutations(md))))
    if draw(st.booleans()):
        top.insert(draw(st.integers(0, len(top))), draw(COMMENT))
    devices = draw(st.permutations(disks + [x for _, x in nics]))
    ns = (" xmlns:ovirt-tune='http://ovirt.org/vm/tune/1.0' "
          "xmlns:ovirt-vm='http://ovirt.org/vm/1.0'" if ovirt else "")
    indent = draw(st.sampled_from(["", "\n  "]))
    body = indent.join([""] + top + ["<devices>%s</devices>" % indent.join(devices)])
    head = draw(st.sampled_from(["", "<?xml version='1.0' encoding='UTF-8'?>\n"]))
    return (head + "<domain type='kvm'%s>%s\n</domain>\n" % (ns, body)).encode("utf-8")


def _rewrite(data, cfg, cli_profile):
    doc = DomainDoc(data, "generated.xml")
    plan = rewrite(doc, cfg, policy.Selection(cli_profile=cli_profile))
    return doc, plan


@SETTINGS
@given(data=domains(), cfg=configs(), cli=st.sampled_from([None, "vm", "nic"]))
def test_rewrite_properties(data, cfg, cli):
    doc, plan = _rewrite(data, cfg, cli)
    out = doc.serialize()
    assert doc.changed == (not plan.is_empty())
    # idempotent, byte for byte
    doc2, plan2 = _rewrite(out, cfg, cli)
    assert plan2.is_empty(), plan2.render_text()
    assert doc2.serialize() == out
    # every non-QoS node kept
    assert strip_qos(out) == strip_qos(data)
    # schema-valid output whenever the input was
    ok_in, _ = validate(data)
    if ok_in:
        ok_out, msg = validate(out)
        assert ok_out, "%s\n%s" % (msg, out.decode())


@settings(max_examples=min(EXAMPLES, 15), deadline=None,
          derandomize=bool(os.environ.get("CI")), suppress_health_check=[HealthCheck.too_slow])
@given(data=domains())
def test_generated_domains_are_valid(data):
    """The generator makes schema-valid domains, so the schema property above
    is never vacuous."""
    ok, msg = validate(data)
    assert ok, "%s\n%s" % (msg, data.decode())
