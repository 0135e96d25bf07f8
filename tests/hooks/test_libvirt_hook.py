"""The libvirt qemu hook executable, run the way libvirtd runs it: arguments
``DOMAIN OPERATION SUB-OPERATION EXTRA``, the domain XML on stdin, stdout
read only for migrate/restore (libvirt src/util/virhook.c, docs/hooks.rst).

Effects on OVS are checked on a sandbox switch (the script runs in its
network namespace).  tests/hooks/test_libvirt_e2e.py runs it from a real libvirtd.
"""

import os
import subprocess

import pytest

from qos_hooks.ovs.mapping import LIBVIRT_IFNAME_KEY, LIBVIRT_VM_KEY
from tests.callers import hold_stdin_open
from tests.hooks.test_hooks_vdsm import (GOLD, MAC0, UUID, assert_ovs_has, domain_xml, iface_xml,
                                   q)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOK = os.path.join(REPO, "libvirt-hooks", "qemu.d", "50_qos_hooks")

@pytest.fixture
def env_for(tmp_path, gold_policy):
    def make(remote="unix:%s" % (tmp_path / "none.sock"), timeout=2, extra=""):
        conf = gold_policy(remote, timeout, extra)
        # libvirt passes only LC_ALL, PATH, HOME, USER, LOGNAME, TMPDIR...
        # (virCommandAddEnvPassCommon); the config path is the test's addition
        # (and PYTHONPATH, so the hook imports this checkout's qos_hooks)
        return {"LC_ALL": "C", "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"),
                "QOS_HOOKS_CONFIG": str(conf), "PYTHONPATH": REPO}
    return make


