"""The root helper's edge, fed as a hostile vdsm-user process would feed it
(issue 9 items 3, 4, 5, 7 at the helper; items 1-2 are in
tests/ovs/test_ovs_ownership.py).

* hypothesis-generated requests: every string field with a trailing newline,
  carriage return, NUL, U+2028 ... and arbitrary text; integers as huge
  digit strings: refused with exit code 4 and a one-line message, or, when
  accepted, every field matched as a whole;
* the real executable against a real ovsdb-server (tests/ovs_sandbox.py):
  each hostile request exits 4 with its message and the OVSDB rows are equal
  before and after;
* the helper's bound: a caller that keeps stdin open, a FIFO at the config
  path, a config or config directory that someone else than root can write.
"""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from qos_hooks.priv import protocol as privproto
from qos_hooks.priv.protocol import RequestError, parse_request
from tests.callers import hold_stdin_open
from tests.ovs_sandbox import require

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(REPO, "libexec", "qos-hooks-helper")
UUID = "6b1f9c1e-2f4a-4c3e-9a57-1d2f3b4c5d6e"
MAC = "52:54:00:6b:1f:01"


def request(uuid=UUID, name="web01", mac=MAC, dev="vnet0", average=1000, burst=None):
    inbound = {"average": average}
    if burst is not None:
        inbound["burst"] = burst
    return {"version": 1, "action": "apply",
            "domain": {"uuid": uuid, "name": name,
                       "interfaces": [{"mac": mac, "target_dev": dev,
                                       "bandwidth": {"inbound": inbound}}]}}


def enc(obj):
    return json.dumps(obj).encode()


# -- item 3: every field matched whole --------------------------------------------------

ENDINGS = ["\n", "\r\n", "\r", "\x00", " ", "\t", "\u2028", "\x85", "\x0b"]
FIELDS = {"uuid": ("domain.uuid", "not a UUID"),
          "mac": ("domain.interfaces[0].mac", "not a MAC address"),
          "dev": ("domain.interfaces[0].target_dev", "not a device name"),
          "name": ("domain.name", "not a valid domain name")}
GOOD = {"uuid": UUID, "mac": MAC, "dev": "vnet0", "name": "web01"}


# a space may end a libvirt domain name; every other ending is refused everywhere
TRAILING = [(f, e) for f in sorted(FIELDS) for e in ENDINGS if not (f == "name" and e == " ")]


@pytest.mark.parametrize("field,ending", TRAILING,
                         ids=["%s-%r" % (f, e) for f, e in TRAILING])
def test_trailing_characters_are_refused(field, ending):
    """A trailing newline used to pass (re.match with '$'), and would have
    been written into external_ids."""
    where, why = FIELDS[field]
    with pytest.raises(RequestError) as e:
        parse_request(enc(request(**{field: GOOD[field] + ending})))
    assert str(e.value).startswith("request refused: %s: %s" % (where, why)), str(e.value)


def _text_around(valid):
    return st.one_of(
        st.tuples(st.sampled_from([""] + ENDINGS), st.sampled_from([""] + ENDINGS)).map(
            lambda t: t[0] + valid + t[1]),
        st.text(max_size=24))


def _integers():
    return st.one_of(st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                     st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
                     st.text(max_size=6))


@settings(max_examples=300, deadline=None)
@given(uuid=_text_around(UUID), name=_text_around("web01"), mac=_text_around(MAC),
       dev=_text_around("vnet0"), average=_integers(), burst=st.one_of(st.none(), _integers()))
