"""End to end: a real libvirtd 9.0, qemu (TCG) guests on a real Open vSwitch,
this project's qemu hook installed in libvirt's hook directory
(tests/libvirtd_host.py sets all of it up without touching the host's files).

* start: the limits stand in OVSDB and in the kernel (htb classes on the
  tap) as qos_hooks.ovs.mapping.map_bandwidth defines them; libvirt's own
  rows are replaced;
* destroy: zero QoS and Queue rows left for the domain, whoever made them
  (libvirt 9.0 leaks its own; the release hook removes them);
* 20 start/destroy cycles: zero rows leaked;
* VDSM's vNIC update (libvirt updateDeviceFlags + after_update_device):
  new limits without a restart, no orphaned row;
* libvirtd restarted while a guest runs: ``reconnect`` re-applies;
* ``qos-hooks set`` on a running domain: libvirt's interface parameters
  and OVS both carry the new profile.
"""

import os
import re
import subprocess
import sys
import uuid

import pytest

from qos_hooks.virt import live
from qos_hooks.core import policy
from qos_hooks.ovs.mapping import LIBVIRT_VM_KEY, OWNER_KEY, map_bandwidth
from tests.libvirtd_host import domain_xml
from tests.ovs_sandbox import htb_rates
from tests.polling import wait_until

pytestmark = [pytest.mark.root, pytest.mark.libvirtd, pytest.mark.ovs]

GOLD_XML = ("<inbound average='1000' peak='2000' burst='256'/>"
            "<outbound average='500' burst='128'/>")
GOLD = policy.Bandwidth(inbound=policy.Rate(average=1000, peak=2000, burst=256),
                        outbound=policy.Rate(average=500, burst=128))
CYCLES = 20
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(REPO, "libexec", "qos-hooks-helper")


def _rows_for(h, dom_uuid):
    """QoS and Queue rows that belong to the domain, by anyone's tag."""
    out = []
    for table in ("QoS", "Queue"):
        rows = [r for r in h.rows(table)
                if dom_uuid in (r["external_ids"].get(LIBVIRT_VM_KEY),
                                r["external_ids"].get(OWNER_KEY))]
        out.append(rows)
    return out


def _counts(h):
    return len(h.rows("QoS")), len(h.rows("Queue"))


def _tap(dom):
    m = re.search(r"<target dev='([^']+)'", dom.XMLDesc(0))
    return m.group(1)


def _tc_rates(dev):
    return htb_rates(subprocess.run(["tc", "class", "show", "dev", dev], stdout=subprocess.PIPE,
                                    universal_newlines=True, check=True).stdout)


def _wait(pred, what, timeout=10):
    return wait_until(pred, what, timeout)


def assert_applied(h, dev, bw, dom_uuid):
    want, _ = map_bandwidth(bw)
    port = [p for p in h.rows("Port", "name", "qos") if p["name"] == dev][0]
    iface = [i for i in h.rows("Interface", "name", "ingress_policing_rate",
                               "ingress_policing_burst") if i["name"] == dev][0]
    assert iface["ingress_policing_rate"] == want.policing_rate
    assert iface["ingress_policing_burst"] == want.policing_burst
    qos = [r for r in h.rows("QoS") if r["_uuid"] == port["qos"]][0]
    assert qos["external_ids"].get(OWNER_KEY) == dom_uuid, qos
    assert int(qos["other_config"]["max-rate"]) == want.qos_max_rate
    queue = [r for r in h.rows("Queue") if r["_uuid"] == qos["queues"][0]][0]
    assert int(queue["other_config"]["min-rate"]) == want.queue_min_rate
    assert int(queue["other_config"]["max-rate"]) == want.queue_max_rate
    # libvirt's own rows for this domain were replaced, not left beside ours
    qos_rows, queue_rows = _rows_for(h, dom_uuid)
    assert (len(qos_rows), len(queue_rows)) == (1, 1)
    # the kernel: the tap is in the root namespace
    _wait(lambda: "1:1" in _tc_rates(dev), "htb class 1:1 on %s" % dev)
    rates = _tc_rates(dev)
    assert rates["1:fffe"][1] == want.qos_max_rate
    assert rates["1:1"] == (want.queue_min_rate, want.queue_max_rate)


