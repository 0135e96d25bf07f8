"""tests/vdsm_runner.py checked against VDSM's own code, one row per rule.

Every row names the VDSM function (oVirt vdsm master) the rule comes from;
the scripts are small shell probes, so the table checks the runner itself,
not qos-hooks.  tests/hooks/test_hooks_vdsm.py and tests/test_hostnet*.py run the
real hook executables through the same runner.
"""

import inspect
import json
import os
import stat

import pytest

from tests import vdsm_runner as vr
from tests.vdsm_runner import DOMXML, JSON, HookError, run_hook_dir


def hookdir(tmp_path, point, scripts):
    """``scripts``: {name: shell body or None (a non-executable file)}."""
    d = tmp_path / point
    d.mkdir()
    for name, body in scripts.items():
        p = d / name
        p.write_text("#!/bin/sh\n" + (body or "exit 0") + "\n")
        if body is not None:
            p.chmod(0o755)
    return str(d)


def names(res):
    return [os.path.basename(r.path) for r in res.runs]


# (row id, VDSM function, hook point, {script: body}, check(result or HookError))
ROWS = []


def row(rid, vdsm, point, scripts, **kw):
    def deco(check):
        ROWS.append(pytest.param(vdsm, point, scripts, kw, check, id=rid))
        return check
    return deco


@row("glob-sorted-executable-regular-files", "hooks.py _scriptsPerDir + _runHooksDir sort",
     "after_vm_start", {"50_b": "exit 0", "10_a": "exit 0", "2_c": "exit 0",
                        "60_not_executable": None, ".90_hidden": "exit 0"})
def _(res):
    # glob('*') skips dot files; os.access(X_OK) drops the plain file;
    # sorted by path, so "10_a" < "2_c" < "50_b"
    assert names(res) == ["10_a", "2_c", "50_b"]


@row("exit-1-error-next-scripts-run", "hooks.py _runHooksDir (rc != 0: errors.append)",
     "after_vm_start", {"10_fail": "echo one >&2; exit 1", "20_next": "echo two >&2"})
def _(res):
    assert res.rcs == (1, 0) and res.errors == [b"one\n"]


@row("exit-2-stops-the-loop", "hooks.py _runHooksDir (rc == 2: break)",
     "after_vm_start", {"10_stop": "exit 2", "20_never": "exit 0"})
def _(res):
    assert names(res) == ["10_stop"]


@row("exit-above-2-warning-and-go-on", "hooks.py _runHooksDir (rc > 2: logging.warning)",
     "after_vm_start", {"10_odd": "exit 3", "20_next": "exit 0"})
def _(res):
    assert res.rcs == (3, 0)
    assert ("WARNING", "hook returned unexpected return code 3") in res.log


@row("every-rc-logged-at-info", "hooks.py _runHooksDir (logging.info '%s: rc=%s err=%s')",
     "after_vm_start", {"10_ok": "exit 0", "20_fail": "echo bad >&2; exit 1"})
def _(res):
    levels = [lvl for lvl, line in res.log if "rc=" in line]
    assert levels == ["INFO", "INFO"]         # rc=1 looks like a success in vdsm.log
    assert res.log[1][1].endswith("20_fail: rc=1 err=b'bad\\n'")


@row("after-errors-ignored-data-read-back", "hooks.py after_vm_start (raiseError=False)",
     "after_vm_start", {"10_edit": 'printf "<x/>" > "$_hook_domxml"; exit 1'})
def _(res):
    assert res.rcs == (1,) and res.data == "<x/>"


@row("raise-reports-last-script-run", "hooks.py before_nic_hotplug -> _runHooksDir "
     "(raise HookError(err): err of the last script run)",
     "before_nic_hotplug", {"50_ours": "echo 'our message' >&2; exit 1",
                            "60_silent": "exit 0"})
def _(err):
    assert isinstance(err, HookError)
    assert err.value == (b"",)                     # not our message
    assert str(err) == "Hook Error: (b'',)"        # what the engine shows
    assert err.result.data is None                 # the file is never read back


