"""Hostile install roots (issue 9 item 12, issue 17 item 10): ``qos-hooks
install --root DIR`` and ``uninstall`` never write or delete outside DIR,
never adopt a file they did not write, and a missing DIR is no traceback.

Each case asserts the exit code, the message, and that nothing changed: the
tree inside DIR and the bait outside it are byte-equal before and after.
"""

import hashlib
import os
import subprocess
import sys

from qos_hooks.cli import install as inst
from tests import packaging_helpers as ph


def qos_hooks(*args):
    return subprocess.run([sys.executable, "-m", "qos_hooks"] + list(args),
                          capture_output=True, text=True, cwd="/",
                          env=ph.base_env(PYTHONPATH=ph.REPO))


def tree(root):
    """{relative path: (lstat mode, symlink target or file bytes)} below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if os.path.islink(p):
                data = os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    data = f.read()
            else:
                data = None
            out[os.path.relpath(p, root)] = (st.st_mode, data)
    return out


def no_traceback(r):
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_symlinked_parent_inside_root_is_refused(tmp_path):
    """``DIR/etc -> /elsewhere`` used to make install write the sudoers drop-in
    and the config to /elsewhere."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "etc").symlink_to(elsewhere)
    before, outside = tree(str(root)), tree(str(elsewhere))
    r = qos_hooks("install", "--vdsm", "--libvirt", "--root", str(root))
    assert r.returncode == 2, r.stdout + r.stderr
    line = no_traceback(r)
    assert "is a symbolic link (install and uninstall never follow links below --root" in line
    assert "%s/etc" % root in line
    assert tree(str(elsewhere)) == outside == {}
    assert tree(str(root)) == before


def test_symlink_appearing_after_install_stops_uninstall(tmp_path):
    """A directory swapped for a link after install: uninstall deletes nothing
    through it (the bait outside stays), and says why."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    r = qos_hooks("install", "--vdsm", "--root", str(root))
    assert r.returncode == 0, r.stderr
    sudoers_dir = root / "etc" / "sudoers.d"
    os.rename(sudoers_dir, tmp_path / "moved")
    elsewhere.mkdir()
    bait = elsewhere / inst.SUDOERS_NAME
    os.rename(tmp_path / "moved" / inst.SUDOERS_NAME, bait)     # same bytes as installed
    sudoers_dir.symlink_to(elsewhere)
    before, outside = tree(str(root)), tree(str(elsewhere))
    r = qos_hooks("uninstall", "--root", str(root))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is a symbolic link" in no_traceback(r)
    assert tree(str(elsewhere)) == outside and bait.exists()
    assert tree(str(root)) == before


def test_manifest_path_with_dotdot_is_refused(tmp_path):
    """A manifest line ``/../victim`` used to make uninstall delete outside DIR."""
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    assert qos_hooks("install", "--libvirt", "--root", str(root)).returncode == 0
    manifest = root / inst.MANIFEST.lstrip("/")
    digest = hashlib.sha256(b"precious\n").hexdigest()
    with open(manifest, "a") as f:
        f.write("file libvirt 0644 %s /../victim\n" % digest)
    before = tree(str(root))
    r = qos_hooks("uninstall", "--root", str(root))
    assert r.returncode != 0
    line = no_traceback(r)
    assert "refusing path '/../victim': not a path 'qos-hooks install' writes" in line
    assert victim.read_bytes() == b"precious\n"
    assert tree(str(root)) == before            # refused as a whole: nothing removed


def test_manifest_naming_a_foreign_path_is_refused(tmp_path):
    """A normalised path that install never writes (``/etc/passwd``) is refused too."""
    root = tmp_path / "root"
    assert qos_hooks("install", "--libvirt", "--root", str(root)).returncode == 0
    passwd = root / "etc" / "passwd"
    passwd.write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    manifest = root / inst.MANIFEST.lstrip("/")
    with open(manifest, "a") as f:
        f.write("file common 0644 %s /etc/passwd\n"
                % hashlib.sha256(passwd.read_bytes()).hexdigest())
    before = tree(str(root))
    r = qos_hooks("uninstall", "--root", str(root))
    assert r.returncode != 0
    assert "refusing path '/etc/passwd'" in no_traceback(r)
    assert tree(str(root)) == before


def test_preexisting_identical_files_are_not_adopted(tmp_path):
    """An RPM leaves the sudoers drop-in and the config in place; install used
    to record identical copies as its own and uninstall then removed them."""
    root = tmp_path / "root"
    items = {i.target: i for i in ph.layout()}
    rpm_files = {}
    for target in (inst.SUDOERS, inst.CONFIG):
        path = root / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(inst.rendered(items[target], sys.executable))
        os.chmod(path, items[target].mode)
        rpm_files[target] = path.read_bytes()
    r = qos_hooks("install", "--vdsm", "--root", str(root))
    assert r.returncode == 0, r.stderr
    for target in rpm_files:
        assert "kept       %s (already there, not installed by 'qos-hooks install': " \
               "uninstall leaves it)" % os.path.join(str(root), target.lstrip("/")) in r.stdout
    manifest = (root / inst.MANIFEST.lstrip("/")).read_text()
    assert inst.SUDOERS not in manifest and inst.CONFIG not in manifest
    r = qos_hooks("uninstall", "--root", str(root))
    assert r.returncode == 0, r.stderr
    for target, data in rpm_files.items():
        assert (root / target.lstrip("/")).read_bytes() == data, target


def test_missing_root_is_created_by_install(tmp_path):
    """issue 17 item 10: the operator guide's image-building example stages
    into a directory that does not exist yet; this was a traceback."""
    root = tmp_path / "image" / "rootfs"
    r = qos_hooks("install", "--vdsm", "--libvirt", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "created    %s/" % root
    assert (root / inst.SUDOERS.lstrip("/")).is_file()


def test_missing_root_is_a_clear_uninstall_error(tmp_path):
    missing = tmp_path / "nope"
    r = qos_hooks("uninstall", "--root", str(missing))
    assert r.returncode == 2
    assert no_traceback(r).endswith("--root %s: no such directory (nothing was installed "
                                    "there)" % missing)
    assert not missing.exists()


def test_root_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"x")
    r = qos_hooks("install", "--vdsm", "--root", str(f))
    assert r.returncode == 2
    assert no_traceback(r).endswith("--root %s: not a directory" % f)
    assert f.read_bytes() == b"x"
