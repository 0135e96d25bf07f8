"""Shared by tests/project/test_rpm.py and tests/cli/test_install.py.

Both prove the same thing for two ways of putting qos-hooks on a host: the
files, modes and sudoers drop-in of ``qos_hooks.cli.install.layout()`` land where
VDSM, libvirt and sudo look for them, and the installed hooks run from there
the way VDSM and libvirt run them.  The expected file list is derived from the
source tree (``hooks/*/50_qos_hooks``), so it grows as hook points land.
"""

import os
import shutil
import subprocess
import sys

import pytest

from qos_hooks.cli import install as inst

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_XML = os.path.join(REPO, "examples", "ovirt-guest.xml")
SYSTEM_PYTHON = "/usr/bin/python3"
VM_ID = "6b4c3b4e-6a2d-4f0e-9c55-2c1f5d0e9a11"


def missing(what):
    """A tool the test needs is absent: fail in CI, skip elsewhere, naming it."""
    msg = "%s is not installed (tests/install-deps.sh installs it)" % what
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def need_tools(*tools):
    for t in tools:
        if shutil.which(t) is None:
            missing(t)


def layout():
    return inst.layout(REPO)


def expected_modes(components):
    """{host path: mode} that install/RPM put there for ``components``.

    The VDSM hook-point directories themselves belong to vdsm: the RPM does
    not own them, install creates them only if missing.
    """
    return {i.target: i.mode for i in layout()
            if i.component in components and not (i.kind == inst.DIR and i.component == inst.VDSM)}


def under(root, path):
    return os.path.join(root, path.lstrip("/"))


def first_line(path):
    with open(path, "rb") as f:
        return f.readline().rstrip(b"\n").decode()


def system_python_has_lxml():
    return os.access(SYSTEM_PYTHON, os.X_OK) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import lxml.etree"], capture_output=True).returncode == 0


def base_env(**extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "QOS_HOOKS_LOG_LEVEL": "INFO"}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def dry_run_xml(config, xml_path=EXAMPLE_XML):
    """What ``qos-hooks dry-run --output xml`` of this checkout makes of ``xml_path``."""
    r = subprocess.run([sys.executable, "-m", "qos_hooks", "dry-run", "--output", "xml",
                        "--config", config, xml_path], cwd=REPO, capture_output=True,
                       env=base_env(PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def canonical(xml_bytes):
    from lxml import etree
    parser = etree.XMLParser(remove_blank_text=True)
    return etree.tostring(etree.fromstring(xml_bytes, parser), method="c14n")


def run_vdsm_hook(hook, tmpdir, config, pythonpath, interpreter=None, xml_path=EXAMPLE_XML):
    """Run one VDSM domain-XML hook the way VDSM does.

    VDSM copies the domain XML to a temporary file, exports its path as
    ``$_hook_domxml`` plus ``vmId`` and the custom properties, executes the hook
    (no arguments) and reads the file back (FIELD_NOTES section 3).
    """
    domxml = os.path.join(str(tmpdir), "domxml-%s" % os.path.basename(os.path.dirname(hook)))
    shutil.copyfile(xml_path, domxml)
    argv = [interpreter, hook] if interpreter else [hook]
    r = subprocess.run(argv, capture_output=True, timeout=60, cwd="/",
                       env=base_env(_hook_domxml=domxml, vmId=VM_ID,
                                    QOS_HOOKS_CONFIG=config, PYTHONPATH=pythonpath))
    with open(domxml, "rb") as f:
        return r, f.read()


def run_qemu_hook(hook, args, stdin, config, pythonpath, interpreter=None):
    """Run the qemu.d hook the way libvirtd does: arguments, domain XML on stdin."""
    argv = ([interpreter, hook] if interpreter else [hook]) + list(args)
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60, cwd="/",
                          env=base_env(QOS_HOOKS_CONFIG=config, PYTHONPATH=pythonpath))


def imports_of(path):
    """``from qos_hooks.X import Y`` names a hook executable needs."""
    import ast
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qos_hooks"):
            out.append((node.module, [a.name for a in node.names]))
    return out


def check_hook_imports(hooks, pythonpath, interpreter):
    """Every installed hook's qos_hooks imports resolve against the installed library."""
    lines = ["import importlib, sys"]
    for hook in hooks:
        for module, names in imports_of(hook):
            for name in names:
                lines.append("getattr(importlib.import_module(%r), %r)" % (module, name))
    r = subprocess.run([interpreter, "-c", "\n".join(lines)], capture_output=True, cwd="/",
                       env=base_env(PYTHONPATH=pythonpath))
    assert r.returncode == 0, r.stderr.decode()


def imported_from(pythonpath, interpreter):
    r = subprocess.run([interpreter, "-c", "import qos_hooks; print(qos_hooks.__file__)"],
                       capture_output=True, cwd="/", env=base_env(PYTHONPATH=pythonpath))
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


NETWORK_REQUEST = (b'{"request": {"networks": {"ovirtmgmt": {"nic": "eth0", "bridged": true}}, '
                   b'"bondings": {}, "options": {}}}')


def run_network_hook(hook, tmpdir, config, pythonpath, interpreter=None):
    """Run a VDSM network hook as supervdsmd does: ``$_hook_json`` names the request file.

    The request carries no QoS and no qos_profile: the hook must exit 0 and leave
    it byte for byte as it was.
    """
    path = os.path.join(str(tmpdir), "hook-%s.json" % os.path.basename(os.path.dirname(hook)))
    with open(path, "wb") as f:
        f.write(NETWORK_REQUEST)
    argv = [interpreter, hook] if interpreter else [hook]
    r = subprocess.run(argv, capture_output=True, timeout=60, cwd="/",
                       env=base_env(_hook_json=path, QOS_HOOKS_CONFIG=config,
                                    PYTHONPATH=pythonpath))
    with open(path, "rb") as f:
        return r, f.read()
