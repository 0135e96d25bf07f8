"""A hook never leaves ``$_hook_domxml`` / ``$_hook_json`` half written
(issue 9 item 6).

The hooks used to rewrite the file in place (write, then truncate): with the
disk full the file was cut short, and a SIGKILL between the write and the
truncate left the new document followed by the old tail.  Now the new bytes
go to a temporary file in the same directory, are fsynced, and renamed over
the original (qos_hooks.core.fileio.write_atomic); VDSM re-reads the file by name.

* a small tmpfs that fills up mid-write: the hook fails by its failure
  policy, the file is the complete original, no temporary file is left;
* SIGKILL injected at chosen system calls with ``strace -e inject``: before
  the temporary file is complete (fchmod), before the rename (fsync of the
  temporary file, rename itself), after it (fsync of the directory), and at
  ftruncate (where the old code was killed between write and truncate):
  after each, the file is either the complete original or the complete new
  document.

Both for a domain XML hook (before_vm_start) and for the network hooks' JSON
(before_network_setup).
"""

import json
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = 4096


def _require(what, ok):
    if not ok:
        from tests.ovs_sandbox import require
        require(what)


def _root():
    _require("needs root (mount -t tmpfs)", os.geteuid() == 0)


def domain_xml(size):
    """A domain XML of exactly ``size`` bytes (padded with a comment)."""
    head = ("<domain type='kvm'>\n  <name>fill01</name>\n"
            "  <uuid>6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e</uuid>\n  <vcpu>1</vcpu>\n"
            "  <devices>\n    <interface type='bridge'>\n"
            "      <mac address='52:54:00:6b:1f:01'/>\n      <source bridge='br0'/>\n"
            "      <model type='virtio'/>\n    </interface>\n  </devices>\n  <!-- ")
    tail = " -->\n</domain>\n"
    return (head + "x" * (size - len(head) - len(tail)) + tail).encode()


def net_json(size, profile="net"):
    """The before_network_setup request, ``size`` bytes (padded in options).
    With the profile the rewrite grows the file (hostQos ul added), without
    it the file shrinks by two bytes (the fix "8000000" -> 8000000)."""
    req = {"request": {"networks": {"n1": {"nic": "eth1", "switch": "legacy", "bridged": True,
                                           "custom": {"qos_profile": profile} if profile else {},
                                           "hostQos": {"out": {"ls": {"m2": "8000000"}}}}},
                       "bondings": {}, "options": {"pad": ""}}}
    base = len(json.dumps(req))
    req["request"]["options"]["pad"] = "p" * (size - base)
    data = json.dumps(req).encode()
    assert len(data) == size
    return data


CONF = """[settings]
ovsdb_timeout = 5

[profile gold]
inbound.average = 1000
outbound.average = 500

[profile net]
host.ul.m2 = 100Mbit
"""


def hook_env(tmp_path, **extra):
    conf = tmp_path / "qos-hooks.conf"
    conf.write_text(CONF)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": REPO, "LC_ALL": "C.UTF-8",
           "QOS_HOOKS_CONFIG": str(conf),
           "QOS_HOOKS_HOSTNET_STATE": str(tmp_path / "state" / "hostnet.json")}
    env.update(extra)
    return env


CASES = {
    # hook point, env var of the file, maker, extra env
    "domxml": ("before_vm_start", "_hook_domxml", domain_xml, {"qos_profile": "gold"}),
    "json": ("before_network_setup", "_hook_json", net_json, {}),
}


def run_hook(point, env, prefix=()):
    exe = os.path.join(REPO, "hooks", point, "50_qos_hooks")
    return subprocess.run(list(prefix) + [exe], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=120)


def expected_new(tmp_path, case, data):
    """What the hook makes of ``data`` with room to spare (the oracle)."""
    point, var, _, extra = CASES[case]
    d = tmp_path / "oracle"
    d.mkdir(exist_ok=True)
    f = d / "data"
    f.write_bytes(data)
    p = run_hook(point, hook_env(tmp_path, **dict(extra, **{var: str(f)})))
    assert p.returncode == 0, p.stderr
    new = f.read_bytes()
    assert new != data
    return new


