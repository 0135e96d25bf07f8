"""Run a VDSM hook directory exactly the way VDSM does.

Facts from oVirt vdsm's source (master), reproduced here, not copied; each
rule is checked row by row in tests/hooks/test_vdsm_runner.py:

lib/vdsm/common/hooks.py ``_scriptsPerDir``
    the scripts are ``glob(<dir>/*)`` (so names starting with a dot never
    run), kept when ``os.path.isfile`` (a symlink to a regular file counts)
    and ``os.access(X_OK)``; ``_runHooksDir`` sorts them by path.
lib/vdsm/common/hooks.py ``_runHooksDir``
    * no script: the data is returned as given, no temporary file;
    * the data goes to a ``tempfile.mkstemp()`` file (0600, in $TMPDIR):
      domain XML as UTF-8 (``b''`` for no data), JSON as ``json.dumps``;
      its path is in ``$_hook_domxml`` or ``$_hook_json``;
    * environment: a copy of the daemon's environment, updated with the
      device ``params``, then ``vmconf['custom']`` (so a VM property wins
      over a device property of the same name), then ``vmId`` when set;
      ``PYTHONPATH`` = the daemon's value split on ``:`` plus the directory
      of the ``vdsm.hook`` package, joined with ``:`` (an unset PYTHONPATH
      gives a leading empty entry);
    * each script: ``commands.start([script], stdout=PIPE, stderr=PIPE,
      env=...)``; no stdin and no cwd are passed, so both come from the
      daemon (``/dev/null`` and ``/``); ``communicate()`` with NO timeout;
    * ``rc != 0`` appends that script's stderr to ``errors``; ``rc == 2``
      stops the loop; ``rc > 2`` logs a warning and goes on; every rc is
      logged at INFO (``'%s: rc=%s err=%s'``), 1 exactly like 0;
    * ``if errors and raiseError: raise HookError(err)``: ``err`` is the
      stderr of the LAST SCRIPT RUN, not of the one that failed; the data
      file is then never read back;
    * otherwise the file is re-read BY NAME as text (UTF-8, universal
      newlines: ``\\r\\n`` becomes ``\\n``), JSON parsed with ``json.loads``,
      and unlinked.
lib/vdsm/common/hooks.py ``before_vm_start``
    ``raiseError=False`` with an ``errors`` list, ``final_callback(final_xml)``
    (vm.py ``_run``: ``_updateDomainDescriptor``), then
    ``HookError(errors[-1])``: the stderr of the last script that FAILED.
lib/vdsm/common/hooks.py wrappers
    ``raiseError`` per hook point (``RAISE_ERROR`` below); ``after_*`` errors
    are only logged.
lib/vdsm/common/cmdutils.py ``wrap_command``/``taskset``
    with ``[vars] cpu_affinity`` non-empty (default ``auto``) every command
    runs as ``taskset --cpu-list 0-N CMD``, N = SC_NPROCESSORS_CONF - 1.
lib/vdsm/common/exception.py ``HookError(GeneralException)``
    ``str()`` is ``"Hook Error: " + repr(args)``: ``Hook Error: (b'...',)``.
init/daemonAdapter (how vdsmd and supervdsmd are started)
    the daemon's environment has ``LC_ALL=C.UTF8`` and ``PYTHONPATH`` =
    ``/usr/libexec/vdsm`` (the daemon's directory, which holds VDSM's
    ``sitecustomize.py``) followed by the PYTHONPATH it was started with;
    vdsmd's stdin is ``/dev/null`` (``-0 /dev/null``).

Test-only additions: ``argv_prefix`` (e.g. ``ip netns exec NS``) runs the
scripts in the sandbox switch's namespace; ``owner`` chowns the data file to
the user the scripts run as (VDSM's belongs to vdsm).
"""

import json
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

DOMXML = "domxml"
JSON = "json"

#: where the ``vdsm.hook`` package lives on an EL9 host (its directory is
#: appended to PYTHONPATH; it need not exist here)
VDSM_HOOK_PACKAGE_DIR = "/usr/lib/python3.9/site-packages/vdsm/hook"
#: vdsmd's own directory: daemonAdapter puts it first on PYTHONPATH
VDSM_LIBEXEC = "/usr/libexec/vdsm"
TASKSET = "/usr/bin/taskset"

