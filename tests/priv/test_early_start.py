"""The root helper started before its request (qos_hooks.priv.client.prestart).

A VDSM OVS hook starts the helper first and writes the request once its XML
is parsed.  While stdin is empty the helper imports the backend and opens
its OVSDB connection; these tests hold the request back until that
connection exists (a socket in /proc/PID/fd) and check, on a real
ovsdb-server + ovs-vswitchd (tests/ovs_sandbox.py):

* a valid request then applies, through the connection opened ahead;
* stdin closed empty: exit 0, no message, nothing written;
* a hostile request is still refused whole (exit 4), nothing written;
* OVSDB down: silent for an empty stdin, exit 5 for a valid request.

And the client side: ``prestart`` starts a helper only for a regular data
file that mentions openvswitch, never blocks on a FIFO, and ``release``
reaps a helper it never used.
"""

import os
import subprocess
import time

import pytest

from qos_hooks.priv import client as privclient
from tests.priv.test_hostile_helper import (HELPER, MAC, REPO, UUID, _require_root, enc,
                                            ovsdb_rows, request, write_config)


def _sockets(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                n += 1
        except OSError:
            continue
    return n


def start_helper(env, argv_prefix=()):
    e = dict(os.environ, PYTHONPATH=REPO)
    e.pop("SUDO_UID", None)
    e.update(env)
    return subprocess.Popen(list(argv_prefix) + [HELPER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)


def wait_connected(p, timeout=30):
    """Until the waiting helper holds its OVSDB socket (it has read nothing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert p.poll() is None, p.stderr.read()
        if _sockets(p.pid):
            return
        time.sleep(0.01)
    raise AssertionError("the helper opened no OVSDB connection while waiting")


def finish(p, data):
    out, err = p.communicate(data, timeout=60)
    return p.returncode, err.decode()


@pytest.fixture
def connected_helper(ovs_sandbox, tmp_path):
    """start(timeout): the helper started early against the sandbox switch
    (vnet0 is the VM's port), in the switch's netns (verification reads tc
    there), holding its OVSDB connection and waiting for its request.
    Returns (process, the OVSDB rows before)."""
    _require_root()
    sb = ovs_sandbox
    sb.add_tap_port("vnet0", external_ids={"attached-mac": MAC, "vm-id": UUID})

    def start(timeout=10):
        env = write_config(tmp_path / "qos-hooks.conf", sb.remote, timeout=timeout)
        before = ovsdb_rows(sb)
        p = start_helper(env, sb.ns_argv([]))
        wait_connected(p)
        return p, before
    return start


def test_a_request_after_the_connection_applies_through_it(ovs_sandbox, connected_helper):
    sb = ovs_sandbox
    p, before = connected_helper()
    assert ovsdb_rows(sb) == before           # connecting ahead writes nothing
    rc, err = finish(p, enc(request(average=1000)))
    assert rc == 0, err
    assert "ERROR" not in err
    qos = sb.vsctl_json("QoS", "_uuid", "external_ids")
    assert len(qos) == 1 and qos[0]["external_ids"].get("qos-hooks-vm-id") == UUID, qos
    port = sb.vsctl_json("Port", "qos", where=["name=vnet0"])
    assert port[0]["qos"] == qos[0]["_uuid"], (port, qos)


def test_stdin_closed_empty_is_no_request(ovs_sandbox, connected_helper):
    p, before = connected_helper()
    rc, err = finish(p, b"")
    assert (rc, err) == (0, "")
    assert ovsdb_rows(ovs_sandbox) == before


def test_hostile_request_after_the_connection_is_refused(ovs_sandbox, connected_helper):
    p, before = connected_helper()
    rc, err = finish(p, enc(request(dev="vnet0;reboot")))
    assert rc == 4, err
    assert "request refused: " in err and "not a device name" in err
    assert ovsdb_rows(ovs_sandbox) == before


def test_ovsdb_down_matters_only_to_a_request(tmp_path):
    """The early connection fails (no socket); the helper says so only if a
    valid request needs OVSDB: exit 0 and silence for an empty stdin, exit 5
    naming the socket for a request, exit 4 for a hostile one."""
    _require_root()
    env = write_config(tmp_path / "qos-hooks.conf", "unix:%s" % (tmp_path / "no.sock"))
    for data, code, needle in ((b"", 0, None), (enc(request()), 5, "no.sock"),
                               (enc(request(mac=MAC + "\n")), 4, "not a MAC")):
        p = start_helper(env)
        time.sleep(0.5)           # past its imports and its failed connect, usually
        rc, err = finish(p, data)
        assert rc == code, err
        if needle is None:
            assert err == ""
        else:
            assert needle in err


# -- the client side -----------------------------------------------------------------

@pytest.fixture
def recording_helper(tmp_path):
    """A stand-in helper that writes what it read from stdin to a file."""
    record = tmp_path / "record"
    script = tmp_path / "fake-helper"
    script.write_text("#!/bin/sh\ncat > %s.part && mv %s.part %s\necho 'helper says hi' >&2\n"
                      % (record, record, record))
    script.chmod(0o755)
    env = {"QOS_HOOKS_HELPER": str(script), "QOS_HOOKS_SUDO": "0",
           "QOS_HOOKS_VIA_HELPER": "1"}
    return env, record


def test_prestart_only_for_a_regular_file_mentioning_openvswitch(tmp_path, recording_helper):
    env, record = recording_helper
    plain = tmp_path / "plain.xml"
    plain.write_text("<domain><devices><interface type='bridge'/></devices></domain>")
    ovs = tmp_path / "ovs.xml"
    ovs.write_text("<domain><devices><virtualport type='openvswitch'/></devices></domain>")
    fifo = tmp_path / "fifo.xml"
    os.mkfifo(fifo)
    assert privclient.prestart(dict(env, _hook_domxml=str(plain))) is None
    assert privclient.prestart(dict(env)) is None                 # no $_hook_domxml
    t0 = time.monotonic()
    assert privclient.prestart(dict(env, _hook_domxml=str(fifo))) is None   # not waited on
    assert time.monotonic() - t0 < 5
    # root and not told to use the helper: the backend runs in process
    if os.geteuid() == 0:
        no_helper = {k: v for k, v in env.items() if k != "QOS_HOOKS_VIA_HELPER"}
        assert privclient.prestart(dict(no_helper, _hook_domxml=str(ovs))) is None
    assert not record.exists()
    early = privclient.prestart(dict(env, _hook_domxml=str(ovs)))
    assert early is not None
    early.release()                     # never used: stdin closed empty, reaped
    assert early.proc.returncode == 0
    assert record.read_bytes() == b""


def test_run_helper_writes_the_request_to_the_early_helper(tmp_path, recording_helper):
    import logging
    from qos_hooks.core.desired import DomainQos, InterfaceQos
    from qos_hooks.core.policy import Bandwidth, Rate
    env, record = recording_helper
    ovs = tmp_path / "ovs.xml"
    ovs.write_text("<virtualport type='openvswitch'/>")
    early = privclient.prestart(dict(env, _hook_domxml=str(ovs)))
    dq = DomainQos(uuid=UUID, name="web01", interfaces=(InterfaceQos(
        mac=MAC, target_dev="vnet0", bandwidth=Bandwidth(inbound=Rate(average=1000))),))
    seen = []

    class Catch(logging.Handler):
        def emit(self, rec):
            seen.append(rec.getMessage())
    log = logging.getLogger("test-early")
    log.addHandler(Catch())
    log.setLevel(logging.INFO)
    privclient.run_helper("apply", dq, timeout=5, environ=env, logger=log, early=early)
    early.release()                     # taken: nothing more happens
    assert early.taken and early.proc.returncode == 0
    from qos_hooks.priv.protocol import parse_request
    action, got, _ = parse_request(record.read_bytes())
    assert action == "apply" and got.interfaces[0].bandwidth.inbound.average == 1000
    assert seen == ["helper: helper says hi"]


def test_a_missing_helper_is_reported_by_run_helper(tmp_path):
    from qos_hooks.core.desired import DomainQos
    from qos_hooks.core.errors import BackendUnavailable
    import logging
    env = {"QOS_HOOKS_HELPER": str(tmp_path / "no-such-helper"), "QOS_HOOKS_SUDO": "0",
           "QOS_HOOKS_VIA_HELPER": "1"}
    ovs = tmp_path / "ovs.xml"
    ovs.write_text("openvswitch")
    assert privclient.prestart(dict(env, _hook_domxml=str(ovs))) is None
    with pytest.raises(BackendUnavailable, match="cannot run .*no-such-helper"):
        privclient.run_helper("apply", DomainQos(uuid=UUID, name=None), timeout=1,
                              environ=env, logger=logging.getLogger("x"))


def test_a_late_request_gets_the_whole_bound(ovs_sandbox, connected_helper):
    """On a busy host the hook may take a while to parse: a request that comes
    after the OVSDB deadline of the early connection would have expired
    still gets a whole ovsdb_timeout for its work (and the watchdog a new
    bound), instead of failing at once."""
    p, _ = connected_helper(timeout=1)
    time.sleep(1.5)            # past the connection's 1 s deadline, within the 2 s bound
    rc, err = finish(p, enc(request(average=1000)))
    assert rc == 0, err
    assert ovs_sandbox.vsctl_json("Port", "qos", where=["name=vnet0"])[0]["qos"], err


def test_releasing_a_helper_that_will_not_exit_kills_it(tmp_path):
    """An unused early helper that ignores its closed stdin is killed (its
    whole process group) after RELEASE_WAIT, not waited on for ever."""
    script = tmp_path / "stuck-helper"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    script.chmod(0o755)
    ovs = tmp_path / "ovs.xml"
    ovs.write_text("openvswitch")
    env = {"QOS_HOOKS_HELPER": str(script), "QOS_HOOKS_SUDO": "0", "QOS_HOOKS_VIA_HELPER": "1",
           "_hook_domxml": str(ovs)}
    early = privclient.prestart(env)
    t0 = time.monotonic()
    early.release()
    took = time.monotonic() - t0
    assert privclient.RELEASE_WAIT <= took < privclient.RELEASE_WAIT + 5, took
    assert early.proc.returncode is not None and early.proc.returncode < 0   # killed
    assert not os.path.exists("/proc/%d" % early.proc.pid)


@pytest.mark.parametrize("remote,has_ssl", [("unix:/run/openvswitch/db.sock", False),
                                            ("tcp:127.0.0.1:6640", False),
                                            ("ssl:127.0.0.1:6640", True)])
def test_ssl_is_kept_out_only_for_a_non_ssl_remote(remote, has_ssl):
    import sys
    code = ("import sys\nfrom qos_hooks.ovs import ovsdb\novsdb.load_library(%r)\n"
            "import ovs.stream\n"
            "try:\n    import ssl\n    print('ssl')\nexcept ImportError:\n    print('none')\n"
            % remote)
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ("ssl" if has_ssl else "none")