def libvirt_run(op, xml, env, sub="begin", prefix=(), timeout=30, domain="web01"):
    p = subprocess.run(list(prefix) + [HOOK, domain, op, sub, "-"],
                       input=xml.encode() if isinstance(xml, str) else xml,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_install_layout():
    assert os.access(HOOK, os.X_OK)
    assert os.listdir(os.path.dirname(HOOK)) == ["50_qos_hooks"]
    # never a replacement for /etc/libvirt/hooks/qemu (VDSM owns it)
    assert not os.path.exists(os.path.join(REPO, "libvirt-hooks", "qemu"))


def test_migrate_prints_the_rewritten_xml(env_for):
    rc, out, err = libvirt_run("migrate", domain_xml(iface_xml(MAC0)), env_for())
    assert rc == 0, err
    assert "<inbound average='1000' peak='2000' burst='256'/>" in q(out)


@pytest.mark.parametrize("op", ["migrate", "restore"])
def test_nothing_changed_prints_nothing(env_for, op):
    """The policy leaves this XML as it is (fill mode, <bandwidth> already
    set): the hook prints NOTHING.  Any output, even the very bytes libvirt
    passed in, makes libvirt parse it, ABI-check it and taint the domain
    "hook-script" (qemu_migration.c qemuMigrationDstPrepareAny sets
    taint_hook -> priv->hookRun -> qemuDomainObjCheckTaint); empty output
    means "the XML as it was" and keeps an earlier qemu.d script's output
    (src/util/virhook.c virHookCall)."""
    xml = domain_xml(iface_xml(MAC0, bandwidth="<inbound average='5'/><outbound average='5'/>"))
    rc, out, err = libvirt_run(op, xml, env_for())
    assert (rc, out) == (0, ""), err
    assert "ERROR" not in err


@pytest.mark.parametrize("op", ["migrate", "restore"])
def test_changed_prints_the_whole_document(env_for, op):
    xml = domain_xml(iface_xml(MAC0))
    rc, out, err = libvirt_run(op, xml, env_for())
    assert rc == 0, err
    assert out != xml and out.startswith("<domain")
    assert out.rstrip().endswith("</domain>")
    assert "<inbound average='1000' peak='2000' burst='256'/>" in q(out)
    assert "<outbound average='500' burst='128'/>" in q(out)
    # idempotent: the printed document fed back changes nothing, so nothing
    # is printed the second time (a second qemu.d script of ours, or a
    # migration back and forth)
    rc, again, err = libvirt_run(op, out, env_for())
    assert (rc, again) == (0, ""), err


@pytest.mark.parametrize("op,sub", [("prepare", "begin"), ("start", "begin"),
                                    ("attach", "begin"), ("unknown-op", "-")])
def test_other_operations_print_nothing(env_for, op, sub):
    rc, out, err = libvirt_run(op, domain_xml(iface_xml(MAC0)), env_for(), sub=sub)
    assert (rc, out) == (0, "")


def test_migrate_with_bad_xml_fails_closed(env_for):
    rc, out, err = libvirt_run("migrate", "<domain><devices>", env_for())
    assert rc == 1 and out == ""
    assert "not well-formed" in err


def test_migrate_on_error_continue_prints_nothing(env_for):
    """on_error=continue: exit 0 and no output, so libvirt goes on with the
    XML it passed in (or an earlier script's output), untainted."""
    env = env_for(extra="on_error.qemu.migrate = continue")
    rc, out, err = libvirt_run("migrate", "<domain><devices>", env)
    assert (rc, out) == (0, "")
    assert "on_error=continue for qemu.migrate" in err


def test_started_without_ovs_interfaces_never_touches_ovsdb(env_for):
    xml = domain_xml(iface_xml(MAC0, target="vnet0", ovs=False))
    rc, out, err = libvirt_run("started", xml, env_for())
    assert (rc, out) == (0, "") and "ERROR" not in err


def test_started_with_ovsdb_down_never_blocks_the_start(env_for):
    xml = domain_xml(iface_xml(MAC0, target="vnet0", bandwidth="<inbound average='9'/>"))
    rc, out, err = libvirt_run("started", xml, env_for(timeout=1), timeout=1 + 3 + 5)
    assert (rc, out) == (0, "")
    assert "on_error=continue for qemu.started" in err
    env = env_for(timeout=1, extra="on_error.qemu.started = fail")
    rc, _, err = libvirt_run("started", xml, env, timeout=1 + 3 + 5)
    assert rc == 1


def test_usage_without_arguments():
    p = subprocess.run([HOOK], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30, env=dict(os.environ, PYTHONPATH=REPO))
    assert p.returncode == 1 and b"usage" in p.stderr


def test_started_applies_and_release_clears_including_libvirt_leftovers(ovs_sandbox, env_for):
    sb = ovs_sandbox
    sb.add_port("vnet0", mac=MAC0, external_ids={"attached-mac": MAC0, "vm-id": UUID})
    env = env_for(remote=sb.remote)
    prefix = ["ip", "netns", "exec", sb.netns]
    gold = ("<inbound average='1000' peak='2000' burst='256'/>"
            "<outbound average='500' burst='128'/>")
    live = domain_xml(iface_xml(MAC0, target="vnet0", bandwidth=gold))
    # what libvirt 9.0 itself writes for <bandwidth> before 'started'
    # (virNetDevOpenvswitchInterfaceSetQos): its own QoS + Queue, tagged vm-id
    tags = ["external_ids:%s=%s" % (LIBVIRT_VM_KEY, UUID),
            "external_ids:%s=vnet0" % LIBVIRT_IFNAME_KEY]
    sb.vsctl("set", "port", "vnet0", "qos=@qos", "--", "--id=@qos", "create", "qos",
             "type=linux-htb", "other_config:min-rate=8000000", "queues:0=@q", *tags,
             "--", "--id=@q", "create", "queue", "other_config:min-rate=8000000", *tags)
    rc, out, err = libvirt_run("started", live, env, prefix=prefix)
    assert (rc, out) == (0, ""), err
    assert "ERROR" not in err, err
    assert_ovs_has(sb, "vnet0", GOLD)
    assert (len(sb.vsctl_json("QoS")), len(sb.vsctl_json("Queue"))) == (1, 1)
    rc, _, err = libvirt_run("reconnect", live, env, prefix=prefix)
    assert rc == 0, err
    assert_ovs_has(sb, "vnet0", GOLD)
    # libvirt 9.0 at destroy: the port goes, and a leftover of its own stays
    sb.del_port("vnet0")
    sb.vsctl("create", "qos", "type=linux-htb", *tags)
    rc, _, err = libvirt_run("release", live, env, sub="end", prefix=prefix)
    assert rc == 0, err
    assert (len(sb.vsctl_json("QoS")), len(sb.vsctl_json("Queue"))) == (0, 0)


@pytest.mark.parametrize("op,code", [("started", 0), ("migrate", 1)])
def test_a_stdin_that_stays_open_is_bounded(env_for, op, code):
    """libvirtd waits for its hooks: a stdin that never closes (half an XML,
    then nothing) must not hold it.  The hook's watchdog is armed before the
    first byte is read (the default bound, 5 s + HOOK_MARGIN, as the config
    is not read yet) and exits by the failure policy: started carries on
    (0), migrate fails (1); nothing on stdout."""
    rc, took, out, err = hold_stdin_open([HOOK, "web01", op, "begin", "-"],
                                         domain_xml(iface_xml(MAC0)).encode()[:100], env_for())
    assert rc == code, err
    assert "qemu.%s exceeded its bound of 8.0s" % op in err
    assert took < 30 and out == b""
