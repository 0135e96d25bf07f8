"""``qos-hooks install`` / ``uninstall`` (issue 6): the RPMs' files for pip hosts.

Staged with ``--root`` into empty directories: the same paths and modes as the
RPMs (both derive from ``qos_hooks.cli.install.layout()``; tests/project/test_rpm.py checks
the RPM side), the running interpreter in every shebang, the hooks run from
there as VDSM and libvirt run them, idempotence, an uninstall that removes
exactly what install recorded, keeps a modified config, and never touches
/etc/libvirt/hooks/qemu.  Last, the same from a wheel installed in a venv.
"""

import os
import subprocess
import sys

import pytest

from qos_hooks.cli import install as inst
from qos_hooks.core.errors import UsageError
from tests import packaging_helpers as ph

ALL = [inst.COMMON, inst.VDSM, inst.LIBVIRT]


def qos_hooks(*args, python=None, check=True):
    argv = [python, "-m", "qos_hooks"] if python else [sys.executable, "-m", "qos_hooks"]
    r = subprocess.run(argv + list(args), capture_output=True, text=True, cwd="/",
                       env=ph.base_env(PYTHONPATH=None if python else ph.REPO))
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def tree(root):
    """{relative path: (mode, file mtime, file content)} of everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = None
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    data = f.read()
            # directory mtimes move whenever an entry comes or goes: files only
            out[os.path.relpath(p, root)] = (st.st_mode, None if data is None else st.st_mtime_ns,
                                             data)
    return out


def check_installed(root, components, interpreter):
    expected = ph.expected_modes(components)
    for path, mode in expected.items():
        st = os.lstat(ph.under(root, path))
        assert oct(st.st_mode & 0o7777) == oct(mode), path
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (0, 0), path
    for item in ph.layout():
        if item.component in components and item.kind == inst.EXEC:
            assert ph.first_line(ph.under(root, item.target)) == "#!" + interpreter
    # nothing else but the hook-point directories, parents and the manifest
    files = {"/" + p for p, (mode, _, data) in tree(root).items() if data is not None}
    assert files == {p for p in expected if os.path.isfile(ph.under(root, p))} | {inst.MANIFEST}
    for d in [ph.under(root, inst.VDSM_HOOKS_DIR + "/" + p) for p in inst.hook_points(ph.REPO)]:
        if inst.VDSM in components:
            assert os.listdir(d) == [inst.HOOK_NAME]
    assert not os.path.lexists(ph.under(root, inst.LIBVIRT_QEMU_HOOK))


def test_install_vdsm_and_libvirt(tmp_path):
    root = str(tmp_path)
    qos_hooks("install", "--vdsm", "--libvirt", "--root", root)
    check_installed(root, ALL, sys.executable)
    before = tree(root)
    r = qos_hooks("install", "--vdsm", "--libvirt", "--root", root)
    assert all(line.startswith("unchanged") for line in r.stdout.splitlines()), r.stdout
    assert tree(root) == before        # idempotent: not even an mtime changes
    qos_hooks("uninstall", "--root", root)
    assert os.listdir(root) == []      # exactly what install put there, directories too


def test_hooks_run_from_install_root(tmp_path):
    root = str(tmp_path / "root")
    os.mkdir(root)
    qos_hooks("install", "--vdsm", "--libvirt", "--root", root)
    config = ph.under(root, inst.CONFIG)
    hook = ph.under(root, inst.VDSM_HOOKS_DIR + "/before_vm_start/" + inst.HOOK_NAME)
    r, out = ph.run_vdsm_hook(hook, tmp_path, config, ph.REPO)   # executed directly
    assert r.returncode == 0, r.stderr.decode()
    assert ph.canonical(out) == ph.canonical(ph.dry_run_xml(config))
    with open(ph.EXAMPLE_XML, "rb") as f:
        xml = f.read()
    qemu = ph.under(root, inst.LIBVIRT_QEMU_D + "/" + inst.HOOK_NAME)
    r = ph.run_qemu_hook(qemu, ["guest", "migrate", "begin", "-"], xml, config, ph.REPO)
    assert r.returncode == 0, r.stderr.decode()
    assert ph.canonical(r.stdout) == ph.canonical(ph.dry_run_xml(config))
    hooks = [ph.under(root, i.target) for i in ph.layout() if i.kind == inst.EXEC]
    ph.check_hook_imports(hooks, ph.REPO, sys.executable)
    if "before_network_setup" in inst.hook_points(ph.REPO):
        net = ph.under(root, inst.VDSM_HOOKS_DIR + "/before_network_setup/" + inst.HOOK_NAME)
        r, out = ph.run_network_hook(net, tmp_path, config, ph.REPO)
        assert r.returncode == 0 and out == ph.NETWORK_REQUEST, r.stderr.decode()


def test_components_and_shared_files(tmp_path):
    root = str(tmp_path)
    qos_hooks("install", "--vdsm", "--root", root)
    check_installed(root, [inst.COMMON, inst.VDSM], sys.executable)
    assert not os.path.exists(ph.under(root, inst.LIBVIRT_QEMU_D))
    qos_hooks("install", "--libvirt", "--root", root)
    check_installed(root, ALL, sys.executable)
    # removing one component keeps the helper and config the other still needs
    qos_hooks("uninstall", "--vdsm", "--root", root)
    assert not os.path.exists(ph.under(root, inst.SUDOERS))
    assert not os.path.exists(ph.under(root, inst.VDSM_HOOKS_DIR))
    assert os.path.exists(ph.under(root, inst.HELPER))
    assert os.path.exists(ph.under(root, inst.CONFIG))
    qos_hooks("uninstall", "--libvirt", "--root", root)
    assert os.listdir(root) == []
    r = qos_hooks("uninstall", "--root", root)         # nothing left: still fine
    assert "nothing to remove" in r.stdout


def test_existing_host_files_are_respected(tmp_path):
    root = str(tmp_path)
    # what VDSM and the operator already have
    vdsm_qemu = ph.under(root, inst.LIBVIRT_QEMU_HOOK)
    other_hook = ph.under(root, inst.VDSM_HOOKS_DIR + "/before_vm_start/50_other")
    for path, data in ((vdsm_qemu, b"#!/bin/sh\n# VDSM's\n"), (other_hook, b"#!/bin/sh\n")):
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o755)
    config = ph.under(root, inst.CONFIG)
    os.makedirs(os.path.dirname(config))
    with open(config, "w") as f:
        f.write("[settings]\n# the operator's own\n")
    before = tree(root)
    r = qos_hooks("install", "--vdsm", "--libvirt", "--root", root)
    assert "kept" in r.stdout and inst.CONFIG in r.stdout
    after = tree(root)
    for rel in before:
        if os.path.isfile(os.path.join(root, rel)):
            assert after[rel] == before[rel], rel      # untouched, mtime included
    qos_hooks("uninstall", "--root", root)
    assert tree(root) == before


def test_modified_config_survives_uninstall(tmp_path):
    root = str(tmp_path)
    qos_hooks("install", "--libvirt", "--root", root)
    config = ph.under(root, inst.CONFIG)
    with open(config, "a") as f:
        f.write("\n[profile mine]\ninbound.average = 1Mbit\n")
    r = qos_hooks("uninstall", "--root", root)
    assert "modified since install" in r.stdout
    assert os.path.isfile(config)
    assert set(tree(root)) == {"etc", "etc/qos-hooks", "etc/qos-hooks/qos-hooks.conf"}


def test_foreign_files_are_not_replaced(tmp_path):
    root = str(tmp_path)
    hook = ph.under(root, inst.VDSM_HOOKS_DIR + "/before_vm_start/" + inst.HOOK_NAME)
    os.makedirs(os.path.dirname(hook))
    with open(hook, "w") as f:
        f.write("#!/usr/bin/python3\n# from the RPM\n")
    before = tree(root)
    r = qos_hooks("install", "--vdsm", "--root", root, check=False)
    assert r.returncode != 0 and "refusing to replace" in r.stderr
    assert tree(root) == before                     # checked before anything was written


def test_usage_and_qemu_hook_guard(tmp_path):
    r = qos_hooks("install", "--root", str(tmp_path), check=False)
    assert r.returncode == 2 and "--vdsm" in r.stderr
    assert os.listdir(str(tmp_path)) == []
    with pytest.raises(UsageError):
        inst._under(str(tmp_path), inst.LIBVIRT_QEMU_HOOK)
    assert all(i.target != inst.LIBVIRT_QEMU_HOOK for i in ph.layout())


def test_fix_shebang():
    assert inst.fix_shebang(b"#!/usr/bin/env python3\nx\n", "/opt/v/bin/python3") == \
        b"#!/opt/v/bin/python3\nx\n"
    assert inst.fix_shebang(b"#!/bin/sh\nx\n", "/p") == b"#!/bin/sh\nx\n"
    assert inst.fix_shebang(b"# no shebang\n", "/p") == b"# no shebang\n"


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A venv with qos-hooks installed from a wheel built from a fresh sdist."""
    top = tmp_path_factory.mktemp("wheel")
    try:
        import wheel  # noqa: F401  (pip wheel --no-build-isolation needs it)
    except ImportError:
        ph.missing("python package 'wheel' (pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(top),
                        "sdist", "-d", str(top / "sdist")], cwd=ph.REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    sdist = os.path.join(str(top / "sdist"), os.listdir(str(top / "sdist"))[0])
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(top / "wheel"), sdist],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    whl = os.path.join(str(top / "wheel"), os.listdir(str(top / "wheel"))[0])
    venv = str(top / "venv")
    # --system-site-packages: lxml comes from this interpreter, qos-hooks from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    r = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", "--ignore-installed", whl],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv


