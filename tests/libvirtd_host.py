"""A real libvirtd 9.0 + qemu (TCG) + Open vSwitch for end-to-end tests.

What it runs, and why this way (FIELD_NOTES section 5):

* ovsdb-server with a private database and socket in a temporary directory,
  and ONE ovs-vswitchd (``datapath_type=netdev``) in the ROOT network
  namespace: libvirt creates its taps there.  (Every other OVS in this test
  suite runs in a private namespace, tests/ovs_sandbox.py.)
* libvirtd in a private MOUNT namespace (``unshare --mount``), so the host's
  files are never touched: inside it ``/etc/libvirt`` is a private copy
  (qemu.conf with user/group root, ``security_driver = "none"``,
  ``stdio_handler = "file"``; ``hooks/qemu.d/50_qos_hooks`` installed, no
  ``hooks/qemu`` file: libvirt >= 6.5 runs ``qemu.d`` scripts on their own),
  ``/run`` is a private directory holding ``/run/openvswitch/db.sock`` -> our
  ovsdb-server (libvirt runs ``ovs-vsctl`` with its default database), and
  ``/var/lib/libvirt``, ``/var/log/libvirt``, ``/var/cache/libvirt`` are
  private directories.  libvirtd's own socket lives in the temporary
  directory (``unix_sock_dir`` in a private libvirtd.conf given with
  ``--config``); clients use ``qemu:///system?socket=...``.
  libvirtd reads its hook directory at start-up (virHookInitialize), so the
  hook is in place before the daemon starts.
* Teardown, even after a failure: destroy domains, stop libvirtd (the
  mount namespace goes with it), stop the OVS daemons and wait for them,
  delete the taps they leave (``ovs-netdev``, the bridge) and any ``vnet*``
  tap left behind.

When a piece is missing, ``require`` calls pytest.fail naming it under
CI=true, pytest.skip otherwise.
"""

import fcntl
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time

from tests.ovs_sandbox import SCHEMA_CANDIDATES, _decode, require  # noqa: F401
from tests.polling import wait_until

import json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK_PATH = "/run/lock/qos-hooks-e2e-host.lock"
QEMU_HOOK_SRC = os.path.join(REPO, "libvirt-hooks", "qemu.d", "50_qos_hooks")


def _hook_for_this_checkout():
    """The qemu hook as libvirtd must run it here: libvirtd gives hooks a bare
    environment (PATH, HOME, LC_ALL...; no PYTHONPATH), so the installed copy
    names this interpreter and this checkout itself, as an RPM-installed hook
    names the system python and finds the package in site-packages."""
    import hashlib
    import sys
    d = os.path.join(tempfile.gettempdir(),
                     "qos-hooks-e2e-%s" % hashlib.sha1(REPO.encode()).hexdigest()[:10])
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    with open(QEMU_HOOK_SRC) as f:
        body = f.read().split("\n", 1)[1]
    path = os.path.join(d, "50_qos_hooks")
    tmp = "%s.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("#!%s\nimport sys\nsys.path.insert(0, %r)\n%s" % (sys.executable, REPO, body))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path


QEMU_HOOK = _hook_for_this_checkout()
TOOLS = ("libvirtd", "qemu-system-x86_64", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
         "ovsdb-tool", "unshare", "mount", "ip", "tc")


class HostError(Exception):
    pass


def missing_requirement():
    if os.geteuid() != 0:
        return "needs root (libvirtd, taps, ovs-vswitchd in the root namespace)"
    for t in TOOLS:
        if shutil.which(t) is None:
            return "needs %s on PATH (see tests/install-deps.sh)" % t
    if not any(os.path.exists(p) for p in SCHEMA_CANDIDATES):
        return "needs vswitch.ovsschema (openvswitch-common)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if not os.path.isdir("/etc/libvirt"):
        return "needs /etc/libvirt (libvirt-daemon-system)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "needs the libvirt Python binding (pip install libvirt-python)"
    return None


def _root_ns_vswitchd_running():
    me = os.readlink("/proc/self/ns/net")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                if f.read().strip() != "ovs-vswitchd":
                    continue
            if os.readlink("/proc/%s/ns/net" % pid) == me:
                return True
        except OSError:
            continue
    return False


def _run(argv, check=True, timeout=30, env=None):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise HostError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                              (p.stderr or p.stdout).strip()))
    return p


QEMU_CONF = """\
# qos-hooks end-to-end test: libvirtd started by hand (FIELD_NOTES section 5)
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "file"
"""


