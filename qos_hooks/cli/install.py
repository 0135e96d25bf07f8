"""``qos-hooks install`` / ``qos-hooks uninstall``: the RPMs' files, for pip hosts.

A host that installs qos-hooks with pip gets the same files, modes and sudoers
drop-in as the RPMs (rpm/qos-hooks.spec) put there:

==========================================================  ====  =========
source (in the sdist / wheel)                               mode  component
==========================================================  ====  =========
hooks/<hook_point>/50_qos_hooks                             0755  vdsm
  -> /usr/libexec/vdsm/hooks/<hook_point>/50_qos_hooks
sudoers/50_vdsm_hook_qos_hooks                              0440  vdsm
  -> /etc/sudoers.d/50_vdsm_hook_qos_hooks  (root:root)
libvirt-hooks/qemu.d/50_qos_hooks                           0755  libvirt
  -> /etc/libvirt/hooks/qemu.d/50_qos_hooks
libexec/qos-hooks-helper                                    0755  common
  -> /usr/libexec/qos-hooks/qos-hooks-helper
examples/qos-hooks.conf                                     0644  common
  -> /etc/qos-hooks/qos-hooks.conf  (never replaced, never removed if modified)
/var/lib/qos-hooks/                                         0755  common
==========================================================  ====  =========

The list of VDSM hook points is not written down anywhere: it is whatever
``hooks/*/50_qos_hooks`` holds (the spec file globs the same tree), see
:func:`hook_points`.  ``/etc/libvirt/hooks/qemu`` belongs to VDSM on oVirt
hosts and is never created, replaced or removed (FIELD_NOTES section 4).

Executables get ``#!<the running interpreter>`` as their first line, so the
hooks import the qos_hooks this very ``qos-hooks`` runs from (a venv works).

Everything installed is recorded, with its SHA-256, in
``/var/lib/qos-hooks/installed-files``; ``uninstall`` removes exactly those
files (and the directories install created, once empty), keeps a config file
the operator modified, and keeps any file whose content changed since install.
Both commands are idempotent.  ``--root DIR`` stages everything below DIR
(created when missing) and never writes or deletes outside it: a symbolic link
on the way from DIR to a target (``DIR/etc -> /elsewhere``) is refused, and
every manifest path must be one install itself would write (absolute,
normalised, no ``..``), or uninstall refuses to act at all.  A file that was
already there with the same content (as an RPM leaves it) is not adopted:
install says so, does not record it, and uninstall leaves it in place.
"""

import hashlib
import os
import stat
import sys

from qos_hooks.core.errors import PermissionDenied, QosHooksError, UsageError

HOOK_NAME = "50_qos_hooks"
VDSM_HOOKS_DIR = "/usr/libexec/vdsm/hooks"
LIBVIRT_HOOKS_DIR = "/etc/libvirt/hooks"
LIBVIRT_QEMU_HOOK = LIBVIRT_HOOKS_DIR + "/qemu"          # VDSM's own: hands off
LIBVIRT_QEMU_D = LIBVIRT_HOOKS_DIR + "/qemu.d"
HELPER = "/usr/libexec/qos-hooks/qos-hooks-helper"
SUDOERS_NAME = "50_vdsm_hook_qos_hooks"
SUDOERS = "/etc/sudoers.d/" + SUDOERS_NAME
UNIT_NAME = "qos-hooks-resync.service"
UNIT = "/usr/lib/systemd/system/" + UNIT_NAME
UNIT_EXEC = b"ExecStart=/usr/bin/qos-hooks "
AGENT_UNIT_NAME = "qos-hooks-agent.service"
AGENT_UNIT = "/usr/lib/systemd/system/" + AGENT_UNIT_NAME
CONFIG = "/etc/qos-hooks/qos-hooks.conf"
STATE_DIR = "/var/lib/qos-hooks"
MANIFEST = STATE_DIR + "/installed-files"

COMMON, VDSM, LIBVIRT = "common", "vdsm", "libvirt"
# kinds of installed things
EXEC, FILE, CONFIG_KIND, DIR = "exec", "file", "config", "dir"

