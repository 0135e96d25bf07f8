"""What a test that drops privileges needs, laid out where that user can read it.

A checkout may live anywhere its owner can enter: root's home (/root is 0700
on Debian), a ``mktemp -d`` directory (0700) ...  An unprivileged user (uid
65534, or vdsm) cannot enter those, so code it runs must not come from the
checkout.  ``readable_copy`` copies what the unprivileged side runs into a
fresh directory under /tmp with the modes an install gives them (directories
0755, files 0644, executables 0755), laid out as the RPM and ``qos-hooks
install`` do: the package on the import path, the VDSM hook executables
beside it.  ``helper_python`` makes the interpreter root's helper runs with:
a virtual environment whose site-packages hold the same copy of the package,
as the RPM's python3-qos-hooks puts it into the system interpreter's.

``unusable_reason`` says why a user still cannot use a path or import the
package: a precondition that cannot be met is reported as what it is ("/root
is mode 0700, not searchable by uid 65534"), not as a missing module.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"


def _copy(src, dst):
    def ignore(_, names):
        return [n for n in names if n == "__pycache__" or n.endswith((".pyc", "~"))]
    shutil.copytree(src, dst, ignore=ignore)
    for dirpath, dirnames, filenames in os.walk(dst):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            os.chmod(p, 0o755 if os.stat(p).st_mode & 0o111 else 0o644)


def readable_copy(parts=("qos_hooks", "hooks")):
    """A new directory under /tmp (0755) holding ``lib/qos_hooks`` (the import
    path) and the other ``parts`` of the checkout (``hooks/...``), every file
    readable by everyone.  The caller removes it (``shutil.rmtree``)."""
    base = tempfile.mkdtemp(prefix="qos-hooks-unpriv-", dir="/tmp")
    os.chmod(base, 0o755)
    os.mkdir(os.path.join(base, "lib"), 0o755)
    for part in parts:
        dst = os.path.join(base, "lib", part) if part == "qos_hooks" else os.path.join(base, part)
        _copy(os.path.join(REPO, part), dst)
    return base


def helper_python(base):
    """An interpreter whose site-packages hold the copy in ``base`` (for root's
    helper, which sudo starts with a clean environment): a venv inside
    ``base`` on this interpreter, with its site packages (lxml, ovs, pyroute2).

    When this interpreter is itself a venv (make check's .venv/), a new venv
    would see only the base interpreter's packages: a .pth file names this
    interpreter's own site-packages directories instead."""
    venv = os.path.join(base, "helper-venv")
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(python):
        return python   # made for an earlier test
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    venv], check=True, capture_output=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    _copy(os.path.join(base, "lib", "qos_hooks"), os.path.join(site, "qos_hooks"))
    import site as _site
    outer = [p for p in _site.getsitepackages() + [_site.getusersitepackages()]
             if os.path.isdir(p)]
    with open(os.path.join(site, "zz-outer-site.pth"), "w") as f:
        f.write("".join(p + "\n" for p in outer))   # after the copy: ours wins
    return python


def blocked_by(path, uid, gid):
    """The first directory on the way to ``path`` that uid/gid cannot search
    (or the file itself when it cannot read it), as "DIR is mode 0700 (owner
    uid 0)"; None when nothing blocks by mode bits."""
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        p = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(p)
        except OSError:
            return None
        need = stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else stat.S_IROTH
        if st.st_uid == uid:
            need <<= 6
        elif st.st_gid == gid:
            need <<= 3
        if not st.st_mode & need:
            return "%s is mode %04o (owner uid %d)" % (p, st.st_mode & 0o7777, st.st_uid)
    return None


def usable_python(uid, gid):
    """An interpreter the user can run: this one when its path is open to the
    user, else the system python3."""
    for python in (os.path.realpath(sys.executable), SYSTEM_PYTHON):
        if os.path.exists(python) and blocked_by(python, uid, gid) is None:
            return python
    return None


def unusable_reason(uid, gid, python, pythonpath, modules, setpriv_argv=None):
    """None when uid/gid can run ``python`` and import ``modules`` from
    ``pythonpath``; else a sentence saying which precondition fails."""
    if python is None:
        return ("no Python interpreter usable by uid %d: %s (this interpreter) and %s"
                % (uid, blocked_by(sys.executable, uid, gid) or sys.executable, SYSTEM_PYTHON))
    for p in (python, pythonpath):
        why = blocked_by(p, uid, gid)
        if why:
            return "%s is not usable by uid %d: %s" % (p, uid, why)
    argv = (setpriv_argv or ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                             "--clear-groups"]) + [
        "env", "PYTHONPATH=" + pythonpath, python, "-c", "import " + ", ".join(modules)]
    probe = subprocess.run(argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode == 0:
        return None
    out = probe.stdout.decode(errors="replace").strip().splitlines()
    last = out[-1] if out else "exit %d" % probe.returncode
    if "qos_hooks" in last:
        return ("uid %d cannot import the qos_hooks copy in %s with %s: %s"
                % (uid, pythonpath, python, last))
    return ("%s cannot import %s as uid %d (a missing module of that interpreter, e.g. "
            "Debian python3-lxml): %s" % (python, ", ".join(modules), uid, last))
