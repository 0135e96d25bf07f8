"""Domain XML: parse safely, read the QoS-relevant parts, edit them in place.

The parser resolves no entities, loads no DTD and reaches no network; a
document with a DOCTYPE is refused outright (a libvirt domain never has one,
and refusing it closes billion-laughs and external-entity attacks before
libxml2 sees them).  Only UTF-8 is accepted (what libvirt and VDSM write),
which keeps that byte-level check sound: in UTF-16 or UTF-7 the bytes of
"<!DOCTYPE" differ.  Documents over MAX_XML_BYTES are refused before parsing,
and readers stop one byte past the limit (read_limited).

Edits keep everything else as it was: comments, processing instructions,
namespaces and their prefixes, metadata, unknown elements, attribute order.
New elements are indented like their siblings so a diff shows only them.
When nothing changes, ``serialize`` returns the input bytes unchanged, which
makes the rewrite idempotent byte for byte.
"""

from __future__ import annotations

import re
from qos_hooks.core.records import Record

from lxml import etree

from qos_hooks.core.errors import DomainXmlError
from qos_hooks.core.units import UnitError, clip, parse_int
from qos_hooks.core.policy import Bandwidth, IoTune, Rate, IOTUNE_KEYS, RATE_FIELDS

# annotations are strings (PEP 563): typing is never imported at run time
# (it costs 3-6 ms of every hook start, bench/bench_hooks.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional  # noqa: F401


NS_OVIRT_VM = "http://ovirt.org/vm/1.0"
NS_OVIRT_TUNE = "http://ovirt.org/vm/tune/1.0"
MAX_XML_BYTES = 16 * 1024 * 1024

# virNetDevSupportsBandwidth (libvirt src/conf/netdev_bandwidth_conf.c)
BANDWIDTH_NET_TYPES = ("bridge", "network", "direct", "ethernet")


def _parser():
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_blank_text=False,
                           remove_comments=False, remove_pis=False, collect_ids=False)


_DOCTYPE_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DECL_ENCODING_RE = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_UTF8_NAMES = ("utf-8", "utf8", "us-ascii", "ascii")


def read_limited(stream, source="<input>", limit=None):
    """Read at most ``limit`` (MAX_XML_BYTES) bytes from a binary stream.

    Refuses a larger input after reading one byte past the limit, so a
    huge or endless input (``yes | qos-hooks dry-run -``) costs bounded memory.
    """
    limit = MAX_XML_BYTES if limit is None else limit
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise DomainXmlError("%s: document is larger than the limit of %d bytes"
                             % (source, limit))
    return data


