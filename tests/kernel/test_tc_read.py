"""The kernel read-back (qos_hooks.kernel.tc.read_ports over kernel.rtnl) against a
real kernel, with pyroute2 (an independent netlink reader) and the values given
to ``tc`` as oracles."""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from qos_hooks.core.errors import BackendUnavailable
from qos_hooks.kernel import tc as ktc
from tests.kernel.helpers import sh as _sh

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def ns():
    """A namespace with veths a0..a2 (peers b0..b2), up."""
    if os.geteuid() != 0 or shutil.which("tc") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: needs root and tc", pytrace=False)
        pytest.skip("needs root and tc")
    name = "qhrt-%s" % uuid.uuid4().hex[:6]
    _sh("ip", "netns", "add", name)
    try:
        for i in range(3):
            _sh("ip", "-n", name, "link", "add", "a%d" % i, "type", "veth", "peer", "name", "b%d" % i)
            _sh("ip", "-n", name, "link", "set", "a%d" % i, "up")
            _sh("ip", "-n", name, "link", "set", "b%d" % i, "up")
        yield name
    finally:
        _sh("ip", "netns", "del", name, check=False)


def tc(ns, *args):
    return _sh("ip", "netns", "exec", ns, "tc", *args)


def ovs_like(ns, dev, top, leaf, leaf_ceil, burst="256kb", default="1"):
    """ovs-vswitchd's linux-htb layout (lib/netdev-linux.c htb_tc_install)."""
    tc(ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", default)
    tc(ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:fffe", "htb",
       "rate", top, "ceil", top)
    tc(ns, "class", "add", "dev", dev, "parent", "1:fffe", "classid", "1:1", "htb",
       "rate", leaf, "ceil", leaf_ceil, "burst", burst)


def pyroute2_read(ns, dev):
    """The same facts read with pyroute2 (the oracle)."""
    from pyroute2 import IPRoute
    with IPRoute(netns=ns) as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        classes = {}
        for c in ipr.get_classes(index=idx):
            opts = c.get_attr("TCA_OPTIONS")
            p = opts.get_attr("TCA_HTB_PARMS")
            classes[ktc.handle_str(c["handle"])] = (
                ktc.handle_str(c["parent"]), opts.get_attr("TCA_HTB_RATE64") or p["rate"],
                opts.get_attr("TCA_HTB_CEIL64") or p["ceil"])
        kinds = sorted(q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=idx))
        filters = [f for f in ipr.get_filters(index=idx, parent=ktc.INGRESS_HANDLE)
                   if f.get_attr("TCA_KIND")]
        return classes, kinds, len(filters)


@pytest.mark.root
def test_read_ports_matches_tc_and_pyroute2(ns):
    ovs_like(ns, "a0", "20mbit", "10mbit", "20mbit")
    # above 2^32-1 bytes/s: the kernel sends TCA_HTB_RATE64/CEIL64
    ovs_like(ns, "a1", "50gbit", "40gbit", "50gbit", default="2")
    tc(ns, "qdisc", "add", "dev", "a1", "ingress")
    tc(ns, "filter", "add", "dev", "a1", "parent", "ffff:", "protocol", "all", "u32",
       "match", "u32", "0", "0", "flowid", ":1")
    tc(ns, "qdisc", "add", "dev", "a2", "ingress")
    before = os.readlink("/proc/thread-self/ns/net")
    got = ktc.read_ports(["a0", "a1", "a2", "b0", "nosuch0"], netns=ns)
    # the calling thread stays in its own namespace
    assert os.readlink("/proc/thread-self/ns/net") == before

    a0, a1, a2 = got["a0"], got["a1"], got["a2"]
    assert a0.exists and a0.root_kind == "htb" and a0.root_handle == "1:0"
    assert a0.htb_default == 1 and not a0.ingress and a0.ingress_filters == 0
    assert (a0.classes["1:fffe"].rate, a0.classes["1:fffe"].ceil) == (2500000, 2500000)
    assert (a0.classes["1:1"].rate, a0.classes["1:1"].ceil) == (1250000, 2500000)
    assert a0.classes["1:1"].parent == "1:fffe"
    # burst 256kb = 262144 bytes, stored by the kernel as a time: within 2 %
    assert abs(a0.classes["1:1"].burst - 262144) <= 262144 * 0.02
    # u32 dumps its hash table and key nodes: counted as pyroute2 counts them (below)
    assert a1.htb_default == 2 and a1.ingress and a1.ingress_filters >= 1
    assert (a1.classes["1:fffe"].rate, a1.classes["1:1"].rate) == (6250000000, 5000000000)
    assert a2.exists and a2.root_kind == "noqueue" and a2.ingress and a2.ingress_filters == 0
    assert got["b0"].exists and got["b0"].classes == {}
    assert not got["nosuch0"].exists

    for dev in ("a0", "a1", "a2"):
        classes, kinds, filters = pyroute2_read(ns, dev)
        mine = got[dev]
        assert {h: (c.parent, c.rate, c.ceil) for h, c in mine.classes.items()} == \
            {h: v for h, v in classes.items() if h in mine.classes}
        assert mine.root_kind in kinds and filters == mine.ingress_filters


@pytest.mark.root
def test_read_ports_many_devices_and_a_missing_namespace(ns):
    names = ["m%d" % i for i in range(150)]
    batch = "".join("link add %s type veth peer name %sp\n" % (n, n) for n in names)
    p = subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, universal_newlines=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr
    # more names than one RTM_GETLINK batch (kernel.rtnl.LINK_BATCH), interleaved with absent ones
    want = [x for n in names for x in (n, n + "-gone")]
    got = ktc.read_ports(want, netns=ns)
    assert [n for n in want if got[n].exists] == names
    with pytest.raises(BackendUnavailable):
        ktc.read_ports(["a0"], netns="qhrt-does-not-exist")


def test_read_ports_does_not_import_pyroute2():
    code = ("import sys; from qos_hooks.kernel import tc; tc.read_ports(['lo']); "
            "print('pyroute2' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"
