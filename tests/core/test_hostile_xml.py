"""Hostile domain XML: a clear one-line error, exit code 4, no traceback, no
network access, bounded memory.

Network access is checked with a listening socket on 127.0.0.1 that every
external reference points at: after the run, the socket must have no pending
connection.  The UTF-16 variants matter: a byte-level DOCTYPE check cannot
see them, so they reach libxml2 itself, whose parser must still resolve
nothing and fetch nothing.
"""

import os
import socket

import pytest

from qos_hooks.core.errors import EXIT_INPUT
from tests.core_helpers import EXAMPLES, run_cli

CONF = os.path.join(EXAMPLES, "qos-hooks.conf")

LAUGHS = """<?xml version="1.0" encoding="{enc}"?>
<!DOCTYPE domain [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<domain type="kvm"><name>&lol9;</name></domain>
"""


def encode(text, enc):
    return text.format(enc=enc).encode(enc.lower().replace("utf-16", "utf-16"))


@pytest.fixture
def listener():
    """A TCP socket on 127.0.0.1 that must never see a connection."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield "http://127.0.0.1:%d" % s.getsockname()[1], s
    s.close()


def assert_no_connection(sock):
    try:
        conn, peer = sock.accept()
    except BlockingIOError:
        return
    conn.close()
    raise AssertionError("the parser connected to the listener from %s:%d" % peer)


def assert_input_error(proc, *needles):
    assert proc.returncode == EXIT_INPUT, (proc.returncode, proc.stderr)
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert " ERROR cmd=dry-run: " in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    assert proc.stdout == b""
    return lines[0]


def dry_run(data, *extra):
    return run_cli("dry-run", "--config", CONF, *extra, "-", stdin=data)


@pytest.mark.parametrize("enc,needle", [("utf-8", "<stdin>:2: DOCTYPE/ENTITY declarations are "
                                                  "not allowed"),
                                        ("UTF-16", "<stdin>: document is not UTF-8")])
def test_billion_laughs(enc, needle):
    line = assert_input_error(dry_run(encode(LAUGHS, enc)), needle)
    assert "lollol" not in line


def test_billion_laughs_from_a_file(tmp_path):
    f = tmp_path / "laughs.xml"
    f.write_bytes(encode(LAUGHS, "utf-8"))
    p = run_cli("dry-run", "--config", CONF, str(f))
    assert_input_error(p, "%s:2: DOCTYPE/ENTITY declarations are not allowed" % f)


def test_external_entity_to_a_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    doc = ('<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file://%s">]>\n'
           '<domain type="kvm"><name>&xxe;</name></domain>\n' % secret)
    for data in (doc.encode(), doc.replace('"1.0"?>', '"1.0" encoding="UTF-16"?>')
                 .encode("utf-16")):
        p = dry_run(data, "--output", "xml")
        assert_input_error(p, "<stdin>")
        assert b"TOP-SECRET" not in p.stdout + p.stderr


@pytest.mark.parametrize("enc", ["utf-8", "UTF-16", "UTF-7"])
def test_external_entity_and_dtd_over_http(listener, enc):
    url, sock = listener
    doc = ('<?xml version="1.0" encoding="%s"?>\n'
           '<!DOCTYPE domain SYSTEM "%s/domain.dtd" [\n'
           '  <!ENTITY %% remote SYSTEM "%s/param.ent">\n'
           '  %%remote;\n'
           '  <!ENTITY xxe SYSTEM "%s/xxe">\n'
           ']>\n<domain type="kvm"><name>&xxe;</name></domain>\n' % (enc, url, url, url))
    p = dry_run(doc.encode(enc))
    assert_input_error(p, "<stdin>")
    assert_no_connection(sock)


def test_the_parser_itself_reaches_no_network(listener):
    """Behind the up-front checks: lxml with the project's parser options
    neither fetches a DTD nor an external entity."""
    from lxml import etree
    from qos_hooks.core import domxml
    url, sock = listener
    doc = ('<!DOCTYPE domain SYSTEM "%s/d.dtd" [<!ENTITY %% p SYSTEM "%s/p.ent"> %%p;'
           '<!ENTITY x SYSTEM "%s/x">]><domain><name>&x;</name></domain>' % (url, url, url))
    try:
        root = etree.fromstring(doc.encode(), domxml._parser())
    except etree.XMLSyntaxError as e:
        assert "network" in str(e)
    else:
        assert root.findtext("name") in ("", None)
    assert_no_connection(sock)


def test_xinclude_is_not_processed(listener):
    # not refused (no DOCTYPE), but never fetched either: lxml only runs
    # XInclude when asked to
    url, sock = listener
    data = ('<domain type="kvm" xmlns:xi="http://www.w3.org/2001/XInclude"><name>x</name>'
            '<xi:include href="%s/inc.xml" parse="xml"/></domain>' % url).encode()
    p = dry_run(data, "--output", "xml")
    assert p.returncode == 0, p.stderr
    assert b'<xi:include href="' in p.stdout
    assert_no_connection(sock)


def test_fifty_megabytes_from_stdin():
    pad = b"<!-- " + b"x" * (50 * 1024 * 1024) + b" -->"
    data = b'<domain type="kvm"><name>big</name>' + pad + b"</domain>"
    assert_input_error(dry_run(data), "<stdin>: document is larger than the limit of "
                                      "16777216 bytes")


def test_fifty_megabytes_from_a_file(tmp_path):
    f = tmp_path / "big.xml"
    with open(f, "wb") as out:
        out.write(b'<domain type="kvm"><name>big</name>\n')
        chunk = b"<description>" + b"y" * (1024 * 1024) + b"</description>\n"
        for _ in range(50):
            out.write(chunk)
        out.write(b"</domain>\n")
    p = run_cli("dry-run", "--config", CONF, str(f))
    assert_input_error(p, "%s: document is larger than the limit" % f)


@pytest.mark.parametrize("data,needle", [
    (b'<domain type="kvm"><name>caf\xe9</name></domain>',
     "<stdin>:1: not well-formed XML: Invalid bytes in character encoding, line 1, column 29 "
     "(the document is not valid UTF-8)"),
    (b'<?xml version="1.0" encoding="utf-8"?>\n<domain><name>\xff\xfe\xfd</name></domain>',
     "<stdin>:2: not well-formed XML"),
    (b"\x00\x01\x02garbage", "<stdin>: document is not UTF-8 (UTF-16, UTF-32 or binary"),
    (b"\x01\x02\x03garbage", "<stdin>:1: not well-formed XML"),
    (b'<?xml version="1.0" encoding="klingon"?><domain/>',
     "<stdin>:1: document declares encoding 'klingon'"),
])
def test_non_utf8_and_binary(data, needle):
    assert_input_error(dry_run(data), needle)


def test_deep_nesting():
    depth = 100000
    data = (b'<domain type="kvm"><metadata>' + b"<a>" * depth + b"</a>" * depth
            + b"</metadata></domain>")
    assert_input_error(dry_run(data), "not well-formed XML")


def test_undefined_entity():
    assert_input_error(dry_run(b'<domain type="kvm"><name>&ext;</name></domain>'),
                       "Entity 'ext' not defined")


# -- numbers (issue 9 item 7): ASCII digits only, bounded length, exit 4 -----------

BIG = "9" * 5000
PLAIN = """<domain type="kvm">
  <name>n1</name>
  <uuid>6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e</uuid>
  <vcpu>{vcpu}</vcpu>
  <cputune><shares>{shares}</shares></cputune>
  <devices>
    <interface type="bridge">
      <mac address="52:54:00:00:00:01"/>
      <source bridge="br0"/>
      <bandwidth><inbound average="{avg}"/></bandwidth>
    </interface>
    <disk type="file" device="disk">
      <source file="/var/lib/a.img"/>
      <target dev="vda" bus="virtio"/>
      <iotune><total_iops_sec>{iops}</total_iops_sec></iotune>
    </disk>
  </devices>