# hook point -> how VDSM treats a failure (lib/vdsm/common/hooks.py wrappers)
RAISE = "raise"            # raiseError=True: HookError(stderr of the last script run)
IGNORE = "ignore"          # raiseError=False: logged only
VM_START = "vm_start"      # before_vm_start: errors collected, HookError(errors[-1])
RAISE_ERROR = {
    "before_vm_start": VM_START,
    "after_vm_start": IGNORE,
    "after_vm_migrate_destination": IGNORE,
    "before_vm_migrate_destination": RAISE,
    "before_nic_hotplug": RAISE,
    "after_nic_hotplug": IGNORE,
    "after_nic_hotplug_fail": IGNORE,
    "before_nic_hotunplug": RAISE,
    "after_nic_hotunplug": IGNORE,
    "after_nic_hotunplug_fail": IGNORE,
    "before_update_device": RAISE,
    "after_update_device": IGNORE,
    "after_update_device_fail": IGNORE,
    "before_device_create": RAISE,
    "after_device_create": IGNORE,
    "before_vm_destroy": IGNORE,
    "after_vm_destroy": IGNORE,
    "before_vm_set_ticket": IGNORE,
    "before_network_setup": RAISE,
    "after_network_setup": IGNORE,
    "after_network_setup_fail": IGNORE,
}


class HookError(Exception):
    """vdsm.common.exception.HookError: ``value`` is the args tuple."""

    message = "Hook Error"

    def __init__(self, err, result):
        super().__init__(err)
        self.value = (err,)
        self.result = result

    def __str__(self):
        return "%s: %s" % (self.message, repr(self.value))


@dataclass
class ScriptRun:
    path: str
    rc: int
    stderr: str
    argv: Tuple[str, ...] = ()


@dataclass
class HookResult:
    data: object                       # domain XML text, or the JSON object
    runs: List[ScriptRun] = field(default_factory=list)
    errors: List[bytes] = field(default_factory=list)   # VDSM's ``errors`` list
    log: List[Tuple[str, str]] = field(default_factory=list)   # (level, line) VDSM logs
    data_path: Optional[str] = None

    @property
    def error_seen(self):
        return bool(self.errors)

    @property
    def stderr(self):
        return "".join(r.stderr for r in self.runs)

    @property
    def rcs(self) -> Tuple[int, ...]:
        return tuple(r.rc for r in self.runs)


def scripts_in(directory):
    """``_scriptsPerDir`` + the sort in ``_runHooksDir``."""
    import glob
    return sorted(s for s in glob.glob(os.path.join(directory, "*"))
                  if os.path.isfile(s) and os.access(s, os.X_OK))


def daemon_env(base=None, libexec=VDSM_LIBEXEC):
    """The environment vdsmd/supervdsmd run with (init/daemonAdapter)."""
    env = dict(os.environ if base is None else base)
    pythonpath = libexec
    if "PYTHONPATH" in env:
        pythonpath += ":" + env["PYTHONPATH"]
    env.update({"LIBVIRT_DEBUG": "", "LIBVIRT_LOG_FILTERS": "", "LIBVIRT_LOG_OUTPUTS": "",
                "LC_ALL": "C.UTF8", "PYTHONPATH": pythonpath})
    return env


def any_cpu():
    return "0-%d" % (os.sysconf("SC_NPROCESSORS_CONF") - 1)


