"""``qos-hooks set`` against libvirt's in-process test driver (test:///default).

The same command against a real libvirtd + OVS is in tests/hooks/test_libvirt_e2e.py.
"""

import os
import subprocess
import sys

import pytest

from qos_hooks.virt import live
from qos_hooks.core import policy
from qos_hooks.core.errors import InputError

CONF = """\
[settings]
default_profile = small

[profile small]
inbound.average = 1000
inbound.peak = 2000
inbound.burst = 256
outbound.average = 500
disk.total_iops_sec = 100
disk.total_iops_sec_max = 200
cpu.shares = 512

[profile big]
inbound.average = 12500
outbound.average = 6250
outbound.burst = 1024
"""

OVIRT_DOMAIN = """<domain type='test'>
  <name>ovirt-vm</name>
  <uuid>0b4e4b8e-6b1c-4a55-9f43-3f2d2b1c0a01</uuid>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0"/>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <vcpu>2</vcpu>
  <os><type arch='i686'>hvm</type></os>
  <devices/>
</domain>"""


def _libvirt():
    try:
        import libvirt
    except ImportError:
        from tests.ovs_sandbox import require
        require("needs the libvirt Python binding (pip install libvirt-python)")
    return libvirt


@pytest.fixture
def conn():
    lv = _libvirt()
    c = lv.open("test:///default")
    yield c
    c.close()


@pytest.fixture
def config():
    return policy.parse_config(CONF, "test.conf")


def test_set_live_changes_interface_and_disk(conn, config):
    lv = _libvirt()
    summary = live.set_domain(conn, "test", config, profile="small", live=True, ovs=False)
    dom = conn.lookupByName("test")
    p = dom.interfaceParameters("testnet0", lv.VIR_DOMAIN_AFFECT_LIVE)
    assert (p["inbound.average"], p["inbound.peak"], p["inbound.burst"]) == (1000, 2000, 256)
    assert p["outbound.average"] == 500
    io = dom.blockIoTune("vda", lv.VIR_DOMAIN_AFFECT_LIVE)
    assert io["total_iops_sec"] == 100 and io["total_iops_sec_max"] == 200
    assert len(summary["done"]) == 2
    # the test driver has no cpu_shares: said, not silently dropped
    assert any("cpu_shares" in s for s in summary["skipped"])


def test_set_replaces_previous_profile(conn, config):
    lv = _libvirt()
    live.set_domain(conn, "test", config, profile="small", live=True, ovs=False)
    live.set_domain(conn, "test", config, profile="big", live=True, ovs=False)
    p = conn.lookupByName("test").interfaceParameters("testnet0", lv.VIR_DOMAIN_AFFECT_LIVE)
    assert p["inbound.average"] == 12500
    assert p["outbound.average"] == 6250 and p["outbound.burst"] == 1024
    # override mode: the profile's directions replace; peak/burst of the old
    # inbound are gone with it
    assert p["inbound.peak"] == 0 and p["inbound.burst"] == 0


def test_set_is_idempotent(conn, config):
    live.set_domain(conn, "test", config, profile="big", live=True, ovs=False)
    again = live.set_domain(conn, "test", config, profile="big", live=True, ovs=False)
    assert again["done"] == []


def test_set_persistent_changes_the_definition(conn, config):
    lv = _libvirt()
    live.set_domain(conn, "test", config, profile="big", persistent=True, ovs=False)
    dom = conn.lookupByName("test")
    xml = dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)
    assert "<inbound average='12500'/>" in xml
    assert "<outbound average='6250' burst='1024'/>" in xml


def test_set_writes_ovirt_vcpu_limit_metadata(conn):
    lv = _libvirt()
    cfg = policy.parse_config("[profile capped]\ncpu.limit = 40\n", "t.conf")
    dom = conn.defineXML(OVIRT_DOMAIN)
    dom.create()
    live.set_domain(conn, "ovirt-vm", cfg, profile="capped", live=True, ovs=False)
    md = dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, live.NS_OVIRT_TUNE,
                      lv.VIR_DOMAIN_AFFECT_LIVE)
    assert "<vcpuLimit>40</vcpuLimit>" in md


def test_unknown_domain_is_an_input_error(conn, config):
    with pytest.raises(InputError):
        live.set_domain(conn, "no-such-domain", config, profile="small", live=True, ovs=False)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "qos_hooks"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                          universal_newlines=True)


def test_cli_set_exit_codes(tmp_path):
    _libvirt()
    conf = tmp_path / "q.conf"
    conf.write_text(CONF)
    ok = _cli("set", "--config", str(conf), "--connect", "test:///default", "--domain", "test",
              "--profile", "small", "--live")
    assert ok.returncode == 0, ok.stderr
    assert "set <bandwidth> of interface aa:bb:cc:dd:ee:ff" in ok.stdout
    bad_profile = _cli("set", "--config", str(conf), "--connect", "test:///default",
                       "--domain", "test", "--profile", "nope", "--live")
    assert bad_profile.returncode == 3
    bad_domain = _cli("set", "--config", str(conf), "--connect", "test:///default",
                      "--domain", "nope", "--live")
    assert bad_domain.returncode == 4 and "no domain named 'nope'" in bad_domain.stderr
    no_daemon = _cli("set", "--config", str(conf), "--connect",
                     "qemu:///system?socket=%s" % (tmp_path / "none.sock"),
                     "--domain", "test", "--live")
    assert no_daemon.returncode == 5


def test_live_module_is_the_only_libvirt_importer():
    """The hooks never import libvirt (the qemu hook would deadlock libvirtd)."""
    code = ("import sys, qos_hooks.hooks.vdsm_vm, qos_hooks.hooks.libvirt_qemu, qos_hooks.priv.helper; "
            "print('libvirt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         universal_newlines=True, cwd=os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__))))
    assert out.stdout.strip() == "False"