@row("raise-exit-2-reports-ours", "hooks.py _runHooksDir (break, then HookError(err))",
     "before_nic_hotplug", {"50_ours": "echo 'our message' >&2; exit 2",
                            "60_silent": "exit 0"})
def _(err):
    assert isinstance(err, HookError)
    assert err.value == (b"our message\n",)
    assert names(err.result) == ["50_ours"]


@row("raise-network-setup-json", "hooks.py before_network_setup (_JSON_HOOK, raiseError)",
     "before_network_setup", {"50_ours": "echo net >&2; exit 1", "60_silent": "exit 0"})
def _(err):
    assert isinstance(err, HookError) and err.value == (b"",)


@row("vm-start-reports-last-failing-script", "hooks.py before_vm_start "
     "(raiseError=False, HookError(errors[-1]))",
     "before_vm_start", {"50_ours": "echo ours >&2; exit 1", "60_silent": "exit 0"})
def _(err):
    assert isinstance(err, HookError)
    assert err.value == (b"ours\n",)               # errors[-1], not the last run
    assert err.result.rcs == (1, 0)
    assert err.result.data == "<domain/>"          # final_callback(final_xml)


@row("vm-start-later-failure-wins", "hooks.py before_vm_start (errors[-1])",
     "before_vm_start", {"50_ours": "echo ours >&2; exit 1",
                         "60_other": "echo other >&2; exit 1"})
def _(err):
    assert err.value == (b"other\n",)


@row("vm-start-exit-2-keeps-ours", "hooks.py before_vm_start + _runHooksDir break",
     "before_vm_start", {"50_ours": "echo ours >&2; exit 2",
                         "60_other": "echo other >&2; exit 1"})
def _(err):
    assert err.value == (b"ours\n",) and names(err.result) == ["50_ours"]


@row("env-order-params-custom-vmid", "hooks.py _runHooksDir (params, then "
     "vmconf['custom'], then vmId)",
     "after_vm_start", {"10_env": 'echo "p=$prop v=$vmId only=$devonly" >&2'},
     params={"prop": "device", "devonly": "d"}, vm_custom={"prop": "vm"}, vm_id="u-1")
def _(res):
    assert res.runs[0].stderr == "p=vm v=u-1 only=d\n"


@row("env-daemon-pythonpath-lc-all", "init/daemonAdapter + _runHooksDir PYTHONPATH",
     "after_vm_start", {"10_env": 'echo "$PYTHONPATH|$LC_ALL" >&2'},
     base_env={"PATH": os.environ["PATH"], "PYTHONPATH": "/srv/x"})
def _(res):
    assert res.runs[0].stderr == "%s:/srv/x:%s|C.UTF8\n" % (vr.VDSM_LIBEXEC,
                                                           vr.VDSM_HOOK_PACKAGE_DIR)


@row("env-no-vmid-when-unset", "hooks.py _runHooksDir (if vmconf.get('vmId'))",
     "after_network_setup", {"10_env": 'echo "[${vmId-unset}]" >&2'}, kind=JSON,
     data={"request": {}})
def _(res):
    assert res.runs[0].stderr == "[unset]\n"


@row("taskset-all-cpus", "cmdutils.py wrap_command/taskset (cpu_affinity=auto)",
     "after_vm_start", {"10_cpu": "grep Cpus_allowed_list /proc/self/status >&2"})
def _(res):
    assert res.runs[0].argv[:3] == (vr.TASKSET, "--cpu-list", vr.any_cpu())
    assert res.runs[0].stderr.split()[-1] == vr.any_cpu()


@row("stdin-dev-null-cwd-root-stdout-dropped", "commands.py start (stdin/cwd not "
     "passed: vdsmd's, daemonAdapter -0 /dev/null, systemd cwd /)",
     "after_vm_start", {"10_io": 'readlink /proc/self/fd/0 >&2; pwd >&2; echo out'})
def _(res):
    assert res.runs[0].stderr == "/dev/null\n/\n"
    assert "out" not in res.stderr