def test_install_from_wheel(wheel_venv, tmp_path):
    python = os.path.join(wheel_venv, "bin", "python")
    r = subprocess.run([python, "-c", "import qos_hooks.cli.install as i; print(i.data_root())"],
                       capture_output=True, text=True, cwd="/", env=ph.base_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(wheel_venv) and r.stdout.strip().endswith("qos_hooks/data")
    assert sorted(os.listdir(os.path.join(r.stdout.strip(), "hooks"))) == inst.hook_points(ph.REPO)
    root = str(tmp_path / "root")
    os.mkdir(root)
    cli = os.path.join(wheel_venv, "bin", "qos-hooks")
    r = subprocess.run([cli, "install", "--vdsm", "--libvirt", "--root", root],
                       capture_output=True, text=True, cwd="/", env=ph.base_env())
    assert r.returncode == 0, r.stdout + r.stderr
    interp = subprocess.run([python, "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    check_installed(root, ALL, interp)
    # the hook runs with the venv's interpreter and imports the wheel's library
    config = ph.under(root, inst.CONFIG)
    hook = ph.under(root, inst.VDSM_HOOKS_DIR + "/before_vm_start/" + inst.HOOK_NAME)
    r, out = ph.run_vdsm_hook(hook, tmp_path, config, None)
    assert r.returncode == 0, r.stderr.decode()
    assert ph.canonical(out) == ph.canonical(ph.dry_run_xml(config))
    r = subprocess.run([cli, "uninstall", "--root", root], capture_output=True, text=True,
                       cwd="/", env=ph.base_env())
    assert r.returncode == 0 and os.listdir(root) == [], r.stdout + r.stderr


def test_resync_unit_runs_this_interpreter_and_verifies(tmp_path):
    """The systemd unit that re-applies host network QoS after ovs-vswitchd
    (re)starts: installed with --vdsm, ExecStart rewritten for a pip install,
    accepted by systemd's own parser, and its command is a real qos-hooks command."""
    ph.need_tools("systemd-analyze")
    root = str(tmp_path)
    qos_hooks("install", "--vdsm", "--root", root)
    unit = ph.under(root, inst.UNIT)
    with open(unit) as f:
        text = f.read()
    (exec_line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    argv = exec_line[len("ExecStart="):].split()
    assert argv == [sys.executable, "-m", "qos_hooks", "resync"]
    assert "PartOf=ovs-vswitchd.service" in text and "WantedBy=ovs-vswitchd.service" in text
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", unit],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = subprocess.run(argv + ["--help"], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and "ovs-vswitchd" in r.stdout, r.stderr
    # the source (what the RPM ships) runs the RPM's command
    with open(os.path.join(ph.REPO, inst.SRC_UNIT)) as f:
        assert "ExecStart=/usr/bin/qos-hooks resync\n" in f.read()