def test_generated_requests_are_refused_or_whole(uuid, name, mac, dev, average, burst):
    req = request(uuid, name, mac, dev, average, burst)
    data = enc(req)
    for k in ("average", "burst"):   # digit strings go in as bare JSON integers
        v = average if k == "average" else burst
        if isinstance(v, str) and v.isdigit() and v.isascii():
            data = data.replace(json.dumps(v).encode(), v.encode(), 1)
    try:
        action, dq, _ = parse_request(data)
    except RequestError as e:
        msg = str(e)
        assert msg.startswith("request refused: ")
        assert len(msg) < 300           # a 6000-digit value is not echoed back
        return
    assert action == "apply"
    assert privproto.UUID_RE.fullmatch(dq.uuid) and dq.uuid == uuid.lower()
    i = dq.interfaces[0]
    assert privproto.MAC_RE.fullmatch(i.mac) and privproto.DEV_RE.fullmatch(i.target_dev)
    assert privproto.NAME_RE.fullmatch(dq.name) and dq.name.isprintable()
    assert i.bandwidth.inbound.average < 2 ** 32


def test_five_thousand_digit_integer_is_refused():
    data = enc(request()).replace(b'"average": 1000', b'"average": ' + b"9" * 5000)
    with pytest.raises(RequestError) as e:
        parse_request(data)
    assert str(e.value) == "request refused: stdin: integer with 5000 digits (at most 20)"


def test_burst_below_one_mtu_is_refused():
    """issue 9 item 10 at the helper: a 1 KiB burst cannot pass a 1500-byte frame."""
    with pytest.raises(RequestError) as e:
        parse_request(enc(request(burst=1)))
    assert "inbound burst of 1 KiB is below one MTU (1500 bytes)" in str(e.value)


# -- the executable, against a real ovsdb-server ----------------------------------------

def _require_root():
    if os.geteuid() != 0:
        require("needs root: the helper refuses to run as another user")


def run_helper(data, env, timeout=60):
    e = dict(os.environ, PYTHONPATH=REPO)
    e.pop("SUDO_UID", None)
    e.update(env)
    return subprocess.run([HELPER], input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=e, timeout=timeout)


def write_config(path, remote, timeout=1):
    path.write_text("[settings]\novsdb = %s\novsdb_timeout = %s\n" % (remote, timeout))
    os.chmod(path, 0o644)
    return {"QOS_HOOKS_CONFIG": str(path)}


def ovsdb_rows(sb):
    """What a request could change, without the counters OVS updates itself."""
    return (sb.vsctl("list", "QoS"), sb.vsctl("list", "Queue"),
            sb.vsctl("--columns=name,qos,external_ids", "list", "Port"),
            sb.vsctl("--columns=name,ingress_policing_rate,ingress_policing_burst,external_ids",
                     "list", "Interface"))


HOSTILE = {
    "uuid + newline": (enc(request(uuid=UUID + "\n")), "domain.uuid: not a UUID"),
    "mac + newline": (enc(request(mac=MAC + "\n")), "domain.interfaces[0].mac: not a MAC"),
    "dev + newline": (enc(request(dev="vnet0\n")), "target_dev: not a device name"),
    "name + newline": (enc(request(name="web01\n")), "domain.name: not a valid domain name"),
    "name with U+2028": (enc(request(name="web\u2028ERROR")), "domain.name: not a valid"),
    "5000 digits": (enc(request()).replace(b"1000", b"9" * 5000, 1),
                    "stdin: integer with 5000 digits (at most 20)"),
    "burst below MTU": (enc(request(burst=1)), "inbound burst of 1 KiB is below one MTU"),
}


def test_executable_refuses_hostile_requests_and_ovsdb_is_unchanged(ovs_sandbox, tmp_path):
    _require_root()
    ovs_sandbox.add_tap_port("vnet0", external_ids={"attached-mac": MAC, "vm-id": UUID})
    env = write_config(tmp_path / "qos-hooks.conf", ovs_sandbox.remote, timeout=5)
    before = ovsdb_rows(ovs_sandbox)
    for name, (data, needle) in HOSTILE.items():
        p = run_helper(data, env)
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 4, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and " ERROR " in lines[0], (name, err)
        assert "request refused: " in lines[0] and needle in lines[0], (name, lines[0])
        assert ovsdb_rows(ovs_sandbox) == before, name


