"""The one way this project replaces a file: write a temporary file, fsync, rename.

Used by the VDSM VM hooks for ``$_hook_domxml`` (qos_hooks.hooks.runner), the
network hooks for ``$_hook_json`` and their state file (qos_hooks.hostnet.state),
and ``qos-hooks install`` for every file it puts on a host
(qos_hooks.cli.install).

A reader of ``path`` sees either the complete old content or the complete
new content, never a mix and never a truncated file: the new bytes go to a
temporary file, are flushed to disk (``fsync``), and ``rename(2)`` then
swaps the name over atomically.  If anything fails before the rename (disk
full, quota, I/O error) the temporary file is removed and ``path`` is
untouched; a SIGKILL before the rename leaves ``path`` untouched too (and at
worst a stray ``.qos-hooks-*`` temporary file in ``tmp_dir``).

``read_regular`` is the one way it reads a file someone else may have put
there (the policy file, the hook's data file before the watchdog runs):
never blocking on a FIFO or device, never reading more than asked.

No project imports: cheap enough for before_vm_start (and for a hook
executable's very first lines).
"""

import os

TMP_PREFIX = ".qos-hooks-"


def _mkstemp(tmp_dir):
    """tempfile.mkstemp without importing tempfile (random, shutil...: it
    would cost every VM start a few milliseconds): O_EXCL, 0600, no link
    followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(100):
        name = os.path.join(tmp_dir, TMP_PREFIX + os.urandom(8).hex())
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError("no unused temporary name in %s" % tmp_dir)


def write_atomic(path, data, mode=None, owner=None, tmp_dir=None):
    """Replace ``path`` with ``data`` (bytes) by rename.

    ``mode``: the new file's permission bits; None keeps those of the
    existing ``path`` (0600 when it does not exist).  ``owner``: ``(uid,
    gid)`` to give the new file when running as root; None keeps the
    existing file's owner when root can (else the caller's).  ``tmp_dir``:
    where the temporary file is made; it must be on the same file system as
    ``path`` (default: ``path``'s directory).
    """
    d = os.path.dirname(os.path.abspath(path))
    tmp_dir = d if tmp_dir is None else tmp_dir
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if mode is None:
        mode = (st.st_mode & 0o7777) if st is not None else 0o600
    if owner is None and st is not None:
        owner = (st.st_uid, st.st_gid)
    fd, tmp = _mkstemp(tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), owner[0], owner[1])
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(d)


def _fsync_dir(d):
    """Make the rename itself durable (best effort: not every file system
    lets a directory be opened or synced)."""
    try:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class NotRegularFile(Exception):
    """``read_regular``: a FIFO, socket, device or directory at the path."""


def read_regular(path, limit, check=None):
    """The first ``limit`` + 1 bytes (at most) of the regular file ``path``,
    read without ever blocking: opened O_NONBLOCK, and the open descriptor's
    fstat is checked before a single read, so a FIFO, socket, device or
    directory raises NotRegularFile (open(2) of a FIFO with no writer would
    otherwise wait for one).  ``check(stat_result)`` runs on that fstat
    before the read and may raise.  One byte over ``limit`` lets the
    caller tell "too big" apart.  OSError (FileNotFoundError...) as open(2)
    and read(2) raise it."""
    import stat
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path)
        if check is not None:
            check(st)
        chunks, size = [], 0
        while size <= limit:
            b = os.read(fd, limit + 1 - size)
            if not b:
                break
            chunks.append(b)
            size += len(b)
    finally:
        os.close(fd)
    return b"".join(chunks)