</domain>
"""
OVIRT = """<domain type="kvm" xmlns:ovirt-tune="http://ovirt.org/vm/tune/1.0">
  <name>n2</name>
  <metadata><ovirt-tune:qos><vcpuLimit>{limit}</vcpuLimit></ovirt-tune:qos></metadata>
  <vcpu>2</vcpu>
</domain>
"""
FINE = dict(vcpu="2", shares="1024", avg="1000", iops="100")


def plain(**over):
    return PLAIN.format(**dict(FINE, **over)).encode()


@pytest.mark.parametrize("data,needle", [
    (plain(avg=BIG), "<stdin>:10: <inbound average='9999999999"),
    (plain(iops=BIG), "<stdin>:15: <iotune><total_iops_sec>9999"),
    (plain(vcpu=BIG), "<stdin>:4: <vcpu>: number with 5000 digits"),
    (plain(shares=BIG), "<stdin>:5: <cputune><shares>: number with 5000 digits"),
    (OVIRT.format(limit=BIG).encode(), "<stdin>:3: <vcpuLimit>: number with 5000 digits"),
    (plain(vcpu="\u0664"), "<stdin>:4: <vcpu>: not a non-negative integer: '\u0664'"),
    (plain(avg="\u0661\u0660\u0660\u0660"), "<stdin>:10: <inbound average='\u0661\u0660\u0660\u0660'>: not a non-negative integer"),
    (plain(iops="\u00b2"), "<stdin>:15: <iotune><total_iops_sec>\u00b2</total_iops_sec>: not a non-negative integer"),
    (plain(shares="\uff11\uff10"), "<stdin>:5: <cputune><shares>: not a non-negative integer"),
    (OVIRT.format(limit="\u00b2").encode(), "<stdin>:3: <vcpuLimit>: not a non-negative integer"),
], ids=["big-attr", "big-iotune", "big-vcpu", "big-cputune", "big-vcpuLimit", "arabic-vcpu",
        "arabic-average", "superscript-iops", "fullwidth-shares", "superscript-vcpuLimit"])
def test_hostile_numbers_are_input_errors(data, needle):
    """A 5000-digit number was Python's int-digits ValueError (exit 1, a
    traceback); a non-ASCII digit was read as a number ('٤' -> 4) or crashed."""
    line = assert_input_error(dry_run(data, "--profile", "gold"), needle)
    assert len(line) < 400          # the 5000 digits are not echoed back
    if "9999" in needle:
        assert "5000 characters" in line and "at most 20 digits" in line


# -- log forging (issue 9 item 9): values from the XML are escaped in the logger -------------

FORGE = """<domain type="kvm">
  <name>web01</name>
  <uuid>6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e</uuid>
  <vcpu>1</vcpu>
  <devices>
    <interface type="bridge">
      <mac address="52:54:00:00:00:01"/>
      <source bridge="br0"/>
      <target dev="vnet0&#10;qos-hooks[1] ERROR forged by the tap name"/>
    </interface>
    <disk type="file" device="disk">
      <source file="/var/lib/a.img"/>
      <target dev="vda&#10;qos-hooks[1] ERROR forged&#13;&#x2028;&#x85;[2K" bus="virtio"/>
    </disk>
  </devices>
