"""A private Open vSwitch for tests: ovsdb-server + ovs-vswitchd in a namespace.

Each sandbox runs ONE ovs-vswitchd (``datapath_type=netdev``) inside its own
network namespace, with its own temporary directory for the database, sockets,
pid files and logs.  It never touches /run/openvswitch or the root network
namespace, so several sandboxes (other engineers', other test processes) and a
root-namespace vswitchd (the libvirt end-to-end tests) coexist.

Why a namespace per switch: the userspace datapath creates a tap called
``ovs-netdev`` plus one per bridge and leaves them behind when it exits; a
second vswitchd in the same namespace fails with "Device or resource busy"
(FIELD_NOTES section 5).  ``restart_vswitchd`` therefore stops the daemon,
waits for it, deletes those taps, then starts it again.

Ports are veth pairs: the switch end sits in the switch namespace (and can be
named like a libvirt tap, ``vnet0``), the far end sits in a namespace of its
own (the "guest"), optionally with an IPv4 address.  TX checksum offload is
turned off on both ends, or TCP through the userspace datapath stalls.

Usage::

    from tests.ovs_sandbox import ovs_sandbox  # noqa: F401

    def test_x(ovs_sandbox):
        port = ovs_sandbox.add_port("vnet0", ip="10.0.0.2/24")
        ovs_sandbox.vsctl("list", "Port", "vnet0")
        ovs_sandbox.tc_json("qdisc", "show", "dev", "vnet0")
        ovs_sandbox.restart_vswitchd()
        ovs_sandbox.remote   # "unix:/tmp/qh3-.../db.sock", for the code under test

Names: every namespace is called ``<prefix>-<id>-...`` (prefix ``qh3`` by
default), so leftovers are easy to attribute and remove.

When something needed is missing (root, ``ip netns``, ovsdb-server,
ovs-vswitchd, ethtool...), the fixture calls ``pytest.fail`` naming it if the
environment has ``CI=true``, and ``pytest.skip`` naming it otherwise: it never
passes silently.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

SCHEMA_CANDIDATES = ("/usr/share/openvswitch/vswitch.ovsschema",
                     "/usr/local/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl",
         "ip", "tc", "ethtool")


def htb_rates(tc_class_text):
    """{classid: (rate bit/s, ceil bit/s)} from ``tc class show`` text (a test
    oracle: iproute2 here prints htb classes as text even with -j)."""
    out = {}
    for m in re.finditer(r"class htb (\S+) .*?rate (\S+) ceil (\S+)", tc_class_text):
        out[m.group(1)] = (_tc_bits(m.group(2)), _tc_bits(m.group(3)))
    return out


def _tc_bits(s):
    m = re.match(r"^([0-9.]+)([KMG]?)bit$", s)
    return int(float(m.group(1)) * {"": 1, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9}[m.group(2)])


class SandboxError(Exception):
    pass


def missing_requirement():
    """A sentence naming what is missing to run a sandbox, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, ovs-vswitchd)"
    for t in TOOLS:
        if shutil.which(t) is None:
            return "needs %s on PATH (Debian: openvswitch-switch, iproute2, ethtool; " \
                   "see tests/install-deps.sh)" % t
    if not any(os.path.exists(p) for p in SCHEMA_CANDIDATES):
        return "needs vswitch.ovsschema (openvswitch-common)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (ovs-vswitchd netdev datapath)"
    return None


def require(what=None):
    """Skip (or fail under CI=true) the current test when a piece is missing."""
    reason = what or missing_requirement()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true and a requirement is missing: %s" % reason, pytrace=False)
    pytest.skip(reason)


def _run(argv, check=True, timeout=30, env=None, input=None):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=timeout, env=env, input=input)
    if check and p.returncode != 0:
        raise SandboxError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                                 (p.stderr or p.stdout).strip()))
    return p