def parse_bytes(data, source="<input>", roots=("domain",)):
    """Parse untrusted XML bytes; return the lxml root element.

    Raises DomainXmlError (exit code 4) with the source name and line for
    anything that is not a plain, reasonably sized document with one of
    ``roots`` as its root element.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_XML_BYTES:
        raise DomainXmlError("%s: document is %d bytes; the limit is %d bytes"
                             % (source, len(data), MAX_XML_BYTES))
    if not data.strip():
        raise DomainXmlError("%s: empty document" % source)
    # libvirt and VDSM write domain XML in UTF-8.  Refusing every other
    # encoding up front also keeps the byte-level DOCTYPE check below
    # sound: in UTF-16 or UTF-7 "<!DOCTYPE" is not those bytes.
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise DomainXmlError("%s: document is not UTF-8 (UTF-16, UTF-32 or binary data); "
                             "libvirt domain XML is UTF-8"
                             % source)
    m = _DECL_ENCODING_RE.match(data)
    if m and m.group(1).decode("ascii", "replace").strip().lower() not in _UTF8_NAMES:
        raise DomainXmlError("%s:1: document declares encoding %r; libvirt domain XML is "
                             "UTF-8" % (source, m.group(1).decode("ascii", "replace")))
    m = _DOCTYPE_RE.search(data)
    if m:
        line = data[:m.start()].count(b"\n") + 1
        raise DomainXmlError("%s:%d: DOCTYPE/ENTITY declarations are not allowed in a "
                             "libvirt XML document" % (source, line))
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        _syntax_error(e, source)
    except (ValueError, LookupError) as e:  # unknown encoding declaration etc.
        raise DomainXmlError("%s: cannot decode document: %s" % (source, e))
    if root.getroottree().docinfo.doctype:
        raise DomainXmlError("%s: DOCTYPE declarations are not allowed" % source)
    if etree.QName(root).localname not in roots or etree.QName(root).namespace:
        raise DomainXmlError("%s:%d: root element is <%s>, expected <%s>"
                             % (source, root.sourceline or 0, root.tag, "> or <".join(roots)))
    return root


def _syntax_error(e, source):
    line = getattr(e, "lineno", None) or 0
    msg = (getattr(e, "msg", None) or str(e)).replace("\n", " ")
    if "encoding" in msg.lower() or "utf-8" in msg.lower():
        msg += " (the document is not valid UTF-8)"
    raise DomainXmlError("%s:%d: not well-formed XML: %s" % (source, line, msg))


# -- reading ------------------------------------------------------------------

def _number(text, source, elem, what, signed=False, inline=False):
    """Every number in the XML: ASCII digits, at most units.MAX_DIGITS
    (units.parse_int); anything else is an input error naming the line.

    The message reads ``<what>: <why>: <value>``, or ``<what>: <why>`` when
    ``what`` already shows the value (``inline``); a value is clipped, so a
    5000-digit one is not echoed back."""
    try:
        return parse_int(text, signed=signed)
    except UnitError as e:
        if e.allowed and e.allowed.startswith("at most"):
            why = "%s (allowed: %s)" % (e, e.allowed)
        else:
            why = "not an integer" if signed else "not a non-negative integer"
        msg = "%s:%d: %s: %s" % (source, elem.sourceline or 0, what, why)
        if not inline:
            msg += ": %r" % clip(text)
        raise DomainXmlError(msg)


def _int_attr(elem, name, source):
    v = elem.get(name)
    if v is None:
        return None
    return _number(v, source, elem, "<%s %s=%r>" % (elem.tag, name, clip(v.strip())),
                   inline=True)


def read_bandwidth(elem, source="<input>"):
    """Parse a ``<bandwidth>`` element into a Bandwidth (None for absent parts).

    A zero value means "unset" to libvirt (virNetDevBandwidthParseRate), so
    it is read as None.
    """
    kw = {}
    for direction in ("inbound", "outbound"):
        d = elem.find(direction)
        if d is None:
            continue
        vals = {}
        for f in RATE_FIELDS:
            v = _int_attr(d, f, source)
            if v:
                vals[f] = v
        kw[direction] = Rate(**vals)
    return Bandwidth(**kw)


def read_iotune(elem, source="<input>"):
    vals = {}
    for child in elem:
        if not isinstance(child.tag, str):
            continue
        name = child.tag
        if name not in IOTUNE_KEYS:
            continue
        text = (child.text or "").strip()
        if name == "group_name":
            vals[name] = text
            continue
        v = _number(text, source, child, "<iotune><%s>%s</%s>" % (name, clip(text), name),
                    inline=True)
        if v:
            vals[name] = v
    return IoTune.from_dict(vals)


class InterfaceInfo(Record):
    """What the rewriter needs to know about one ``<interface>``."""

    index: int
    type: str
    mac: Optional[str]
    target_dev: Optional[str]
    bridge: Optional[str]
    virtualport: Optional[str]
    model: Optional[str]
    bandwidth: Optional[Bandwidth]   # None: no <bandwidth> element
    line: int = 0

    @property
    def supports_bandwidth(self):
        return self.type in BANDWIDTH_NET_TYPES

    @property
    def on_ovs(self):
        return self.virtualport == "openvswitch"

    @property
    def label(self):
        parts = [self.mac or "no-mac"]
        if self.target_dev:
            parts.append(self.target_dev)
        return "interface %s" % "/".join(parts)


class DiskInfo(Record):
    """What the rewriter needs to know about one ``<disk>``."""

    index: int
    type: str
    device: str
    target_dev: Optional[str]
    bus: Optional[str]
    has_source: bool
    iotune: Optional[IoTune]
    line: int = 0

    @property
    def label(self):
        return "disk %s" % (self.target_dev or "#%d" % self.index)

    def iotune_unsupported_reason(self):
        """Why libvirt would refuse ``<iotune>`` here, or None."""
        if self.type == "vhostuser":
            # qemuDomainDiskBlockIoTuneIsSupported: vhost-user disks bypass
            # qemu's block layer, so throttling cannot apply
            return "vhost-user disks bypass qemu's block layer (no throttling)"
        if self.device in ("cdrom", "floppy") and not self.has_source:
            return "empty %s drive (no medium to throttle)" % self.device
        return None


class DomainDoc:
    """A parsed domain (or single ``<interface>``) document and its edits."""

    def __init__(self, data, source="<input>", allow_interface=False):
        self.source = source
        self.original = data if isinstance(data, bytes) else data.encode("utf-8")
        roots = ("domain", "interface") if allow_interface else ("domain",)
        self.root = parse_bytes(self.original, source, roots)
        self.changed = False

    # -- identity -----------------------------------------------------------
    @property
    def is_interface_only(self):
        return self.root.tag == "interface"

    @property
    def name(self):
        return (self.root.findtext("name") or "").strip() or None

    @property
    def uuid(self):
        return (self.root.findtext("uuid") or "").strip() or None

    @property
    def vcpus(self):
        v = self.root.find("vcpu")
        if v is None:
            return 1
        cur = v.get("current")
        text = cur if cur is not None else (v.text or "1")
        return max(1, _number(text, self.source, v, "<vcpu>"))

    def _metadata(self):
        return self.root.find("metadata")

    def _ovirt_vm(self):
        md = self._metadata()
        return None if md is None else md.find("{%s}vm" % NS_OVIRT_VM)

    def _ovirt_tune(self):
        md = self._metadata()
        return None if md is None else md.find("{%s}qos" % NS_OVIRT_TUNE)

    @property
    def is_ovirt(self):
        """True when the domain carries oVirt metadata (so MOM manages CPU QoS)."""
        return self._ovirt_vm() is not None or self._ovirt_tune() is not None

    def vm_custom(self, key):
        vm = self._ovirt_vm()
        if vm is None:
            return None
        custom = vm.find("{%s}custom" % NS_OVIRT_VM)
        return _custom_value(custom, key)

    def device_custom(self, mac, key):
        vm = self._ovirt_vm()
        if vm is None or not mac:
            return None
        for dev in vm.findall("{%s}device" % NS_OVIRT_VM):
            if (dev.get("mac_address") or "").lower() == mac.lower():
                return _custom_value(dev.find("{%s}custom" % NS_OVIRT_VM), key)
        return None

    # -- devices --------------------------------------------------------------
    def _interface_elems(self):
        if self.is_interface_only:
            return [self.root]
        return self.root.findall("devices/interface")

    def _disk_elems(self):
        if self.is_interface_only:
            return []
        return self.root.findall("devices/disk")

    def interfaces(self) -> List[InterfaceInfo]:
        out = []
        for i, e in enumerate(self._interface_elems()):
            mac = e.find("mac")
            tgt = e.find("target")
            src = e.find("source")
            vp = e.find("virtualport")
            model = e.find("model")
            bw = e.find("bandwidth")
            out.append(InterfaceInfo(
                index=i, type=e.get("type") or "",
                mac=(mac.get("address") or "").lower() or None if mac is not None else None,
                target_dev=tgt.get("dev") if tgt is not None else None,
                bridge=src.get("bridge") if src is not None else None,
                virtualport=vp.get("type") if vp is not None else None,
                model=model.get("type") if model is not None else None,
                bandwidth=read_bandwidth(bw, self.source) if bw is not None else None,
                line=e.sourceline or 0))
        return out

    def disks(self) -> List[DiskInfo]:
        out = []
        for i, e in enumerate(self._disk_elems()):
            tgt = e.find("target")
            src = e.find("source")
            has_source = src is not None and any(
                src.get(a) for a in ("file", "dev", "dir", "name", "pool", "volume"))
            io = e.find("iotune")
            out.append(DiskInfo(
                index=i, type=e.get("type") or "file", device=e.get("device") or "disk",
                target_dev=tgt.get("dev") if tgt is not None else None,
                bus=tgt.get("bus") if tgt is not None else None,
                has_source=has_source,
                iotune=read_iotune(io, self.source) if io is not None else None,
                line=e.sourceline or 0))
        return out

    def cputune(self):
        ct = self.root.find("cputune")
        vals = {}
        if ct is not None:
            for f in ("period", "quota", "shares"):
                t = ct.findtext(f)
                if t is not None and t.strip():
                    vals[f] = _number(t, self.source, ct.find(f), "<cputune><%s>" % f,
                                      signed=(f == "quota"))
        return vals

    def vcpu_limit(self):
        q = self._ovirt_tune()
        if q is None:
            return None
        for child in q:
            if isinstance(child.tag, str) and etree.QName(child).localname == "vcpuLimit":
                t = (child.text or "").strip()
                return _number(t, self.source, child, "<vcpuLimit>") if t else None
        return None

    # -- edits ------------------------------------------------------------------
    def set_bandwidth(self, index, bandwidth):
        iface = self._interface_elems()[index]
        old = iface.find("bandwidth")
        old_bw = read_bandwidth(old, self.source) if old is not None else Bandwidth()
        new = etree.Element("bandwidth")
        for direction in ("inbound", "outbound"):
            rate = bandwidth.direction(direction)
            if rate is None or rate.is_empty():
                continue
            if old_bw.direction(direction) == rate:
                # unchanged direction: keep the element as written (attribute order)
                from copy import deepcopy
                kept = deepcopy(old.find(direction))
                kept.tail = None
                new.append(kept)
                continue
            d = etree.SubElement(new, direction)
            for f, v in rate.items():
                d.set(f, str(v))
        self._put(iface, "bandwidth", new)

    def set_iotune(self, index, iotune):
        disk = self._disk_elems()[index]
        new = etree.Element("iotune")
        for k, v in iotune.values:
            etree.SubElement(new, k).text = str(v)
        self._put(disk, "iotune", new)

    def set_cputune(self, values):
        """Set ``<cputune>`` children period/quota/shares, keeping the others."""
        ct = self.root.find("cputune")
        if ct is None:
            ct = etree.Element("cputune")
            vcpu = self.root.find("vcpu")
            _insert(self.root, ct, self.root.index(vcpu) + 1 if vcpu is not None else None)
        # libvirt RNG order inside cputune is interleaved; keep shares first
        for f in ("shares", "period", "quota"):
            if f not in values:
                continue
            child = ct.find(f)
            if child is None:
                child = etree.Element(f)
                _insert(ct, child, None)
            child.text = str(values[f])
        self.changed = True

    def set_vcpu_limit(self, percent):
        md = self._metadata()
        if md is None:
            md = etree.Element("metadata")
            _insert(self.root, md, None)
        q = md.find("{%s}qos" % NS_OVIRT_TUNE)
        if q is None:
            q = etree.Element("{%s}qos" % NS_OVIRT_TUNE, nsmap={"ovirt-tune": NS_OVIRT_TUNE})
            _insert(md, q, None)
        lim = None
        for child in q:
            if isinstance(child.tag, str) and etree.QName(child).localname == "vcpuLimit":
                lim = child
        if lim is None:
            # No namespace on the child: vdsm writes it as
            # vmxml.Element("vcpuLimit") under the qos metadata element
            # (lib/vdsm/virt/vm.py updateVmPolicy) and reads it back with
            # find_first(qos, "vcpuLimit") (_updateVcpuLimit, run at VM start
            # from _dom_vcpu_setup), reporting it as vcpuUserLimit to MOM.
            lim = etree.Element("vcpuLimit")
            _insert(q, lim, None)
        lim.text = str(percent)
        self.changed = True

    def remove_bandwidth(self):
        """Remove every interface's ``<bandwidth>``; return their labels.

        For a validating hook whose failure policy is ``continue``: the vNIC
        carries on without QoS rather than with QoS nobody validated."""
        removed = []
        for iface in self._interface_elems():
            bw = iface.find("bandwidth")
            if bw is None:
                continue
            # named without reading <bandwidth>: its values may be what failed
            mac, tgt = iface.find("mac"), iface.find("target")
            label = InterfaceInfo(
                index=0, type="", mac=mac.get("address") if mac is not None else None,
                target_dev=tgt.get("dev") if tgt is not None else None, bridge=None,
                virtualport=None, model=None, bandwidth=None).label
            prev = bw.getprevious()
            if prev is not None:
                prev.tail = bw.tail
            else:
                iface.text = bw.tail
            iface.remove(bw)
            removed.append(label)
            self.changed = True
        return removed

    def _put(self, parent, tag, new):
        old = parent.find(tag)
        if old is not None:
            _format(new, _indent_of(old), _unit(self.root))
            new.tail = old.tail
            parent.replace(old, new)
        else:
            _insert(parent, new, None)
        self.changed = True

    # -- output -------------------------------------------------------------------
    def serialize(self):
        if not self.changed:
            return self.original
        return _serialize(self.root, self.original)

    def canonical_original(self):
        """The input as lxml would write it (for a diff of real changes only)."""
        return _serialize(parse_bytes(self.original, self.source, (self.root.tag,)),
                          self.original)


def _serialize(root, original):
    head = original.lstrip()[:100]
    had_decl = head.startswith(b"<?xml")
    enc = root.getroottree().docinfo.encoding or "UTF-8"
    out = etree.tostring(root.getroottree(), encoding=enc, xml_declaration=had_decl)
    if original.endswith(b"\n") and not out.endswith(b"\n"):
        out += b"\n"
    return out


def _custom_value(custom, key):
    if custom is None:
        return None
    for child in custom:
        if isinstance(child.tag, str) and etree.QName(child).localname == key:
            return (child.text or "").strip() or None
    return None


# -- whitespace-preserving insertion --------------------------------------------

def _indent_of(elem):
    prev = elem.getprevious()
    text = prev.tail if prev is not None else (elem.getparent().text
                                               if elem.getparent() is not None else "")
    text = text or ""
    return text.rsplit("\n", 1)[1] if "\n" in text else ""


def _unit(root):
    for child in root:
        ind = _indent_of(child)
        if ind:
            return ind
    return "  "


def _format(elem, indent, unit):
    """Indent elem's (new) subtree, elem itself standing at ``indent``."""
    kids = [c for c in elem]
    if not kids:
        return
    elem.text = "\n" + indent + unit
    for i, c in enumerate(kids):
        _format(c, indent + unit, unit)
        c.tail = "\n" + indent + (unit if i < len(kids) - 1 else "")


def _insert(parent, new, index):
    unit = _unit(parent.getroottree().getroot())
    kids = [c for c in parent]
    if kids:
        child_indent = _indent_of(kids[0])
        if not child_indent and "\n" not in (parent.text or ""):
            child_indent = ""
    else:
        child_indent = _indent_of(parent) + unit if parent.getparent() is not None else unit
    _format(new, child_indent, unit)
    pretty = bool(child_indent) or not kids
    if index is None or index >= len(kids):
        if kids:
            last = kids[-1]
            new.tail = last.tail
            if pretty:
                last.tail = "\n" + child_indent
            parent.append(new)
        else:
            parent_indent = _indent_of(parent) if parent.getparent() is not None else ""
            if (parent.text or "").strip() == "":
                parent.text = "\n" + child_indent
                new.tail = "\n" + parent_indent
            parent.append(new)
    else:
        new.tail = "\n" + child_indent if pretty else None
        parent.insert(index, new)