class LibvirtdHost:
    def __init__(self, bridge="br-qh4", install_hook=True):
        self.dir = tempfile.mkdtemp(prefix="qh4-libvirtd-")
        self.bridge = bridge
        self.install_hook = install_hook
        self.db_sock = os.path.join(self.dir, "db.sock")
        self.remote = "unix:" + self.db_sock
        self.sock_dir = os.path.join(self.dir, "sock")
        self.uri = "qemu:///system?socket=%s/libvirt-sock" % self.sock_dir
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_DBDIR=self.dir)
        self.libvirtd = None
        self._conn = None
        self._ovs_started = False
        self.taps_before = set(_taps())

    # -- OVS -------------------------------------------------------------------
    def vsctl(self, *args, timeout=20, check=True):
        argv = ["ovs-vsctl", "--db=" + self.remote, "--timeout=%d" % timeout] + list(args)
        p = _run(argv, check=check, timeout=timeout + 5, env=self.env)
        return p.stdout if check else p

    def rows(self, table, *columns):
        argv = ["--format=json", "--data=json"]
        if columns:
            argv.append("--columns=" + ",".join(columns))
        out = json.loads(self.vsctl(*(argv + ["list", table])))
        return [{h: _decode(v) for h, v in zip(out["headings"], r)} for r in out["data"]]

    def _start_ovs(self):
        schema = next(p for p in SCHEMA_CANDIDATES if os.path.exists(p))
        db = os.path.join(self.dir, "conf.db")
        _run(["ovsdb-tool", "create", db, schema], env=self.env)
        _run(["ovsdb-server", db, "--remote=punix:" + self.db_sock,
              "--pidfile=" + os.path.join(self.dir, "ovsdb-server.pid"),
              "--unixctl=" + os.path.join(self.dir, "ovsdb-server.ctl"),
              "--log-file=" + os.path.join(self.dir, "ovsdb-server.log"),
              "--detach", "--no-chdir"], env=self.env)
        self._ovs_started = True
        _wait_for(lambda: os.path.exists(self.db_sock), "ovsdb-server socket")
        self.vsctl("--no-wait", "init")
        _run(["ovs-vswitchd", self.remote,
              "--pidfile=" + os.path.join(self.dir, "ovs-vswitchd.pid"),
              "--unixctl=" + os.path.join(self.dir, "ovs-vswitchd.ctl"),
              "--log-file=" + os.path.join(self.dir, "ovs-vswitchd.log"),
              "--detach", "--no-chdir"], env=self.env)
        self.vsctl("add-br", self.bridge, "--", "set", "Bridge", self.bridge,
                   "datapath_type=netdev")

    # -- libvirtd ----------------------------------------------------------------
    def _prepare_libvirt_dirs(self):
        etc = os.path.join(self.dir, "etc-libvirt")
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        with open(os.path.join(etc, "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
            f.write('unix_sock_dir = "%s"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
                    'log_outputs = "1:file:%s/libvirtd.log"\nlog_filters = '
                    '"1:qemu.qemu_process 1:util.hook 1:util.command 3:*"\n'
                    % (self.sock_dir, self.dir))
        hooks = os.path.join(etc, "hooks")
        if os.path.isdir(hooks):
            shutil.rmtree(hooks)
        os.makedirs(os.path.join(hooks, "qemu.d"))
        if self.install_hook:
            dst = os.path.join(hooks, "qemu.d", "50_qos_hooks")
            shutil.copy2(QEMU_HOOK, dst)
            os.chmod(dst, 0o755)
        self.hook_dir = os.path.join(hooks, "qemu.d")
        os.makedirs(self.sock_dir)
        for d in ("var-lib", "var-log", "var-cache", "run"):
            os.makedirs(os.path.join(self.dir, d))
        os.makedirs(os.path.join(self.dir, "var-log", "qemu"))
        return etc

    def _start_libvirtd(self):
        self._etc = self._prepare_libvirt_dirs()
        self._launch_libvirtd()

    def _launch_libvirtd(self):
        etc = self._etc
        d = self.dir
        if os.path.exists(os.path.join(d, "run", "openvswitch", "db.sock")):
            os.unlink(os.path.join(d, "run", "openvswitch", "db.sock"))
        script = " && ".join([
            "mount --make-rprivate /",
            "mount --bind %s /etc/libvirt" % etc,
            "mount --bind %s/run /run" % d,
            "mkdir -p /run/openvswitch /run/libvirt",
            "ln -s %s /run/openvswitch/db.sock" % self.db_sock,
            "mount --bind %s/var-lib /var/lib/libvirt" % d,
            "mount --bind %s/var-log /var/log/libvirt" % d,
            "mkdir -p /var/cache/libvirt && mount --bind %s/var-cache /var/cache/libvirt" % d,
            "exec libvirtd --config %s/libvirtd.conf --pid-file %s/libvirtd.pid"
            % (etc, d),
        ])
        log = open(os.path.join(d, "libvirtd.stderr"), "wb")
        self.libvirtd = subprocess.Popen(["unshare", "--mount", "sh", "-c", script],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        log.close()
        sock = os.path.join(self.sock_dir, "libvirt-sock")

        def up():
            if self.libvirtd.poll() is not None:
                raise HostError("libvirtd exited %s: %s" % (self.libvirtd.returncode,
                                                            self.log("libvirtd.stderr")))
            return os.path.exists(sock)
        _wait_for(up, "libvirtd socket %s" % sock, timeout=30)

    def stop_libvirtd(self):
        """Stop libvirtd only: its qemu guests keep running, OVS stays."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        self._stop_libvirtd()

    def relaunch_libvirtd(self):
        """Start libvirtd again, in a new mount namespace over the same private
        directories: it reconnects to the running guests (the qemu hook's
        ``reconnect`` operation)."""
        self._launch_libvirtd()

    def start(self):
        # One root-namespace host at a time on this machine: parallel test
        # runs (several checkouts) wait here instead of failing on a busy
        # ovs-netdev tap or a second vswitchd in the root namespace.
        self._lock = open(LOCK_PATH, "a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        if _root_ns_vswitchd_running():
            self._lock.close()
            self._lock = None
            raise HostError("an ovs-vswitchd already runs in the root network namespace")
        try:
            self._start_ovs()
            self._start_libvirtd()
        except BaseException:
            self.stop()
            raise
        return self

    def conn(self):
        import libvirt
        if self._conn is None:
            self._conn = libvirt.open(self.uri)
        return self._conn

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self._conn is not None:
            try:
                for dom in self._conn.listAllDomains():
                    try:
                        if dom.isActive():
                            dom.destroy()
                        if dom.isPersistent():
                            dom.undefine()
                    except Exception:
                        pass
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        self._stop_libvirtd()
        _kill_qemus(self.dir)
        if self._ovs_started:
            for name in ("ovs-vswitchd", "ovsdb-server"):
                _stop_pidfile(os.path.join(self.dir, name + ".pid"))
            self._ovs_started = False
        for dev in ["ovs-netdev", self.bridge] + sorted(set(_taps()) - self.taps_before):
            _run(["ip", "link", "del", dev], check=False)
        if not os.environ.get("QH4_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.close()          # releases the flock

    def _stop_libvirtd(self):
        if self.libvirtd is not None:
            if self.libvirtd.poll() is None:
                self.libvirtd.terminate()
                try:
                    self.libvirtd.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.libvirtd.kill()
                    self.libvirtd.wait(timeout=10)
            self.libvirtd = None
        for name in os.listdir(self.sock_dir) if os.path.isdir(self.sock_dir) else ():
            try:
                os.unlink(os.path.join(self.sock_dir, name))
            except OSError:
                pass


def _taps():
    return [os.path.basename(p) for p in glob.glob("/sys/class/net/vnet*")]


def _kill_qemus(marker):
    """Kill qemu processes libvirtd left behind (their pid files sit below marker)."""
    for pidfile in glob.glob(os.path.join(marker, "run", "libvirt", "qemu", "*.pid")):
        _stop_pidfile(pidfile, timeout=5)


def _stop_pidfile(path, timeout=10):
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    time.sleep(0.2)


def _wait_for(pred, what, timeout=10):
    return wait_until(pred, what, timeout, error=HostError)


def domain_xml(name, uuid, mac, bridge="br-qh4", bandwidth=None, nics=1):
    """A tiny TCG guest: no disk, no boot media; it only has to reach 'running'."""
    ifaces = []
    for i in range(nics):
        m = mac if nics == 1 else mac[:-2] + "%02x" % i
        bw = ("\n      <bandwidth>%s</bandwidth>" % bandwidth) if bandwidth else ""
        ifaces.append("""    <interface type='bridge'>
      <mac address='%s'/>
      <source bridge='%s'/>
      <virtualport type='openvswitch'/>
      <model type='e1000'/>%s
    </interface>""" % (m, bridge, bw))
    return """<domain type='qemu'>
  <name>%s</name>
  <uuid>%s</uuid>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
%s
  </devices>
</domain>
""" % (name, uuid, "\n".join(ifaces))