MANIFEST_HEADER = (
    "# qos-hooks install manifest: written by 'qos-hooks install', read by\n"
    "# 'qos-hooks uninstall'.  Do not edit.\n"
    "# kind component mode sha256 path\n")

# Source paths, relative to the data root (the source tree or qos_hooks/data).
SRC_HOOKS = "hooks"
SRC_LIBVIRT_HOOK = "libvirt-hooks/qemu.d/" + HOOK_NAME
SRC_HELPER = "libexec/qos-hooks-helper"
SRC_SUDOERS = "sudoers/" + SUDOERS_NAME
SRC_UNIT = "systemd/" + UNIT_NAME
SRC_AGENT_UNIT = "systemd/" + AGENT_UNIT_NAME
SRC_CONFIG = "examples/qos-hooks.conf"


class Item:
    """One file or directory that install puts on the host."""

    __slots__ = ("kind", "component", "target", "mode", "source")

    def __init__(self, kind, component, target, mode, source=None):
        self.kind = kind
        self.component = component
        self.target = target          # absolute path on the host (not below --root)
        self.mode = mode
        self.source = source          # absolute path of the source file, or None

    def __repr__(self):
        return "Item(%s %s %s %04o)" % (self.kind, self.component, self.target, self.mode)


# ---------------------------------------------------------------- data files

def _is_data_root(path):
    return os.path.isdir(os.path.join(path, SRC_HOOKS)) and \
        os.path.isfile(os.path.join(path, SRC_CONFIG))


def data_root():
    """Where the hook executables, sudoers drop-in and example config are.

    A wheel or sdist build copies them into ``qos_hooks/data`` (setup.py's
    build_py); a source checkout or editable install has them next to the
    package.
    """
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the qos_hooks package
    for candidate in (os.path.join(pkg, "data"), os.path.dirname(pkg)):
        if _is_data_root(candidate):
            return candidate
    raise QosHooksError(
        "the qos-hooks host files (hooks/, sudoers/, examples/qos-hooks.conf) are not "
        "next to %s: 'qos-hooks install' works from a wheel, an sdist or a source "
        "checkout; with the RPMs, install vdsm-hook-qos or qos-hooks-libvirt instead" % pkg)


def hook_points(root=None):
    """The VDSM hook points qos-hooks ships a hook for: ``hooks/*/50_qos_hooks``."""
    root = root or data_root()
    hooks = os.path.join(root, SRC_HOOKS)
    return sorted(p for p in os.listdir(hooks)
                  if os.path.isfile(os.path.join(hooks, p, HOOK_NAME)))


def layout(root=None):
    """Every Item install knows about, in install order (directories first)."""
    root = root or data_root()
    items = [
        Item(DIR, COMMON, os.path.dirname(CONFIG), 0o755),
        Item(DIR, COMMON, STATE_DIR, 0o755),
        Item(DIR, COMMON, os.path.dirname(HELPER), 0o755),
        Item(CONFIG_KIND, COMMON, CONFIG, 0o644, os.path.join(root, SRC_CONFIG)),
    ]
    helper = os.path.join(root, SRC_HELPER)
    if os.path.isfile(helper):
        items.append(Item(EXEC, COMMON, HELPER, 0o755, helper))
    # common, and before any component's file: the directories it creates are
    # then recorded as common, and removed only with the last component
    agent_unit = os.path.join(root, SRC_AGENT_UNIT)
    if os.path.isfile(agent_unit):
        items.append(Item(FILE, COMMON, AGENT_UNIT, 0o644, agent_unit))
    for point in hook_points(root):
        items.append(Item(DIR, VDSM, "%s/%s" % (VDSM_HOOKS_DIR, point), 0o755))
        items.append(Item(EXEC, VDSM, "%s/%s/%s" % (VDSM_HOOKS_DIR, point, HOOK_NAME), 0o755,
                          os.path.join(root, SRC_HOOKS, point, HOOK_NAME)))
    sudoers = os.path.join(root, SRC_SUDOERS)
    if os.path.isfile(sudoers):
        items.append(Item(FILE, VDSM, SUDOERS, 0o440, sudoers))
    unit = os.path.join(root, SRC_UNIT)
    if os.path.isfile(unit):
        items.append(Item(FILE, VDSM, UNIT, 0o644, unit))
    libvirt_hook = os.path.join(root, SRC_LIBVIRT_HOOK)
    if os.path.isfile(libvirt_hook):
        items.append(Item(DIR, LIBVIRT, LIBVIRT_QEMU_D, 0o755))
        items.append(Item(EXEC, LIBVIRT, "%s/%s" % (LIBVIRT_QEMU_D, HOOK_NAME), 0o755,
                          libvirt_hook))
    for item in items:
        _refuse_qemu_hook(item.target)
    return items