def test_caller_keeping_stdin_open_is_bounded(ovs_sandbox, tmp_path):
    """The helper used to read stdin before its watchdog existed: a caller that
    never closes stdin kept a root process alive for ever.  Now it ends at
    ovsdb_timeout + 1 s (exit 5), with a live OVSDB, having changed nothing."""
    _require_root()
    ovs_sandbox.add_tap_port("vnet0", external_ids={"attached-mac": MAC, "vm-id": UUID})
    env = dict(os.environ, PYTHONPATH=REPO,
               **write_config(tmp_path / "qos-hooks.conf", ovs_sandbox.remote, timeout=1))
    before = ovsdb_rows(ovs_sandbox)
    # half a request, then nothing
    rc, _, _, err = hold_stdin_open([HELPER], enc(request())[:20], env)
    assert rc == 5, err
    assert "helper bound of 2.0s exceeded: exiting" in err
    assert ovsdb_rows(ovs_sandbox) == before


def test_fifo_at_the_config_path_is_refused_not_waited_on(tmp_path):
    """open() of a FIFO blocks until a writer comes: the helper (and every
    hook) used to hang there.  Now: exit 3, "not a regular file"."""
    _require_root()
    fifo = tmp_path / "qos-hooks.conf"
    os.mkfifo(fifo)
    try:
        p = run_helper(enc(request()), {"QOS_HOOKS_CONFIG": str(fifo)}, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the helper blocked on the FIFO")
    err = p.stderr.decode()
    assert p.returncode == 3, err
    assert "%s: not a regular file (a FIFO, socket, device or directory)" % fifo in err


@pytest.mark.parametrize("how,needle", [
    ("file owned by vdsm", "owned by uid 36, not root"),
    ("file world-writable", "writable by everyone (mode 0666)"),
    ("file group-writable by kvm", "writable by group 36 (mode 0664)"),
    ("directory owned by vdsm", "its directory %(dir)s is owned by uid 36, not root"),
    ("directory world-writable", "its directory %(dir)s is writable by everyone (mode 1777)"),
])
def test_config_writable_by_others_than_root_is_refused(tmp_path, how, needle):
    """A vdsm-writable config could point the root helper at a vdsm-owned
    socket (ovsdb = unix:/var/tmp/evil.sock).  Refused like sudo and sshd
    refuse such files: exit 3, before any connection."""
    _require_root()
    d = tmp_path / "etc"
    d.mkdir()
    os.chmod(d, 0o755)
    conf = d / "qos-hooks.conf"
    env = write_config(conf, "unix:%s" % (tmp_path / "evil.sock"))
    if how == "file owned by vdsm":
        os.chown(conf, 36, 36)
    elif how == "file world-writable":
        os.chmod(conf, 0o666)
    elif how == "file group-writable by kvm":
        os.chown(conf, 0, 36)
        os.chmod(conf, 0o664)
    elif how == "directory owned by vdsm":
        os.chown(d, 36, 36)
    else:
        os.chmod(d, 0o1777)
    data = conf.read_bytes()
    p = run_helper(enc(request()), env)
    err = p.stderr.decode()
    assert p.returncode == 3, err
    assert "%s: refusing a config file that is not root's alone: " % conf in err
    assert needle % {"dir": d} in err
    assert "evil.sock" not in err.split("refusing")[0]
    assert conf.read_bytes() == data


def test_root_owned_config_still_works(tmp_path):
    """The control: the same config, root's alone, reaches its (dead) remote: exit 5."""
    _require_root()
    d = tmp_path / "etc"
    d.mkdir()
    os.chmod(d, 0o755)
    env = write_config(d / "qos-hooks.conf", "unix:%s" % (tmp_path / "no.sock"))
    p = run_helper(enc(request()), env)
    assert p.returncode == 5, p.stderr
    assert b"no.sock" in p.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
