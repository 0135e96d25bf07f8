"""``qos-hooks apply|clear|gc|status|dry-run`` against the OVS sandbox, as a user runs them."""

import json
import os
import subprocess
import sys

import pytest


pytestmark = [pytest.mark.root, pytest.mark.ovs]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAC = "52:54:00:6b:1f:01"
XML = """<domain type='kvm'>
  <name>web01</name>
  <uuid>6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e</uuid>
  <devices>
    <interface type='bridge'>
      <mac address='%s'/>
      <source bridge='br0'/>
      <virtualport type='openvswitch'/>
      %s
      <bandwidth>
        <inbound average='1000' peak='2000' burst='256'/>
        <outbound average='500'/>
      </bandwidth>
    </interface>
  </devices>
</domain>
"""


@pytest.fixture
def xml_files(tmp_path):
    live = tmp_path / "live.xml"
    live.write_text(XML % (MAC, "<target dev='vnet0'/>"))
    nodev = tmp_path / "nodev.xml"
    nodev.write_text(XML % (MAC, ""))
    conf = tmp_path / "empty.conf"
    conf.write_text("[settings]\n")
    return str(live), str(nodev), str(conf)


def run(*args, guard=120):
    env = dict(os.environ, PYTHONPATH=ROOT, QOS_HOOKS_CONFIG="/nonexistent")
    p = subprocess.run([sys.executable, "-m", "qos_hooks"] + list(args), cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=guard)
    return p


def test_apply_status_clear_gc_exit_codes(ovs_sandbox, xml_files):
    sb = ovs_sandbox
    live, nodev, conf = xml_files
    sb.add_port("vnet0", isolated=False, external_ids={"attached-mac": MAC})
    common = ["--config", conf, "--ovsdb", sb.remote, "--timeout", "20"]

    # dry-run with --ovsdb prints the plan apply then executes (same ops, same words)
    dry = run("dry-run", "--output", "json", *common, live)
    assert dry.returncode == 0, dry.stderr
    planned = [op["description"] for op in json.loads(dry.stdout)["ops"]]
    assert len(planned) == 2
    p = run("apply", *common, "--netns", sb.netns, live)
    assert p.returncode == 0, p.stderr
    for line in planned:
        assert line in p.stdout
    assert "not enforced" in p.stdout   # the kernel here has no tc police action

    p = run("status", *common, "--netns", sb.netns, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    st = json.loads(p.stdout)
    assert [x["port"] for x in st["ports"]] == ["vnet0"] and st["drift"] is False

    # drift behind our back: OVSDB edited by hand
    qos = sb.vsctl("get", "Port", "vnet0", "qos").strip()
    sb.vsctl("set", "QoS", qos, "other_config:max-rate=9000000", wait=True)
    p = run("status", *common, "--netns", sb.netns, live)
    assert p.returncode == 7, p.stdout + p.stderr
    assert "DRIFT" in p.stdout and "qos.max-rate" in p.stdout
    # apply repairs it (update in place), by MAC this time (no target dev)
    p = run("apply", *common, "--netns", sb.netns, nodev)
    assert p.returncode == 0, p.stderr
    assert sb.vsctl("get", "Port", "vnet0", "qos").strip() == qos
    assert run("status", *common, "--netns", sb.netns, live).returncode == 0

    p = run("clear", *common, live)
    assert p.returncode == 0, p.stderr
    assert sb.vsctl("--bare", "--columns=_uuid", "list", "QoS").strip() == ""
    p = run("gc", *common, "--dry-run")
    assert p.returncode == 0 and "nothing to change" in p.stdout


def test_every_command_fails_clearly_when_ovsdb_is_down(ovs_sandbox, xml_files):
    sb = ovs_sandbox
    live, _, conf = xml_files
    sb.pause_ovsdb()                      # accepts connections, never answers
    try:
        p = run("apply", "--config", conf, "--ovsdb", sb.remote, live)   # default timeout
        assert p.returncode == 5, p.stderr
        assert "within 5.0s" in p.stderr
        for argv in (["clear", live], ["gc"], ["status"], ["dry-run", live]):
            p = run(argv[0], "--config", conf, "--ovsdb", sb.remote, "--timeout", "1", *argv[1:])
            assert p.returncode == 5, (argv, p.stdout, p.stderr)
            assert "within 1.0s" in p.stderr and "Traceback" not in p.stderr
    finally:
        sb.resume_ovsdb()
    sb.stop_ovsdb()
    for argv in (["apply", live], ["clear", live], ["gc"], ["gc", "--dry-run"], ["status"],
                 ["status", "--json", live]):
        p = run(argv[0], "--config", conf, "--ovsdb", sb.remote, "--timeout", "2", *argv[1:])
        assert p.returncode == 5, (argv, p.stdout, p.stderr)
        assert "OVSDB at %s" % sb.remote in p.stderr
        assert "Traceback" not in p.stderr
    p = run("dry-run", "--config", conf, "--ovsdb", sb.remote, live)
    assert p.returncode == 5 and "no such socket" in p.stderr
    # the OVS commands do not need a config file (defaults); an explicit one must exist
    assert run("gc", "--ovsdb", sb.remote).returncode == 5
    assert run("status", "--config", conf + ".missing", "--ovsdb", sb.remote).returncode == 3