def fix_shebang(data, interpreter):
    """Replace a Python ``#!`` first line with ``#!interpreter``."""
    if not data.startswith(b"#!"):
        return data
    first, sep, rest = data.partition(b"\n")
    if b"python" not in first:
        return data
    return b"#!" + interpreter.encode() + sep + rest


def rendered(item, interpreter):
    """The bytes install writes for a file item."""
    with open(item.source, "rb") as f:
        data = f.read()
    if item.kind == EXEC:
        data = fix_shebang(data, interpreter)
    elif item.target in (UNIT, AGENT_UNIT):
        # a pip install has no /usr/bin/qos-hooks: run the package with the
        # interpreter it was installed for
        data = data.replace(UNIT_EXEC, b"ExecStart=" + interpreter.encode() + b" -m qos_hooks ")
    return data


# ---------------------------------------------------------------- helpers

def _refuse_qemu_hook(target):
    if os.path.normpath(target) == LIBVIRT_QEMU_HOOK:
        raise UsageError("refusing to touch %s: on oVirt hosts VDSM owns it; qos-hooks "
                         "installs into %s/ instead" % (LIBVIRT_QEMU_HOOK, LIBVIRT_QEMU_D))


def _under(root, target):
    """``target`` (an absolute host path) below ``root``, refusing anything
    that could leave it: a path that is not absolute and normalised (``..``,
    ``.``, ``//``), and, with a staging root other than ``/``, a symbolic
    link anywhere between ``root`` and the target's directory."""
    _refuse_qemu_hook(target)
    if not target.startswith("/") or os.path.normpath(target) != target or "\x00" in target:
        raise UsageError("refusing path %r: not an absolute, normalised path" % target)
    if root != "/":
        p = root
        for part in target.strip("/").split("/")[:-1]:
            p = os.path.join(p, part)
            if os.path.islink(p):
                raise UsageError("refusing %s: %s is a symbolic link (install and uninstall "
                                 "never follow links below --root %s)"
                                 % (os.path.join(root, target.lstrip("/")), p, root))
    return os.path.join(root, target.lstrip("/"))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(65536), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path, data, mode):
    """Write ``path`` by rename (qos_hooks.core.fileio.write_atomic): no reader ever
    sees a partial or non-executable hook.

    The temporary file lives in the parent of the target's directory so VDSM
    (which runs every executable in a hook directory), libvirt (qemu.d) and sudo
    (sudoers.d) never see it.
    """
    from qos_hooks.core.fileio import write_atomic
    write_atomic(path, data, mode=mode, owner=(0, 0),
                 tmp_dir=os.path.dirname(os.path.dirname(path)))


def known_paths(items=None):
    """Every path install may write or create: the layout's targets, their
    parent directories and the manifest."""
    out = {MANIFEST}
    for item in items if items is not None else layout():
        p = item.target
        while p not in ("/", ""):
            out.add(p)
            p = os.path.dirname(p)
    return out


def _read_manifest(root, known=None):
    """{target: (kind, component, mode, sha256 or None)} from the manifest.

    Every path must be one install writes (``known``): a manifest naming
    anything else (``/etc/../root/x``, ``/etc/passwd``) is refused as a whole.
    """
    path = _under(root, MANIFEST)
    entries = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return entries
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(None, 4)
        if len(fields) != 5:
            raise QosHooksError("%s line %d: cannot parse %r" % (path, n, line))
        kind, component, mode, digest, target = fields
        if (not target.startswith("/") or os.path.normpath(target) != target
                or (known is not None and target not in known)):
            raise QosHooksError("%s line %d: refusing path %r: not a path 'qos-hooks install' "
                                "writes (nothing was removed)" % (path, n, target))
        entries[target] = (kind, component, int(mode, 8), None if digest == "-" else digest)
    return entries