@row("data-file-mkstemp-0600-reread-by-name", "hooks.py _runHooksDir (mkstemp, "
     "open(data_filename) after the scripts)",
     "after_vm_start", {"10_mode": 'stat -c %a "$_hook_domxml" >&2; '
                                  'rm "$_hook_domxml"; printf "<new/>" > "$_hook_domxml"'})
def _(res):
    assert res.runs[0].stderr == "600\n"
    assert res.data == "<new/>"               # a new file at the same name counts
    assert not os.path.exists(res.data_path)  # unlinked


@row("data-read-as-text-universal-newlines", "hooks.py _runHooksDir "
     "(open(..., encoding='utf-8').read())",
     "after_vm_start", {"10_crlf": 'printf "<a>\\r\\n</a>" > "$_hook_domxml"'})
def _(res):
    assert res.data == "<a>\n</a>"


@row("json-data", "hooks.py _runHooksDir (_JSON_HOOK: json.dumps / json.loads)",
     "after_network_setup", {"10_json": 'cat "$_hook_json" >&2; echo >&2; echo "$_hook_json" >&2'},
     kind=JSON, data={"request": {"networks": {"n": {"nic": "e0"}}}})
def _(res):
    text, path = res.runs[0].stderr.splitlines()
    assert text == json.dumps({"request": {"networks": {"n": {"nic": "e0"}}}})
    assert path == res.data_path
    assert res.data == {"request": {"networks": {"n": {"nic": "e0"}}}}


@row("no-data-writes-empty-file", "hooks.py _runHooksDir (data.encode() if data else b'')",
     "after_vm_start", {"10_size": 'stat -c %s "$_hook_domxml" >&2'}, data=None)
def _(res):
    assert res.runs[0].stderr == "0\n" and res.data == ""


@pytest.mark.parametrize("vdsm,point,scripts,kw,check", ROWS)
def test_runner_row(tmp_path, vdsm, point, scripts, kw, check):
    kw = dict(kw)
    kind = kw.pop("kind", DOMXML)
    data = kw.pop("data", "<domain/>")
    base_env = kw.pop("base_env", {"PATH": os.environ["PATH"]})
    d = hookdir(tmp_path, point, scripts)
    try:
        res = run_hook_dir(d, data, kind=kind, base_env=base_env, **kw)
    except HookError as e:
        check(e)
    else:
        check(res)


def test_symlinked_script_runs_directory_does_not(tmp_path):
    """_scriptsPerDir: os.path.isfile follows symlinks; a directory never runs."""
    d = hookdir(tmp_path, "after_vm_start", {})
    target = tmp_path / "real"
    target.write_text("#!/bin/sh\necho linked >&2\n")
    target.chmod(0o755)
    os.symlink(str(target), os.path.join(d, "10_link"))
    os.mkdir(os.path.join(d, "20_dir"))
    os.chmod(os.path.join(d, "20_dir"), 0o755)
    res = run_hook_dir(d, "<domain/>", base_env={"PATH": os.environ["PATH"]})
    assert names(res) == ["10_link"] and res.stderr == "linked\n"


def test_no_script_returns_the_data_untouched(tmp_path):
    """_runHooksDir: ``if not scripts: return data`` (no file, no parsing)."""
    d = hookdir(tmp_path, "before_network_setup", {"10_off": None})
    data = {"request": {"networks": {}}}
    res = run_hook_dir(d, data, kind=JSON)
    assert res.data is data and res.runs == [] and res.data_path is None


def test_runner_has_no_timeout():
    """VDSM waits for a hook as long as it runs (p.communicate() without a
    timeout): the runner offers none, so only the hook's own watchdog bounds
    it (tests/hooks/test_hooks_vdsm.py test_watchdog_is_the_only_bound)."""
    params = inspect.signature(run_hook_dir).parameters
    assert not any("timeout" in p for p in params)


def test_data_file_mode_is_private(tmp_path):
    d = hookdir(tmp_path, "after_vm_start",
                {"10_mode": 'stat -c %a "$_hook_domxml" >&2'})
    res = run_hook_dir(d, "<domain/>", base_env={"PATH": os.environ["PATH"]})
    assert int(res.stderr, 8) == stat.S_IRUSR | stat.S_IWUSR