class OvsSandbox:
    """A private ovsdb-server + ovs-vswitchd (netdev datapath) in a namespace."""

    def __init__(self, prefix="qh3", bridge="br0", base_dir=None):
        self.id = uuid.uuid4().hex[:6]
        self.prefix = "%s-%s" % (prefix, self.id)
        self.bridge = bridge
        self.dir = tempfile.mkdtemp(prefix=self.prefix + "-", dir=base_dir)
        self.netns = self.prefix + "-sw"
        self.db_sock = os.path.join(self.dir, "db.sock")
        self.remote = "unix:" + self.db_sock
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_DBDIR=self.dir, OVS_SYSCONFDIR=self.dir, OVS_PKGDATADIR=self.dir)
        self.ports = {}            # port name -> peer namespace
        self.peer_namespaces = []
        self._started = False
        self._netns_created = False
        self._pids = {}

    # -- commands -----------------------------------------------------------
    def ns_argv(self, argv, netns=None):
        return ["ip", "netns", "exec", netns or self.netns] + list(argv)

    def ns(self, *argv, netns=None, check=True, timeout=30):
        """Run a command in the switch namespace (or ``netns``); return the result."""
        return _run(self.ns_argv(argv, netns), check=check, timeout=timeout, env=self.env)

    def vsctl(self, *args, check=True, timeout=20, wait=False):
        """Run ovs-vsctl against this sandbox's database; return stdout."""
        argv = ["ovs-vsctl", "--db=" + self.remote, "--timeout=%d" % timeout]
        if not wait:
            argv.append("--no-wait")
        p = _run(argv + list(args), check=check, timeout=timeout + 5, env=self.env)
        return p.stdout if check else p

    def vsctl_json(self, table, *columns, where=()):
        """``ovs-vsctl --format=json find/list TABLE``: a list of {column: value} dicts.

        Values are ovs-vsctl's JSON (["map", [[k, v]...]], ["set", [...]],
        ["uuid", "..."]) decoded to dict / list / str.
        """
        argv = ["--format=json", "--data=json"]
        if columns:
            argv.append("--columns=" + ",".join(columns))
        argv += (["find", table] + list(where)) if where else ["list", table]
        out = json.loads(self.vsctl(*argv))
        heads = out["headings"]
        return [{h: _decode(v) for h, v in zip(heads, row)} for row in out["data"]]

    def appctl(self, target, *args, check=True, timeout=10):
        argv = ["ovs-appctl", "--timeout=%d" % timeout, "-t", target] + list(args)
        return _run(argv, check=check, timeout=timeout + 5, env=self.env).stdout

    def tc_json(self, *args, netns=None):
        """``tc -j ARGS`` in the switch namespace: parsed JSON (qdiscs come as JSON)."""
        out = self.ns("tc", "-j", *args, netns=netns).stdout.strip()
        return json.loads(out) if out else []

    def tc_text(self, *args, netns=None):
        """``tc -s ARGS`` text (iproute2 here prints htb classes as text even with -j)."""
        return self.ns("tc", *args, netns=netns).stdout

    # -- lifecycle ----------------------------------------------------------
    def start(self):
        reason = missing_requirement()
        if reason:
            raise SandboxError(reason)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _schema(self):
        for p in SCHEMA_CANDIDATES:
            if os.path.exists(p):
                return p
        raise SandboxError("vswitch.ovsschema not found")

    def _start(self):
        _run(["ip", "netns", "add", self.netns])
        self._netns_created = True
        self.ns("ip", "link", "set", "lo", "up")
        db = os.path.join(self.dir, "conf.db")
        _run(["ovsdb-tool", "create", db, self._schema()], env=self.env)
        _run(["ovsdb-server", db, "--remote=punix:" + self.db_sock,
              "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
              "--pidfile=" + os.path.join(self.dir, "ovsdb-server.pid"),
              "--unixctl=" + os.path.join(self.dir, "ovsdb-server.ctl"),
              "--log-file=" + os.path.join(self.dir, "ovsdb-server.log"),
              "--detach", "--no-chdir"], env=self.env)
        self._started = True
        self._wait_for(lambda: os.path.exists(self.db_sock), "ovsdb-server socket")
        self.vsctl("init")
        self.start_vswitchd()
        self.vsctl("add-br", self.bridge, "--", "set", "Bridge", self.bridge,
                   "datapath_type=netdev", wait=True)

    def start_vswitchd(self):
        self.ns("ovs-vswitchd", self.remote,
                "--pidfile=" + os.path.join(self.dir, "ovs-vswitchd.pid"),
                "--unixctl=" + os.path.join(self.dir, "ovs-vswitchd.ctl"),
                "--log-file=" + os.path.join(self.dir, "ovs-vswitchd.log"),
                "--detach", "--no-chdir")
        # the daemon is up when it has caught up with the database
        self.vsctl("--", "set", "Open_vSwitch", ".", "external_ids:qh3-probe=1", wait=True)

    def _pid(self, name):
        try:
            with open(os.path.join(self.dir, name + ".pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return False     # exited, waiting for its (re)parent to reap it
        except (OSError, IndexError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover
            return True
        return True

    def _stop_daemon(self, name, timeout=10):
        pid = self._pid(name)
        if pid is None or not self._alive(pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.05)
        if self._alive(pid):
            os.kill(pid, signal.SIGKILL)
            self._wait_for(lambda: not self._alive(pid), "%s (pid %d) to die" % (name, pid))

    def stop_vswitchd(self):
        """Stop ovs-vswitchd, wait for it, delete the taps it leaves behind."""
        self._stop_daemon("ovs-vswitchd")
        if self._netns_created:
            for dev in ("ovs-netdev", self.bridge):
                self.ns("ip", "link", "del", dev, check=False)

    def restart_vswitchd(self):
        self.stop_vswitchd()
        self.start_vswitchd()

    def stop_ovsdb(self):
        """Stop ovsdb-server (for "OVSDB down" tests); the socket file goes too."""
        self._stop_daemon("ovsdb-server")

    def pause_ovsdb(self):
        """SIGSTOP ovsdb-server: it accepts connections and never answers."""
        os.kill(self._pid("ovsdb-server"), signal.SIGSTOP)

    def resume_ovsdb(self):
        os.kill(self._pid("ovsdb-server"), signal.SIGCONT)

    def stop(self):
        pid = self._pid("ovsdb-server")
        if pid is not None and self._alive(pid):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.stop_vswitchd()
        self._stop_daemon("ovsdb-server")
        for ns in self.peer_namespaces:
            _run(["ip", "netns", "del", ns], check=False)
        self.peer_namespaces = []
        if self._netns_created:
            _run(["ip", "netns", "del", self.netns], check=False)
            self._netns_created = False
        if os.environ.get("QH3_KEEP_SANDBOX"):
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- ports --------------------------------------------------------------
    def add_veth(self, name, ip=None, mac=None, isolated=True):
        """A veth pair: ``name`` in the switch namespace, ``eth0`` in a new peer
        namespace (returned).  Not yet a port of the bridge.

        ``isolated=False``: no peer namespace; the far end is ``<name>p`` in
        the switch namespace (cheap, for tests that need many ports and no
        traffic); returns the switch namespace."""
        if len(name) > 14:
            raise SandboxError("interface name too long: %r" % name)
        if not isolated:
            self.ns("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p")
            for dev in (name, name + "p"):
                self.ns("ip", "link", "set", dev, "up")
            self.ports[name] = self.netns
            return self.netns
        peer_ns = "%s-p%d" % (self.prefix, len(self.peer_namespaces))
        _run(["ip", "netns", "add", peer_ns])
        self.peer_namespaces.append(peer_ns)
        self.ns("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0",
                "netns", peer_ns)
        if mac:
            self.ns("ip", "link", "set", "eth0", "address", mac, netns=peer_ns)
        for dev, ns in ((name, self.netns), ("eth0", peer_ns)):
            self.ns("ethtool", "-K", dev, "tx", "off", netns=ns)
            self.ns("ip", "link", "set", dev, "up", netns=ns)
        self.ns("ip", "link", "set", "lo", "up", netns=peer_ns)
        if ip:
            self.ns("ip", "addr", "add", ip, "dev", "eth0", netns=peer_ns)
        self.ports[name] = peer_ns
        return peer_ns

    def add_tap_port(self, name, external_ids=None):
        """A tap device (what libvirt gives a VM) in the switch namespace, added
        to the bridge.  No process holds it open, so it has no carrier: good
        for OVSDB and tc checks, not for traffic."""
        self.ns("ip", "tuntap", "add", "dev", name, "mode", "tap")
        self.ns("ip", "link", "set", name, "up")
        self.ports[name] = self.netns
        args = ["add-port", self.bridge, name]
        if external_ids:
            args += ["--", "set", "Interface", name] + [
                "external_ids:%s=%s" % (k, _vsctl_quote(v)) for k, v in external_ids.items()]
        self.vsctl(*args, wait=True)

    def add_port(self, name, ip=None, mac=None, external_ids=None, wait=True, isolated=True):
        """A veth pair whose switch end ``name`` is added to the bridge.

        ``external_ids`` go on the Interface (e.g. ``{"attached-mac": mac}``, as
        libvirt and VDSM set them).  Returns the peer namespace."""
        peer_ns = self.add_veth(name, ip=ip, mac=mac, isolated=isolated)
        args = ["add-port", self.bridge, name]
        if external_ids:
            args += ["--", "set", "Interface", name] + [
                "external_ids:%s=%s" % (k, _vsctl_quote(v)) for k, v in external_ids.items()]
        self.vsctl(*args, wait=wait)
        return peer_ns

    def del_port(self, name, delete_link=True):
        self.vsctl("--if-exists", "del-port", self.bridge, name, wait=True)
        if delete_link:
            self.ns("ip", "link", "del", name, check=False)

    # -- helpers ------------------------------------------------------------
    def _wait_for(self, predicate, what, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise SandboxError("timed out waiting for %s (logs in %s)" % (what, self.dir))

    def wait_for(self, predicate, what, timeout=10):
        self._wait_for(predicate, what, timeout)

    def log(self, daemon="ovs-vswitchd"):
        try:
            with open(os.path.join(self.dir, daemon + ".log")) as f:
                return f.read()
        except OSError:
            return ""


def _vsctl_quote(v):
    v = str(v)
    if any(c in v for c in ' :,="{}[]'):
        return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')
    return v


def _decode(v):
    """ovs-vsctl --data=json value -> dict / list / str / int."""
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
        tag, body = v
        if tag == "map":
            return {k: _decode(x) for k, x in body}
        if tag == "set":
            return [_decode(x) for x in body]
        if tag in ("uuid", "named-uuid"):
            return body
    return v


@contextlib.contextmanager
def running_sandbox(**kwargs):
    """A started OvsSandbox(**kwargs), stopped on the way out; a sandbox that
    cannot start is reported through ``require`` (CI fails, naming it)."""
    require()
    sb = OvsSandbox(**kwargs)
    try:
        sb.start()
    except SandboxError as e:
        require("OVS sandbox could not start: %s" % e)
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def ovs_sandbox():
    """A started OvsSandbox (bridge ``br0``, netdev datapath); stopped afterwards."""
    with running_sandbox() as sb:
        yield sb