def _write_manifest(root, entries):
    path = _under(root, MANIFEST)
    if not entries:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    lines = [MANIFEST_HEADER]
    for target in sorted(entries):
        kind, component, mode, digest = entries[target]
        lines.append("%s %s %04o %s %s\n" % (kind, component, mode, digest or "-", target))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomic(path, "".join(lines).encode(), 0o644)


def _components(args, default):
    chosen = [c for c, flag in ((VDSM, "vdsm"), (LIBVIRT, "libvirt")) if getattr(args, flag, False)]
    return chosen or default


def _say(verb, root, target):
    print("%-10s %s" % (verb, os.path.join(root, target.lstrip("/")) if root != "/" else target))


def _permission(e):
    return PermissionDenied("%s: %s (run as root, or stage with --root DIR)"
                            % (e.filename or "", e.strerror))


def _ensure_dir(root, target, component, manifest, mode=0o755):
    """Create ``target`` and any missing parent below ``root``, recording each one."""
    missing = []
    path = os.path.normpath(target)
    while path not in ("/", "") and not os.path.isdir(_under(root, path)):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        os.mkdir(_under(root, path), 0o755)
        os.chmod(_under(root, path), mode if path == target else 0o755)
        manifest[path] = (DIR, component, mode if path == target else 0o755, None)
        _say("created", root, path + "/")
    return bool(missing)


def _check_conflicts(root, items, manifest, interpreter):
    """Refuse, before writing anything, to replace files install did not put there."""
    foreign = []
    for item in items:
        if item.kind in (DIR, CONFIG_KIND) or item.target in manifest:
            continue
        dest = _under(root, item.target)
        if os.path.lexists(dest):
            same = os.path.isfile(dest) and not os.path.islink(dest) and \
                _sha256(dest) == hashlib.sha256(rendered(item, interpreter)).hexdigest()
            if not same:
                foreign.append(dest)
    if foreign:
        raise QosHooksError(
            "not installed by 'qos-hooks install', refusing to replace: %s (installed from "
            "the RPMs? then keep using them, or 'rpm -e vdsm-hook-qos qos-hooks-libvirt' "
            "first)" % ", ".join(foreign))


# ---------------------------------------------------------------- commands

def install(root="/", components=(VDSM, LIBVIRT), interpreter=None, source_root=None):
    """Install the chosen components (plus the common files) below ``root``."""
    interpreter = interpreter or sys.executable
    root = os.path.abspath(root)
    _ensure_root(root)
    every = layout(source_root)
    items = [i for i in every if i.component in (COMMON,) + tuple(components)]
    if LIBVIRT in components and not any(i.component == LIBVIRT for i in items):
        raise QosHooksError("this qos-hooks build has no libvirt qemu.d hook (%s)"
                            % SRC_LIBVIRT_HOOK)
    manifest = _read_manifest(root, known_paths(every))
    _check_conflicts(root, items, manifest, interpreter)
    changed = False
    for item in items:
        dest = _under(root, item.target)
        if item.kind == DIR:
            changed |= _ensure_dir(root, item.target, item.component, manifest, item.mode)
            continue
        data = rendered(item, interpreter)
        digest = hashlib.sha256(data).hexdigest()
        recorded = manifest.get(item.target)
        if os.path.lexists(dest):
            if os.path.islink(dest):
                _say("kept", root, item.target + " (a symbolic link, not followed or replaced)")
                continue
            current = _sha256(dest) if os.path.isfile(dest) else None
            if item.kind == CONFIG_KIND:
                if recorded is None and current != digest:
                    _say("kept", root, item.target + " (exists, not replaced)")
                    continue
                if recorded is not None and current != recorded[3]:
                    _say("kept", root, item.target + " (modified, not replaced)")
                    continue
            if recorded is None and current == digest:
                # there already (an RPM, an earlier copy): not ours to adopt,
                # so uninstall will leave it where it is
                _say("kept", root, item.target + " (already there, not installed by "
                     "'qos-hooks install': uninstall leaves it)")
                continue
            if current == digest and stat.S_IMODE(os.stat(dest).st_mode) == item.mode:
                if recorded[3] != digest:
                    manifest[item.target] = (item.kind, item.component, item.mode, digest)
                    changed = True
                _say("unchanged", root, item.target)
                continue
        changed |= _ensure_dir(root, os.path.dirname(item.target), item.component, manifest)
        _write_atomic(dest, data, item.mode)
        manifest[item.target] = (item.kind, item.component, item.mode, digest)
        changed = True
        _say("installed", root, item.target)
    if changed:
        _write_manifest(root, manifest)
    return 0