# -- the XML VDSM and the engine hand over ------------------------------------------

ENGINE_DOMAIN = """<?xml version="1.0" encoding="UTF-8"?><domain type="kvm" \
xmlns:ovirt-tune="http://ovirt.org/vm/tune/1.0" xmlns:ovirt-vm="http://ovirt.org/vm/1.0">\
<name>vm1</name><uuid>6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e</uuid><on_reboot>destroy</on_reboot>\
<devices><interface type="bridge"><mac address="52:54:00:00:00:01"/><source bridge="ovirtmgmt"/>\
<alias name="ua-nic1"/><bandwidth/></interface><disk type="file" device="disk"/>\
<controller type="usb"/></devices><metadata><ovirt-tune:qos/><ovirt-vm:vm>\
<ovirt-vm:device mac_address="52:54:00:00:00:01" alias="ua-nic1"><ovirt-vm:custom>\
<ovirt-vm:qos_profile>gold</ovirt-vm:qos_profile></ovirt-vm:custom></ovirt-vm:device>\
</ovirt-vm:vm></metadata></domain>"""


def test_build_domain_xml_shapes_like_vdsm():
    """vm.py _buildDomainXML: <on_reboot> removed; a device with custom
    properties goes to the end of <devices> (domxml_preprocess.py
    replace_device_xml_with_hooks_xml); xmlutils.tostring(pretty=True)."""
    x = vr.build_domain_xml(ENGINE_DOMAIN)
    assert x.startswith("<?xml version='1.0' encoding='utf-8'?>\n<domain ")
    assert "on_reboot" not in x
    devs = x[x.index("<devices>"):x.index("</devices>")]
    assert devs.index("<disk") < devs.index("<controller") < devs.index("<interface")
    assert "\n        <interface type=\"bridge\">\n            <mac " in x   # 4-space indent
    assert "xmlns:ovirt-vm=" in x.split("\n")[1]      # declarations hoisted to <domain>


def test_hotplug_xml_shapes_like_engine_and_vdsm():
    """ovirt-engine LibvirtVmXmlBuilder.buildHotplugNic -> vm.py hotplugNic:
    the hook gets the <interface> alone (xmlutils.tostring, not indented)
    and the device's custom properties as params."""
    eng = vr.engine_hotplug_xml("<interface type='bridge'>\n  <mac address='52:54:00:00:00:02'/>"
                                "\n  <alias name='ua-nic2'/>\n  <bandwidth/>\n</interface>",
                                {"qos_profile": "gold"})
    assert eng.startswith('<?xml version="1.0" encoding="UTF-8"?><hotplug><devices>'
                          '<interface type="bridge"><mac ')
    assert ('<ovirt-vm:device alias="ua-nic2" mac_address="52:54:00:00:00:02">'
            '<ovirt-vm:custom><ovirt-vm:qos_profile>gold</ovirt-vm:qos_profile>') in eng
    nic, params = vr.hotplug_nic_xml(eng)
    assert nic.startswith("<?xml version='1.0' encoding='utf-8'?>\n<interface type=\"bridge\">"
                          "<mac address=\"52:54:00:00:00:02\" />")
    assert params == {"qos_profile": "gold"}


def test_interface_getxml_has_no_virtualport_and_no_target():
    """vmdevices/network.py Interface.getXML: what update/unplug hooks get."""
    x = vr.interface_getxml("52:54:00:00:00:03", "ovirtmgmt", alias="ua-3",
                            bandwidth={"inbound": {"average": 1000, "peak": 2000}})
    assert x.startswith("<?xml version='1.0' encoding='utf-8'?>\n<interface type=\"bridge\">\n"
                        "    <mac address=\"52:54:00:00:00:03\" />")
    assert '<inbound average="1000" peak="2000" />' in x
    assert "virtualport" not in x and "<target" not in x
    assert x.index("<bandwidth>") < x.index("<alias")