def _start(h, name, bandwidth=GOLD_XML, nics=1):
    u = str(uuid.uuid4())
    mac = "52:54:00:4e:%02x:00" % (hash(name) & 0xff)
    dom = h.conn().createXML(domain_xml(name, u, mac, bridge=h.bridge, bandwidth=bandwidth,
                                        nics=nics), 0)
    return dom, u


def test_start_applies_destroy_clears(host):
    dom, u = _start(host, "qh4-e2e-a")
    try:
        assert_applied(host, _tap(dom), GOLD, u)
    finally:
        dom.destroy()
    qos_rows, queue_rows = _rows_for(host, u)
    assert (qos_rows, queue_rows) == ([], [])
    assert _counts(host) == (0, 0)


def test_set_on_the_real_libvirtd(host):
    dom, u = _start(host, "qh4-e2e-set")
    try:
        cfg = policy.parse_config(
            "[settings]\novsdb = %s\novsdb_timeout = 5\n\n[profile silver]\n"
            "inbound.average = 250\noutbound.average = 125\n" % host.remote, "t.conf")
        conn = host.conn()
        summary = live.set_domain(conn, dom.name(), cfg, profile="silver", live=True)
        assert summary["ovs"]
        import libvirt
        p = dom.interfaceParameters(_tap(dom), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        assert (p["inbound.average"], p["outbound.average"]) == (250, 125)
        silver = policy.Bandwidth(inbound=policy.Rate(average=250),
                                  outbound=policy.Rate(average=125))
        assert_applied(host, _tap(dom), silver, u)
        # the CLI, against the same daemon: back to the domain's own XML values
        conf = "[settings]\novsdb = %s\n\n[profile gold]\n%s" % (
            host.remote, "inbound.average = 1000\ninbound.peak = 2000\ninbound.burst = 256\n"
            "outbound.average = 500\noutbound.burst = 128\n")
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(conf)
            f.flush()
            r = subprocess.run([sys.executable, "-m", "qos_hooks", "set", "--config", f.name,
                                "--connect", host.uri, "--domain", dom.name(), "--profile",
                                "gold", "--live"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "OVS QoS applied" in r.stdout
        assert_applied(host, _tap(dom), GOLD, u)
    finally:
        dom.destroy()
    assert _rows_for(host, u) == [[], []]


def test_vdsm_update_device_changes_limits_without_restart(host, tmp_path):
    """VDSM's vNIC update: libvirt updateDeviceFlags with the new <bandwidth>
    (libvirt 9.0 then writes its own OVS QoS and orphans ours), then the
    after_update_device hook as VDSM runs it, through the root helper: the
    new limits stand, and only one QoS + Queue row is left for the vNIC."""
    import libvirt
    from tests.vdsm_runner import run_hook_dir
    dom, u = _start(host, "qh4-e2e-update")
    try:
        dev = _tap(dom)
        xml = dom.XMLDesc(0)
        old_iface = re.search(r"<interface type='bridge'>.*?</interface>", xml, re.S).group(0)
        new_iface = re.sub(r"<bandwidth>.*?</bandwidth>",
                           "<bandwidth><inbound average='250'/><outbound average='125'/>"
                           "</bandwidth>", old_iface, flags=re.S)
        dom.updateDeviceFlags(new_iface, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        conf = tmp_path / "q.conf"
        conf.write_text("[settings]\novsdb = %s\novsdb_timeout = 5\n" % host.remote)
        env = dict(os.environ, PYTHONPATH=REPO, QOS_HOOKS_CONFIG=str(conf), QOS_HOOKS_VIA_HELPER="1",
                   QOS_HOOKS_SUDO="0", QOS_HOOKS_HELPER=HELPER)
        res = run_hook_dir(os.path.join(REPO, "hooks", "after_update_device"), new_iface,
                           hook_point="after_update_device", vm_id=u, base_env=env)
        assert res.rcs == (0,), res.stderr
        assert "ERROR" not in res.stderr, res.stderr
        silver = policy.Bandwidth(inbound=policy.Rate(average=250),
                                  outbound=policy.Rate(average=125))
        assert_applied(host, dev, silver, u)
    finally:
        dom.destroy()
    assert _rows_for(host, u) == [[], []]


def test_libvirtd_restart_reconnect_reapplies(host):
    """OVS lost its QoS while libvirtd was down; at libvirtd's restart the
    qemu hook's ``reconnect`` puts it back."""
    dom, u = _start(host, "qh4-e2e-reconnect")
    name, dev = dom.name(), _tap(dom)
    try:
        assert_applied(host, dev, GOLD, u)
        host.stop_libvirtd()
        host.vsctl("clear", "Port", dev, "qos", "--", "set", "Interface", dev,
                   "ingress_policing_rate=0", "ingress_policing_burst=0")
        for table in ("QoS", "Queue"):
            for r in host.rows(table):
                host.vsctl("destroy", table, r["_uuid"])
        assert _counts(host) == (0, 0)
        host.relaunch_libvirtd()
        dom = host.conn().lookupByName(name)
        assert dom.isActive()
        _wait(lambda: _rows_for(host, u)[0], "QoS re-applied at reconnect", timeout=30)
        assert_applied(host, dev, GOLD, u)
    finally:
        host.conn().lookupByName(name).destroy()
    assert _rows_for(host, u) == [[], []]


def test_twenty_start_destroy_cycles_leak_nothing(host):
    leaked = []
    for i in range(CYCLES):
        dom, u = _start(host, "qh4-cycle-%d" % i, nics=2)
        try:
            qos_rows, queue_rows = _rows_for(host, u)
            # two vNICs, each with our QoS + queue 0, nothing of libvirt's beside
            assert (len(qos_rows), len(queue_rows)) == (2, 2), (i, qos_rows)
            assert all(OWNER_KEY in r["external_ids"] for r in qos_rows)
        finally:
            dom.destroy()
        rows = _rows_for(host, u)
        if rows != [[], []]:
            leaked.append((i, rows))
    assert leaked == []
    assert _counts(host) == (0, 0)


def test_hook_log_shows_every_operation(host):
    """libvirtd ran the hook for each domain operation we act on."""
    log = host.log("libvirtd.log")
    for op in ("started", "stopped", "release"):
        assert re.search(r"Calling hook /etc/libvirt/hooks/qemu.d/50_qos_hooks id=\S+ op=%s"
                         % op, log), op


# -- save / restore: the hook prints the XML only when the policy changed it ----

def _install_hook_with_config(h, conf_text):
    """Run this project's hook from libvirt's qemu.d with a config of the
    test's own (libvirtd passes hooks no QOS_HOOKS_CONFIG): a two-line
    wrapper replaces the installed copy, atomically (a non-executable file in
    qemu.d is skipped by libvirt, os.replace swaps it in)."""
    from tests.libvirtd_host import QEMU_HOOK
    conf = os.path.join(h.dir, "restore-test.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    dst = os.path.join(h.hook_dir, "50_qos_hooks")
    tmp = os.path.join(h.hook_dir, ".50_qos_hooks.new")
    with open(tmp, "w") as f:
        f.write("#!/bin/sh\nQOS_HOOKS_CONFIG=%s exec %s \"$@\"\n" % (conf, QEMU_HOOK))
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)


def _reinstall_hook(h):
    import shutil
    from tests.libvirtd_host import QEMU_HOOK
    dst = os.path.join(h.hook_dir, "50_qos_hooks")
    tmp = os.path.join(h.hook_dir, ".50_qos_hooks.new")
    shutil.copy2(QEMU_HOOK, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)


def _taints(h, dom):
    """The domain's taint flags as libvirt 9.0 exposes them: the domain log
    line ``Domain id=N is tainted: FLAG`` (qemuDomainObjTaint, written from
    qemuDomainObjCheckTaint at launch) and virDomainGetMessages."""
    import libvirt
    log = h.log(os.path.join("var-log", "qemu", dom.name() + ".log"))
    flags = set(re.findall(r"Domain id=%d is tainted: (\S+)" % dom.ID(), log))
    return flags, dom.messages(libvirt.VIR_DOMAIN_MESSAGE_TAINTING)


def _save_restore(h, dom):
    path = os.path.join(h.dir, dom.name() + ".save")
    name = dom.name()
    call = r"Calling hook /etc/libvirt/hooks/qemu.d/50_qos_hooks id=%s op=restore" % name
    calls = len(re.findall(call, h.log("libvirtd.log")))
    dom.save(path)
    h.conn().restore(path)
    os.unlink(path)
    assert len(re.findall(call, h.log("libvirtd.log"))) == calls + 1
    return h.conn().lookupByName(name)


NOOP_CONF = """\
[settings]
ovsdb = {remote}
ovsdb_timeout = 5
default_profile = gold

[profile gold]
on_existing = fill
inbound.average = 1000
inbound.peak = 2000
inbound.burst = 256
outbound.average = 500
outbound.burst = 128
"""

CHANGING_CONF = """\
[settings]
ovsdb = {remote}
ovsdb_timeout = 5
default_profile = silver

[profile silver]
on_existing = override
inbound.average = 250
outbound.average = 125
"""


def test_save_restore_taints_only_when_the_policy_changes_the_xml(host):
    """virsh save / virsh restore of a running guest.  A policy that changes
    nothing (the domain already has its profile's <bandwidth>): the restore
    hook prints nothing, so libvirt does not taint the domain "hook-script"
    (it would for ANY output, even the unchanged document: qemu_saveimage.c /
    qemu_driver.c restore path -> priv->hookRun -> qemuDomainObjCheckTaint).
    A policy that changes the XML: the restored domain runs with the new
    <bandwidth>, in libvirt and on OVS, and is tainted, as libvirt documents."""
    dom, u = _start(host, "qh4-e2e-restore")
    name = dom.name()
    try:
        _install_hook_with_config(host, NOOP_CONF.format(remote=host.remote))
        assert "hook-script" not in _taints(host, dom)[0]
        dom = _save_restore(host, dom)
        flags, messages = _taints(host, dom)
        assert "high-privileges" in flags          # the log is read right
        assert "hook-script" not in flags, flags
        assert not [m for m in messages if "hook" in m], messages
        assert_applied(host, _tap(dom), GOLD, u)

        _install_hook_with_config(host, CHANGING_CONF.format(remote=host.remote))
        dom = _save_restore(host, dom)
        silver = policy.Bandwidth(inbound=policy.Rate(average=250),
                                  outbound=policy.Rate(average=125))
        assert "<inbound average='250'/>" in dom.XMLDesc(0)
        assert "<outbound average='125'/>" in dom.XMLDesc(0)
        assert_applied(host, _tap(dom), silver, u)
        flags, messages = _taints(host, dom)
        assert "hook-script" in flags, flags
        assert [m for m in messages if "hook" in m], messages
    finally:
        _reinstall_hook(host)
        try:
            host.conn().lookupByName(name).destroy()
        except Exception:
            pass
    assert _rows_for(host, u) == [[], []]


def _install_failing_hook(h, failing_ops):
    """A qemu.d script that exits 1 at the given operations and runs this
    project's hook (with its default on_error) at every other one."""
    from tests.libvirtd_host import QEMU_HOOK
    dst = os.path.join(h.hook_dir, "50_qos_hooks")
    tmp = os.path.join(h.hook_dir, ".50_qos_hooks.new")
    with open(tmp, "w") as f:
        f.write("#!/bin/sh\ncase \" %s \" in *\" $2 \"*) echo \"failing $2 on purpose\" >&2; "
                "exit 1;; esac\nexec %s \"$@\"\n" % (" ".join(failing_ops), QEMU_HOOK))
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)


def test_what_libvirt_does_with_a_failing_hook(host):
    """docs/hooks.md, checked on libvirt 9.0: a failing ``started`` aborts a
    normal start and a restore (qemuProcessFinishStartup fails ->
    qemuProcessStart stops the domain, qemuProcessStop); a failing
    ``restore`` aborts the restore and leaves the image usable; a failing
    ``stopped``/``release`` changes nothing (qemuProcessStop ignores them)."""
    import libvirt
    name = "qh4-e2e-failing"
    path = os.path.join(host.dir, name + ".save")
    try:
        _install_failing_hook(host, ["started"])
        with pytest.raises(libvirt.libvirtError, match="Hook script execution failed"):
            _start(host, name)
        assert name not in [d.name() for d in host.conn().listAllDomains()]

        _install_failing_hook(host, ["stopped", "release"])
        dom, u = _start(host, name)
        assert_applied(host, _tap(dom), GOLD, u)
        dom.save(path)                         # stopped/release fail: the save stands
        assert name not in [d.name() for d in host.conn().listAllDomains()]

        for op in ("restore", "started"):
            _install_failing_hook(host, [op])
            with pytest.raises(libvirt.libvirtError, match="Hook script execution failed"):
                host.conn().restore(path)
            assert name not in [d.name() for d in host.conn().listAllDomains()], op

        _reinstall_hook(host)
        host.conn().restore(path)              # the image is intact
        dom = host.conn().lookupByName(name)
        assert dom.isActive()
        assert_applied(host, _tap(dom), GOLD, u)
        _install_failing_hook(host, ["stopped", "release"])
        dom.destroy()                          # destroy succeeds anyway
        assert name not in [d.name() for d in host.conn().listAllDomains()]
    finally:
        _reinstall_hook(host)
        if os.path.exists(path):
            os.unlink(path)
        for d in host.conn().listAllDomains():
            if d.name() == name:
                d.destroy()
    # the rows of the last run are left: its stopped/release hooks "failed"
    for table in ("QoS", "Queue"):
        for r in host.rows(table):
            host.vsctl("--if-exists", "destroy", table, r["_uuid"])


def test_reload_rescans_the_hook_directory(host):
    """libvirtd decides at start-up whether the qemu driver has hooks
    (virHookInitialize); a hook installed later into a hook-less daemon is
    not run until a reload: SIGHUP (``systemctl reload``) makes
    remote_daemon.c's reload handler call the daemon hook's ``reload``, and
    virHookCall runs virHookInitialize again for it."""
    import signal
    import time
    dst = os.path.join(host.hook_dir, "50_qos_hooks")
    log = lambda: host.log("libvirtd.log")                          # noqa: E731
    scans = lambda: log().count("No hook script /etc/libvirt/hooks/daemon")  # noqa: E731

    def reload():
        before = scans()
        with open(os.path.join(host.dir, "libvirtd.pid")) as f:
            os.kill(int(f.read().strip()), signal.SIGHUP)
        _wait(lambda: scans() > before, "libvirtd to re-scan its hooks", timeout=30)
        time.sleep(0.5)                  # the reload thread finishes virStateReload

    def hook_ran(name):
        return bool(re.search(r"Calling hook \S+ id=%s op=started" % re.escape(name), log()))

    def run(name):
        dom, u = _start(host, name)
        try:
            return hook_ran(name), [r for r in host.rows("QoS")
                                    if r["external_ids"].get(OWNER_KEY) == u]
        finally:
            dom.destroy()
            for table in ("QoS", "Queue"):   # libvirt 9.0 leaks its own rows
                for r in host.rows(table):
                    host.vsctl("--if-exists", "destroy", table, r["_uuid"])

    try:
        os.unlink(dst)
        reload()                                       # now a daemon without qemu hooks
        assert run("qh4-e2e-nohook") == (False, [])
        _reinstall_hook(host)                          # installed, but not seen yet
        assert run("qh4-e2e-notyet") == (False, [])
        reload()
        ran, ours = run("qh4-e2e-reloaded")
        assert ran and len(ours) == 1
    finally:
        if not os.path.exists(dst):
            _reinstall_hook(host)
        reload()


def _getxml_iface(dom, bandwidth):
    """The vNIC as VDSM's Interface.getXML() builds it for updateDevice and
    hotunplugNic (oVirt vdsm lib/vdsm/virt/vmdevices/network.py getXML;
    lib/vdsm/virt/vm.py setLinkAndNetwork, hotunplugNic): MAC, model, source
    bridge, link, bandwidth, alias; no <virtualport>, no <target dev>."""
    xml = dom.XMLDesc(0)
    mac = re.search(r"<mac address='([^']+)'", xml).group(1)
    model = re.search(r"<model type='([^']+)'", xml).group(1)
    bridge = re.search(r"<source bridge='([^']+)'", xml).group(1)
    alias = re.search(r"<alias name='(net[^']*)'", xml).group(1)
    return ('<interface type="bridge">\n    <mac address="%s"/>\n    <model type="%s"/>\n'
            '    <source bridge="%s"/>\n    <link state="up"/>\n    <bandwidth>%s</bandwidth>\n'
            '    <alias name="%s"/>\n</interface>\n' % (mac, model, bridge, bandwidth, alias))


def test_vdsm_getxml_update_and_unplug_act_on_the_ovs_port(host, tmp_path):
    """VDSM as it really is (issue 10 item 1): updateDevice and hotunplugNic
    hand the hooks Interface.getXML() XML, with neither <virtualport> nor
    <target dev>.  after_update_device finds the port by attached-mac and
    vm-id and the new rate stands in OVSDB and in the kernel;
    after_nic_hotunplug then removes the vNIC's rows."""
    import libvirt
    from tests.vdsm_runner import run_hook_dir
    dom, u = _start(host, "qh4-e2e-getxml")
    try:
        dev = _tap(dom)
        assert_applied(host, dev, GOLD, u)
        new_iface = _getxml_iface(dom, "<inbound average='250' peak='500'/>"
                                       "<outbound average='125'/>")
        assert "virtualport" not in new_iface and "target" not in new_iface
        # VDSM: updateDeviceFlags(vnicStrXML), then after_update_device(vnicStrXML).
        # libvirt 9.0 refuses the getXML() document itself for this domain,
        # whose <interface> declares <virtualport type='openvswitch'/>
        # ("unable to change config on 'bridge' network type": the missing
        # virtualport reads as a change of it), so libvirt gets the live
        # <interface> with the same new <bandwidth>; the hook gets getXML()'s
        with pytest.raises(libvirt.libvirtError, match="unable to change config"):
            dom.updateDeviceFlags(new_iface, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        live_iface = re.search(r"<interface type='bridge'>.*?</interface>", dom.XMLDesc(0),
                               re.S).group(0)
        dom.updateDeviceFlags(re.sub(r"<bandwidth>.*?</bandwidth>", re.search(
            r"<bandwidth>.*?</bandwidth>", new_iface, re.S).group(0), live_iface, flags=re.S),
            libvirt.VIR_DOMAIN_AFFECT_LIVE)
        conf = tmp_path / "q.conf"
        conf.write_text("[settings]\novsdb = %s\novsdb_timeout = 5\n" % host.remote)
        env = dict(os.environ, QOS_HOOKS_CONFIG=str(conf), QOS_HOOKS_VIA_HELPER="1",
                   QOS_HOOKS_SUDO="0", QOS_HOOKS_HELPER=HELPER,
                   PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        res = run_hook_dir(os.path.join(REPO, "hooks", "after_update_device"), new_iface,
                           hook_point="after_update_device", vm_id=u, base_env=env)
        assert res.rcs == (0,), res.stderr
        assert "ERROR" not in res.stderr, res.stderr
        new = policy.Bandwidth(inbound=policy.Rate(average=250, peak=500),
                               outbound=policy.Rate(average=125))
        assert_applied(host, dev, new, u)          # OVSDB and tc, read back
        assert _tc_rates(dev)["1:1"] == (2000000, 2000000)
        assert _tc_rates(dev)["1:fffe"][1] == 4000000
        # hotunplugNic: libvirt removes the device and its OVS port
        # (qemuDomainRemoveNetDevice -> virNetDevOpenvswitchRemovePort); this
        # guest has no OS to acknowledge a PCI unplug, so the port removal is
        # done here, then VDSM runs after_nic_hotunplug with getXML() XML
        host.vsctl("del-port", dev)
        res = run_hook_dir(os.path.join(REPO, "hooks", "after_nic_hotunplug"),
                           _getxml_iface(dom, "<inbound average='250' peak='500'/>"),
                           hook_point="after_nic_hotunplug", vm_id=u, base_env=env)
        assert res.rcs == (0,), res.stderr
        assert "ERROR" not in res.stderr, res.stderr
        assert _rows_for(host, u) == [[], []]
    finally:
        dom.destroy()
    assert _rows_for(host, u) == [[], []]