</domain>
"""


def test_xml_values_cannot_forge_a_log_line(tmp_path):
    """``<target dev='vda&#10;qos-hooks[1] ERROR forged'/>`` used to print a
    line of its own in VDSM's log.  Every line the hook writes now starts
    with its own pid, and the forged text stays inside an escaped value."""
    import re
    import subprocess
    conf = tmp_path / "c.conf"
    conf.write_text("[profile gold]\ninbound.average = 1000\ndisk.total_iops_sec = 100\n")
    f = tmp_path / "dom.xml"
    f.write_text(FORGE)
    hook = os.path.join(os.path.dirname(CONF), "..", "hooks", "before_vm_start", "50_qos_hooks")
    env = dict(os.environ, QOS_HOOKS_CONFIG=str(conf), _hook_domxml=str(f), qos_profile="gold",
               QOS_HOOKS_LOG_LEVEL="DEBUG",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    p = subprocess.run([hook], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode("utf-8")
    lines = err.split("\n")
    assert lines[-1] == ""
    pids = set()
    for line in lines[:-1]:
        m = re.match(r"qos-hooks\[(\d+)\] (DEBUG|INFO|WARNING|ERROR) hook=before_vm_start: ",
                     line)
        assert m, "a line the hook did not write: %r" % line
        pids.add(m.group(1))
        assert "\r" not in line and "\u2028" not in line and "\x85" not in line
    assert len(pids) == 1 and pids != {"1"}
    assert "vda\\nqos-hooks[1] ERROR forged\\r\\u2028\\x85[2K" in err
    assert "vnet0\\nqos-hooks[1] ERROR forged by the tap name" in err