@pytest.fixture
def small_tmpfs(tmp_path):
    _root()
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_up(path):
    """Write a filler file until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * PAGE)
        except OSError:
            pass


@pytest.mark.parametrize("case", sorted(CASES))
def test_disk_full_mid_write_leaves_the_original(small_tmpfs, tmp_path, case):
    """The original is exactly 10 pages; the new document needs an 11th that
    is not there.  The old in-place rewrite wrote the first 10 pages of the
    new document and stopped: a truncated file."""
    point, var, make, extra = CASES[case]
    original = make(10 * PAGE)
    new = expected_new(tmp_path, case, original)
    assert len(new) > len(original)
    f = small_tmpfs / "hookdata"
    f.write_bytes(original)
    os.chmod(f, 0o600)
    fill_up(small_tmpfs / "filler")
    p = run_hook(point, hook_env(tmp_path, **dict(extra, **{var: str(f)})))
    err = p.stderr.decode()
    assert p.returncode == 2, err        # both hook points fail closed by default (exit 2)
    assert "cannot write %s: No space left on device (the file is unchanged)" % f in err
    assert "on_error=fail for %s" % point in err
    assert f.read_bytes() == original
    assert sorted(os.listdir(small_tmpfs)) == ["filler", "hookdata"]    # no temporary file
    # with room again, the same run writes the complete new document
    os.unlink(small_tmpfs / "filler")
    p = run_hook(point, hook_env(tmp_path, **dict(extra, **{var: str(f)})))
    assert p.returncode == 0, p.stderr
    assert f.read_bytes() == new
    assert oct(os.stat(f).st_mode & 0o7777) == oct(0o600)      # mode kept


STRACE = shutil.which("strace")
# (syscall to kill at, which call, what the file must be afterwards)
KILL_POINTS = [
    ("fchmod", 1, "original"),        # temporary file written, not yet complete
    ("fsync", 1, "original"),         # temporary file complete, not yet synced
    ("rename,renameat,renameat2", 1, "original"),   # synced, not yet renamed
    ("fsync", 2, "new"),              # renamed; the directory not yet synced
    ("ftruncate", 1, "either"),       # where the old code was killed between write and truncate
]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("syscall,nth,want", KILL_POINTS,
                         ids=["%s#%d" % (s.split(",")[0], n) for s, n, _ in KILL_POINTS])
def test_sigkill_between_the_steps(tmp_path, case, syscall, nth, want):
    _require("needs strace (Debian package strace) to inject SIGKILL at a system call",
             STRACE is not None)
    point, var, make, extra = CASES[case]
    # a shrinking rewrite for the JSON (the fix "8000000" -> 8000000), a growing
    # one for the XML: the old code left "new + old tail" for the first
    original = make(3 * PAGE) if case == "domxml" else make(3 * PAGE, profile=None)
    new = expected_new(tmp_path, case, original)
    if case == "json":
        assert len(new) < len(original)
    d = tmp_path / "hookdir"
    d.mkdir()
    f = d / "hookdata"
    f.write_bytes(original)
    env = hook_env(tmp_path, **dict(extra, **{var: str(f)}))
    p = run_hook(point, env, prefix=[STRACE, "-f", "-o", "/dev/null", "-e",
                                     "inject=%s:signal=KILL:when=%d" % (syscall, nth)])
    got = f.read_bytes()
    assert got in (original, new), "half-written file after SIGKILL at %s" % syscall
    if want == "original":
        assert p.returncode != 0, "the kill at %s did not happen" % syscall
        assert got == original
    elif want == "new":
        assert p.returncode != 0, "the kill at %s did not happen" % syscall
        assert got == new
    # a kill before the rename may leave the temporary file, never the target broken
    for name in os.listdir(d):
        assert name == "hookdata" or name.startswith(".qos-hooks-"), name