def uninstall(root="/", components=(COMMON, VDSM, LIBVIRT)):
    """Remove what install recorded for ``components``.

    The common files (helper, config, state directory) go only when no other
    component is left installed.
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise UsageError("--root %s: no such directory (nothing was installed there)" % root)
    manifest = _read_manifest(root, known_paths())
    if not manifest:
        print("nothing to remove: %s lists nothing" % _under(root, MANIFEST))
        return 0
    components = set(components)
    if not {c for (_, c, _, _) in manifest.values()} - components - {COMMON}:
        components.add(COMMON)            # nothing else needs the helper and config
    mine = [t for t, e in manifest.items() if e[1] in components]
    for target in mine + [MANIFEST]:
        _under(root, target)      # every path checked before anything is removed
    dirs = [t for t in mine if manifest[t][0] == DIR]
    for target in sorted(t for t in mine if manifest[t][0] != DIR):
        kind, _, _, digest = manifest.pop(target)
        dest = _under(root, target)
        if not os.path.lexists(dest):
            continue
        if os.path.islink(dest) or not os.path.isfile(dest) or _sha256(dest) != digest:
            why = "modified since install" if kind == CONFIG_KIND else \
                "changed since install: check it and remove it by hand"
            _say("kept", root, "%s (%s)" % (target, why))
            continue
        os.unlink(dest)
        _say("removed", root, target)
    for target in dirs:
        del manifest[target]
    # the manifest lives in STATE_DIR: rewrite (or delete) it before the directories go
    _write_manifest(root, manifest)
    for target in sorted(dirs, key=lambda t: t.count("/"), reverse=True):
        dest = _under(root, target)
        try:
            os.rmdir(dest)
            _say("removed", root, target + "/")
        except FileNotFoundError:
            pass
        except OSError:
            _say("kept", root, target + "/ (not empty)")
    return 0


def _ensure_root(root):
    """The staging root: created when missing (an image build stages into a
    fresh directory), refused when it is something else than a directory."""
    if os.path.isdir(root):
        return
    if os.path.lexists(root):
        raise UsageError("--root %s: not a directory" % root)
    try:
        os.makedirs(root, 0o755)
    except OSError as e:
        raise UsageError("--root %s: cannot create it: %s" % (root, e.strerror))
    print("%-10s %s/" % ("created", root))


def install_main(args):
    components = _components(args, [])
    if not components:
        raise UsageError("choose what to install: --vdsm (VDSM hooks and sudoers drop-in), "
                         "--libvirt (the qemu.d hook), or both")
    try:
        rc = install(args.root, components)
    except PermissionError as e:
        raise _permission(e)
    # the hooks read this file on every call: say loudly when they cannot
    # (qos_hooks.cli.check; the RPM's %post does the same)
    from qos_hooks.cli.check import warn_if_invalid
    conf = _under(os.path.abspath(args.root), CONFIG)
    if os.path.exists(conf):
        warn_if_invalid(conf)
    return rc


def uninstall_main(args):
    try:
        return uninstall(args.root, _components(args, [COMMON, VDSM, LIBVIRT]))
    except PermissionError as e:
        raise _permission(e)