def run_hook_dir(directory, data, *, hook_point=None, vm_id=None, vm_custom=None,
                 params=None, kind=DOMXML, base_env=None, raise_error=None,
                 argv_prefix=(), owner=None, daemon=True, cpu_affinity=True,
                 hook_package_dir=VDSM_HOOK_PACKAGE_DIR, daemon_cwd="/"):
    """Run every hook script in ``directory`` as ``_runHooksDir`` does.

    ``hook_point`` defaults to the directory's name and decides the failure
    semantics (``RAISE_ERROR``); ``raise_error`` (True/False) overrides them
    with a plain raiseError.  ``base_env`` is the environment the daemon was
    started with; ``daemon=True`` turns it into the daemon's own
    (``daemon_env``).  Returns a HookResult; raises HookError where VDSM does.
    There is no timeout, as in VDSM: a hook that never ends never returns.
    """
    hook_point = hook_point or os.path.basename(os.path.normpath(directory))
    if raise_error is None:
        mode = RAISE_ERROR.get(hook_point, RAISE if hook_point.startswith("before_")
                               else IGNORE)
    else:
        mode = RAISE if raise_error else IGNORE
    scripts = scripts_in(directory)
    if not scripts:
        return HookResult(data=data)
    fd, path = tempfile.mkstemp()
    result = HookResult(data=None, data_path=path)
    try:
        if kind == JSON:
            os.write(fd, json.dumps(data).encode("utf-8"))
        else:
            os.write(fd, (data.encode("utf-8") if isinstance(data, str) else data)
                     if data else b"")
        os.close(fd)
        if owner is not None:
            os.chown(path, owner[0], owner[1])
        env = daemon_env(base_env) if daemon else dict(os.environ if base_env is None
                                                       else base_env)
        for k, v in list((params or {}).items()) + list((vm_custom or {}).items()):
            env[k] = v
        if vm_id:
            env["vmId"] = vm_id
        ppath = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = ":".join(ppath.split(":") + [hook_package_dir])
        env["_hook_json" if kind == JSON else "_hook_domxml"] = path
        err = b""
        for s in scripts:
            argv = [s]
            if cpu_affinity:
                argv = [TASKSET, "--cpu-list", any_cpu()] + argv
            argv = list(argv_prefix) + argv
            p = subprocess.Popen(argv, cwd=daemon_cwd, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, err = p.communicate()
            rc = p.returncode
            result.runs.append(ScriptRun(s, rc, err.decode("utf-8", "replace"), tuple(argv)))
            result.log.append(("INFO", "%s: rc=%s err=%s" % (s, rc, err)))
            if rc != 0:
                result.errors.append(err)
            if rc == 2:
                break
            elif rc > 2:
                result.log.append(("WARNING", "hook returned unexpected return code %s" % rc))
        if result.errors and mode == RAISE:
            raise HookError(err, result)
        with open(path, encoding="utf-8") as f:
            final = f.read()
        result.data = json.loads(final) if kind == JSON else final
        if result.errors and mode == VM_START:
            raise HookError(result.errors[-1], result)
        return result
    finally:
        os.unlink(path)


# -- the XML VDSM and the engine hand to the hooks -----------------------------------

OVIRT_VM_NS = "http://ovirt.org/vm/1.0"
OVIRT_TUNE_NS = "http://ovirt.org/vm/tune/1.0"


def _register_namespaces():
    # vdsm registers its prefixes with ElementTree (lib/vdsm/virt/metadata.py
    # Descriptor.__init__, vmxml.py Element.__init__)
    ET.register_namespace("ovirt-vm", OVIRT_VM_NS)
    ET.register_namespace("ovirt-tune", OVIRT_TUNE_NS)


def _et_tostring(elem, pretty=False):
    """lib/vdsm/common/xmlutils.py ``tostring``: ElementTree, XML declaration,
    optional 4-space re-indentation (``indent``)."""
    import copy
    import io
    if pretty:
        elem = copy.deepcopy(elem)
        _indent(elem, 0)
    stream = io.BytesIO()
    ET.ElementTree(elem).write(stream, encoding="utf-8", xml_declaration=True)
    return stream.getvalue().decode("utf-8")


def _indent(elem, level=0, s="    "):
    # the effbot recipe vdsm uses (xmlutils.indent); same output
    i = "\n" + level * s
    if len(elem):
        if not elem.text or not elem.text.strip():
            elem.text = i + s
        if not elem.tail or not elem.tail.strip():
            elem.tail = i
        child = None
        for child in elem:
            _indent(child, level + 1, s)
        if not child.tail or not child.tail.strip():
            child.tail = i
    else:
        if level and (not elem.tail or not elem.tail.strip()):
            elem.tail = i


def _device_has_custom(dev, md_devices):
    """lib/vdsm/virt/vmdevices/common.py ``dev_meta_from_elem``: a device's
    metadata is found by alias, or by MAC for an interface; the device is
    moved only when that metadata has a ``custom`` element."""
    alias = dev.find("alias")
    mac = dev.find("mac")
    for md in md_devices:
        if alias is not None and md.get("alias") == alias.get("name"):
            return md.find("{%s}custom" % OVIRT_VM_NS) is not None
        if dev.tag == "interface" and mac is not None and \
                md.get("mac_address") == mac.get("address"):
            return md.find("{%s}custom" % OVIRT_VM_NS) is not None
    return False


def build_domain_xml(engine_xml):
    """The XML ``before_vm_start`` gets, shaped like vm.py ``_buildDomainXML``:
    ``<on_reboot>`` removed; every non-disk device with custom properties in
    its ``<ovirt-vm:device>`` metadata taken out of ``<devices>`` and appended
    at its end (domxml_preprocess.py ``replace_device_xml_with_hooks_xml``,
    after a ``before_device_create`` that changes nothing); serialised by
    ElementTree with the XML declaration, re-indented with 4 spaces, the
    namespace declarations hoisted to ``<domain>``."""
    _register_namespaces()
    dom = ET.fromstring(engine_xml.encode("utf-8") if isinstance(engine_xml, str)
                        else engine_xml)
    on_reboot = dom.find("on_reboot")
    if on_reboot is not None:
        dom.remove(on_reboot)
    devs = dom.find("devices")
    md_devices = dom.findall("metadata/{%s}vm/{%s}device" % (OVIRT_VM_NS, OVIRT_VM_NS))
    moved = [d for d in list(devs) if d.tag != "disk" and _device_has_custom(d, md_devices)]
    for d in moved:
        devs.remove(d)
        # before_device_create's output re-parsed: vdsm serialises the device
        # pretty (tostring(dev_elem, pretty=True)) and re-reads it
        devs.append(ET.fromstring(_et_tostring(d, pretty=True).encode("utf-8")))
    return _et_tostring(dom, pretty=True)


def engine_hotplug_xml(interface_xml, device_custom=None, alias=None, mac=None):
    """The ``params['xml']`` of ``hotplugNic`` as the engine writes it
    (ovirt-engine LibvirtVmXmlBuilder ``buildHotplugNic``): one line,
    ``<hotplug><devices><interface/></devices><metadata><ovirt-vm:vm>
    <ovirt-vm:device alias mac_address><ovirt-vm:custom>...``."""
    iface = ET.fromstring(interface_xml)
    for el in iface.iter():          # the engine's XMLStreamWriter never indents
        if el.text is not None and not el.text.strip():
            el.text = None
        el.tail = None
    if mac is None and iface.find("mac") is not None:
        mac = iface.find("mac").get("address")
    if alias is None and iface.find("alias") is not None:
        alias = iface.find("alias").get("name")
    custom = "".join("<ovirt-vm:%s>%s</ovirt-vm:%s>" % (k, v, k)
                     for k, v in sorted((device_custom or {}).items()))
    dev_attrs = ""
    if alias:
        dev_attrs += ' alias="%s"' % alias
    if mac:
        dev_attrs += ' mac_address="%s"' % mac
    return ('<?xml version="1.0" encoding="UTF-8"?><hotplug><devices>%s</devices>'
            '<metadata xmlns:ovirt-vm="%s"><ovirt-vm:vm><ovirt-vm:device%s>'
            '<ovirt-vm:custom>%s</ovirt-vm:custom></ovirt-vm:device></ovirt-vm:vm>'
            '</metadata></hotplug>' % (ET.tostring(iface, encoding="unicode"), OVIRT_VM_NS,
                                       dev_attrs, custom))


def hotplug_nic_xml(engine_xml):
    """What ``before_nic_hotplug`` gets from vm.py ``hotplugNic``: the first
    child of ``<hotplug><devices>``, serialised alone by xmlutils.tostring
    (declaration, not re-indented) -- and the device's custom properties,
    which VDSM passes as ``params`` (the environment)."""
    _register_namespaces()
    dom = ET.fromstring(engine_xml.encode("utf-8") if isinstance(engine_xml, str)
                        else engine_xml)
    nic = next(iter(dom.find("devices")))
    custom = {}
    for md in dom.findall("metadata/{%s}vm/{%s}device" % (OVIRT_VM_NS, OVIRT_VM_NS)):
        c = md.find("{%s}custom" % OVIRT_VM_NS)
        if c is not None:
            custom.update({ch.tag.split("}")[-1]: ch.text or "" for ch in c})
    return _et_tostring(nic), custom


def interface_getxml(mac, bridge, *, bandwidth=None, alias=None, model="virtio", mtu=None,
                     link="up"):
    """The vNIC XML VDSM hands to before/after_update_device and
    after_nic_hotunplug: lib/vdsm/virt/vmdevices/network.py
    ``Interface.getXML`` (mac, model, source bridge, mtu, link, bandwidth
    from specParams, alias; NO <virtualport>, NO <target dev>), serialised
    by xmlutils.tostring(pretty=True) (vm.py setLinkAndNetwork /
    hotunplugNic).  ``bandwidth``: {"inbound": {"average": ...}, ...}."""
    iface = ET.Element("interface", type="bridge")
    ET.SubElement(iface, "mac", address=mac)
    if model:
        ET.SubElement(iface, "model", type=model)
    ET.SubElement(iface, "source", bridge=bridge)
    if mtu is not None:
        ET.SubElement(iface, "mtu", size=str(mtu))
    if link is not None:
        ET.SubElement(iface, "link", state=link)
    if bandwidth and ("inbound" in bandwidth or "outbound" in bandwidth):
        bw = ET.SubElement(iface, "bandwidth")
        for key in ("inbound", "outbound"):
            if bandwidth.get(key):
                ET.SubElement(bw, key, **{k: str(v) for k, v in bandwidth[key].items()})
    if alias:
        ET.SubElement(iface, "alias", name=alias)
    return _et_tostring(iface, pretty=True)
