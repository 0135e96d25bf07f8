"""Issue 14: per-vNIC metrics (Prometheus, textfile), ``qos-hooks top``, the systemd timer.

One OVS sandbox for the module (tests/ovs_sandbox.py, netdev datapath in a
namespace): ``vnet0`` is the limited VM port (qos-hooks' mapping, VM inbound
average 1000 KB/s = 8 Mbit/s), ``vnet1`` the remote end, a veth ``vnet9``
carries the tc libvirt puts on a Linux-bridge tap, ``qh14up`` is an uplink
with a host network queue.  iperf3 pushes TCP from the remote into the VM
(VM inbound, shaped by the port's htb: this kernel has no ``police`` action, so
the VM-outbound policer is written to OVSDB but not enforced, FIELD_NOTES
section 5).  Oracles: promtool, a real Prometheus server, tmux, ovs-vsctl.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from qos_hooks.hostnet import ovs as hostnet_ovs
from qos_hooks.observe import metrics
from qos_hooks.ovs import backend as ovs_backend
from qos_hooks.core.desired import DomainQos, InterfaceQos
from qos_hooks.core.policy import Bandwidth, Rate
from tests.ovs_sandbox import require, running_sandbox
from tests.polling import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VM_IP, REMOTE_IP = "10.14.0.2", "10.14.0.3"
MAC = "52:54:00:14:00:02"
TAP_MAC = "52:54:00:14:00:09"
UUID = "14141414-0000-4000-8000-000000000001"
DOMAIN = "qh14-vm"
AVERAGE = 1000                 # libvirt KB/s: 8 Mbit/s
AVERAGE_BYTES = AVERAGE * 1000
UPLINK, HOSTNET = "qh14up", "qh14net"
HOSTNET_UL = 20 * 10 ** 6      # bit/s

DOMAIN_XML = """<domain type='kvm'>
  <name>%s</name>
  <uuid>%s</uuid>
  <devices>
    <interface type='bridge'>
      <mac address='%s'/>
      <source bridge='br0'/>
      <virtualport type='openvswitch'/>
      <target dev='vnet0'/>
      <bandwidth><inbound average='%d'/></bandwidth>
    </interface>
    <interface type='bridge'>
      <mac address='%s'/>
      <source bridge='virbr14'/>
      <target dev='vnet9'/>
      <bandwidth><inbound average='500' peak='1000' burst='64'/><outbound average='250'/></bandwidth>
    </interface>
  </devices>
</domain>
""" % (DOMAIN, UUID, MAC, AVERAGE, TAP_MAC)


def _need(*tools):
    for t in tools:
        if shutil.which(t) is None:
            require("needs %s (Debian package %s; tests/install-deps.sh)" % (
                t, {"promtool": "prometheus", "prometheus": "prometheus"}.get(t, t)))


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _env(extra=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra or {})
    return e


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The sandbox with the limited port, the libvirt-style tap and a host network."""
    tmp = tmp_path_factory.mktemp("qh14")
    with running_sandbox(prefix="qh14") as sb:
        sb.add_port("vnet0", ip=VM_IP + "/24", mac=MAC,
                    external_ids={"attached-mac": MAC, "vm-id": UUID})
        sb.add_port("vnet1", ip=REMOTE_IP + "/24")
        dq = DomainQos(UUID, DOMAIN, (InterfaceQos(MAC, "vnet0", Bandwidth(
            inbound=Rate(average=AVERAGE))),))
        ovs_backend.apply_domain(dq, remote=sb.remote, timeout=20, netns=sb.netns)
        # what libvirt's virNetDevBandwidthSet puts on a Linux-bridge tap
        # (htb default 1, class 1:1 rate average ceil peak burst; ingress qdisc)
        sb.add_veth("vnet9", isolated=False)
        sb.ns("tc", "qdisc", "add", "dev", "vnet9", "root", "handle", "1:", "htb", "default", "1")
        sb.ns("tc", "class", "add", "dev", "vnet9", "parent", "1:", "classid", "1:1", "htb",
              "rate", "500kbps", "ceil", "1000kbps", "burst", "64kb")
        sb.ns("tc", "qdisc", "add", "dev", "vnet9", "ingress")
        # a host network queue on an OVS uplink (qos_hooks.hostnet.ovs)
        sb.add_port(UPLINK, isolated=False)
        applied = {HOSTNET: {"hostQos": {"out": {"ul": {"m2": HOSTNET_UL},
                                                  "ls": {"m2": 10}}},
                             "uplink": UPLINK, "vlan": None}}
        hostnet_ovs.reconcile(applied, [UPLINK], sb.remote, 20)
        state = tmp / "hostnet.json"
        state.write_text(json.dumps({"version": 1, "pending": {}, "applied": applied}))
        xml = tmp / "domain.xml"
        xml.write_text(DOMAIN_XML)
        sb.obs_args = ["--ovsdb", sb.remote, "--netns", sb.netns, "--domain-xml", str(xml)]
        sb.obs_env = _env({"QOS_HOOKS_HOSTNET_STATE": str(state)})
        sb.obs_state = str(state)
        sb.obs_xml = str(xml)
        yield sb


def qos_hooks(host, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "qos_hooks"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, env=host.obs_env)


def parse(text):
    """{(name, frozenset(labels)): value} from the text exposition format."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels):
    hits = [v for (n, lab), v in samples.items()
            if n == name and all((k, v2) in lab for k, v2 in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


@pytest.fixture(scope="module")
def traffic(host):
    """iperf3 TCP from the remote namespace into the VM (VM inbound) until teardown."""
    _need("iperf3")
    vm_ns, remote_ns = host.ports["vnet0"], host.ports["vnet1"]
    server = subprocess.Popen(host.ns_argv(["iperf3", "-s"], vm_ns),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    client = subprocess.Popen(host.ns_argv(["iperf3", "-c", VM_IP, "-t", "600"], remote_ns),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3.0)                # past the burst: the rate is the average now
    try:
        yield
    finally:
        for p in (client, server):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# -- the exposition ---------------------------------------------------------------------

def test_metrics_text_passes_promtool_and_carries_every_source(host):
    _need("promtool")
    r = qos_hooks(host, "metrics", *host.obs_args)
    assert r.returncode == 0, r.stderr
    p = subprocess.run(["promtool", "check", "metrics"], input=r.stdout,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    s = parse(r.stdout)
    ovs = dict(ifname="vnet0", backend="ovs", bridge="br0", domain=DOMAIN, domain_uuid=UUID,
               mac=MAC)
    assert value(s, "qos_hooks_vnic_limit_average_bytes_per_second", direction="inbound",
                 **ovs) == AVERAGE_BYTES
    # qos-hooks' mapping without a peak: QoS max-rate = the average
    assert value(s, "qos_hooks_vnic_limit_peak_bytes_per_second", direction="inbound",
                 **ovs) == AVERAGE_BYTES
    assert value(s, "qos_hooks_vnic_drift", **ovs) == 0
    # counters equal the kernel's own for the device (ip -s -j link: an oracle)
    link = json.loads(host.ns("ip", "-j", "-s", "link", "show", "vnet0").stdout)[0]
    got = value(s, "qos_hooks_vnic_bytes_total", direction="outbound", **ovs)
    assert 0 < got <= link["stats64"]["rx"]["bytes"]
    assert value(s, "qos_hooks_vnic_shaper_sent_packets_total", direction="inbound", **ovs) >= 1
    # the Linux-bridge tap: libvirt's tc, limits from the domain XML in bytes
    tap = dict(ifname="vnet9", backend="tap", bridge="virbr14", domain=DOMAIN, mac=TAP_MAC)
    assert value(s, "qos_hooks_vnic_limit_average_bytes_per_second", direction="inbound",
                 **tap) == 500 * 1000
    assert value(s, "qos_hooks_vnic_limit_peak_bytes_per_second", direction="inbound",
                 **tap) == 1000 * 1000
    assert value(s, "qos_hooks_vnic_limit_burst_bytes", direction="inbound", **tap) == 64 * 1024
    assert value(s, "qos_hooks_vnic_limit_average_bytes_per_second", direction="outbound",
                 **tap) == 250 * 1000
    assert value(s, "qos_hooks_vnic_policer_dropped_packets_total", direction="outbound",
                 **tap) == 0
    assert value(s, "qos_hooks_vnic_drift", **tap) == 0
    # the host network queue: max-rate in bytes/s, the kernel class found
    hn = dict(network=HOSTNET, uplink=UPLINK, bridge="br0", queue="0")
    assert value(s, "qos_hooks_hostnet_limit_max_bytes_per_second", **hn) == HOSTNET_UL // 8
    assert value(s, "qos_hooks_hostnet_shaper_sent_bytes_total", **hn) >= 0
    assert value(s, "qos_hooks_hostnet_drift", **hn) == 0
    for src in ("ovsdb", "netlink", "hostnet"):
        assert value(s, "qos_hooks_collector_up", source=src) == 1
    # only VM ports: the uplink and the remote port carry no vNIC series
    assert not [k for k in s if ("ifname", UPLINK) in k[1] or ("ifname", "vnet1") in k[1]]


def test_drift_gauge_follows_status(host):
    """A 'tc qdisc del' on the tap makes status DRIFT; the gauge says 1, then 0 again."""
    args = host.obs_args
    host.ns("tc", "qdisc", "del", "dev", "vnet9", "root")
    try:
        st = qos_hooks(host, "status", "--netns", host.netns, host.obs_xml, "--ovsdb", host.remote)
        assert st.returncode == 7, st.stdout + st.stderr
        s = parse(qos_hooks(host, "metrics", *args).stdout)
        assert value(s, "qos_hooks_vnic_drift", ifname="vnet9") == 1
        assert value(s, "qos_hooks_vnic_drift", ifname="vnet0") == 0
    finally:
        host.ns("tc", "qdisc", "add", "dev", "vnet9", "root", "handle", "1:", "htb", "default", "1")
        host.ns("tc", "class", "add", "dev", "vnet9", "parent", "1:", "classid", "1:1", "htb",
                "rate", "500kbps", "ceil", "1000kbps", "burst", "64kb")
    s = parse(qos_hooks(host, "metrics", *args).stdout)
    assert value(s, "qos_hooks_vnic_drift", ifname="vnet9") == 0


def test_counters_fall_back_to_ovsdb_statistics(host):
    """Without the namespace, the port device is not visible: the counters are
    the OVSDB Interface statistics column (what ovs-vsctl shows)."""
    c = metrics.HostCollector(remote=host.remote, domain_xmls=[])
    (v,) = [v for v in c.sample().vnics if v.ifname == "vnet0"]
    assert v.counter_source == "ovsdb"
    stats = host.vsctl_json("Interface", "statistics", where=("name=vnet0",))[0]["statistics"]
    assert abs(v.counters["outbound"].bytes - stats["rx_bytes"]) <= 10 ** 6
    assert "inbound" in v.limits and v.shaper == {}


def test_textfile_written_atomically(host, tmp_path):
    _need("promtool")
    path = tmp_path / "qos-hooks.prom"
    path.write_text("# old\n")
    old_inode = os.stat(str(path)).st_ino
    with open(str(path)) as reader:       # a reader of the old file keeps it whole
        r = qos_hooks(host, "metrics", "--textfile", str(path), *host.obs_args)
        assert r.returncode == 0, r.stderr
        assert reader.read() == "# old\n"
    assert os.stat(str(path)).st_ino != old_inode           # renamed over, not rewritten
    assert sorted(os.listdir(str(tmp_path))) == ["qos-hooks.prom"]   # no temporary left
    assert oct(os.stat(str(path)).st_mode & 0o777) == "0o644"
    text = path.read_text()
    p = subprocess.run(["promtool", "check", "metrics"], input=text, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True)
    assert p.returncode == 0, p.stdout
    assert value(parse(text), "qos_hooks_vnic_limit_average_bytes_per_second",
                 ifname="vnet0", direction="inbound") == AVERAGE_BYTES
    # an unwritable target fails with the OS error and leaves nothing behind
    r = qos_hooks(host, "metrics", "--textfile", str(tmp_path / "nodir" / "x.prom"),
                  *host.obs_args)
    assert r.returncode != 0 and "nodir" in r.stderr
    assert sorted(os.listdir(str(tmp_path))) == ["qos-hooks.prom"]


# -- Prometheus scrapes it while iperf3 pushes through the limit ------------------------

def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


def _query(base, q):
    data = json.loads(_get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})))
    assert data["status"] == "success", data
    return data["data"]["result"]


def _wait(pred, what, timeout=30):
    return wait_until(pred, what, timeout, interval=0.5, ignore=OSError)


def test_prometheus_scrapes_configured_average_and_measured_rate(host, traffic, tmp_path):
    _need("prometheus")
    mport, pport = _free_port(), _free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "qos_hooks", "metrics", "--listen", "127.0.0.1:%d" % mport]
        + host.obs_args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=host.obs_env)
    conf = tmp_path / "prometheus.yml"
    conf.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: qos-hooks\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % mport)
    prom = subprocess.Popen(
        ["prometheus", "--config.file=%s" % conf, "--storage.tsdb.path=%s" % (tmp_path / "data"),
         "--web.listen-address=127.0.0.1:%d" % pport, "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(tmp_path))
    base = "http://127.0.0.1:%d" % pport
    try:
        _wait(lambda: "qos_hooks_vnic_bytes_total" in _get("http://127.0.0.1:%d/metrics" % mport),
              "the exporter")
        _wait(lambda: _get(base + "/-/ready"), "Prometheus ready")
        sel = '{ifname="vnet0",domain="%s",direction="inbound"}' % DOMAIN
        avg = _wait(lambda: _query(base, "qos_hooks_vnic_limit_average_bytes_per_second" + sel),
                    "the configured average in Prometheus")
        assert float(avg[0]["value"][1]) == AVERAGE_BYTES
        # ten seconds of 1 s scrapes under full load
        rate_q = "rate(qos_hooks_vnic_bytes_total%s[8s])" % sel
        _wait(lambda: float(_query(base, "count_over_time(qos_hooks_vnic_bytes_total%s[10s])"
                                   % sel)[0]["value"][1]) >= 9, "ten scrapes", timeout=60)
        measured = float(_query(base, rate_q)[0]["value"][1])
        assert abs(measured / AVERAGE_BYTES - 1) <= 0.10, measured
        # the shaper saw the same traffic, and it was over its limit
        sent = float(_query(base, "rate(qos_hooks_vnic_shaper_sent_bytes_total%s[8s])"
                            % sel)[0]["value"][1])
        assert abs(sent / AVERAGE_BYTES - 1) <= 0.10, sent
        assert float(_query(base, "qos_hooks_vnic_shaper_overlimits_total" + sel)[0]["value"][1]) > 0
        up = _query(base, 'up{job="qos-hooks"}')
        assert up and up[0]["value"][1] == "1"
        # the example alerts of docs/observability.md are valid PromQL here
        for q in _doc_alert_exprs():
            _query(base, q)
    finally:
        for p in (prom, exporter):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _doc_alert_exprs():
    with open(os.path.join(ROOT, "docs", "observability.md"), encoding="utf-8") as f:
        text = f.read()
    exprs = [line.split("expr:", 1)[1].strip() for line in text.splitlines()
             if line.strip().startswith("expr:")]
    assert len(exprs) >= 2, "docs/observability.md: no example alert"
    return exprs


# -- qos-hooks top ----------------------------------------------------------------------

def _tmux(*args, check=True):
    return subprocess.run(["tmux"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=check)


def _top_cmd(host, *extra):
    env = "PYTHONPATH=%s QOS_HOOKS_HOSTNET_STATE=%s" % (ROOT, host.obs_state)
    return "env %s %s -m qos_hooks top %s %s" % (env, sys.executable, " ".join(host.obs_args),
                                                 " ".join(extra))


def _row(screen, vnic):
    rows = [ln for ln in screen.splitlines() if (" %s " % vnic) in ln]
    assert len(rows) == 1, screen
    return rows[0].split()


def _mbit(cell):
    assert cell.endswith("Mbit/s"), cell
    return float(cell[:-len("Mbit/s")])


@pytest.fixture
def tmux_session():
    _need("tmux")
    name = "qh14-%d" % os.getpid()
    _tmux("new-session", "-d", "-s", name, "-x", "150", "-y", "30")
    try:
        yield name
    finally:
        _tmux("kill-session", "-t", name, check=False)


def test_top_once_in_a_terminal_and_json_agree(host, traffic, tmux_session):
    _tmux("send-keys", "-t", tmux_session,
          _top_cmd(host, "--once") + "; echo TOP-DONE-$?", "Enter")
    screen = _wait(lambda: (lambda t: t if "TOP-DONE-0" in t else None)(
        _tmux("capture-pane", "-p", "-t", tmux_session).stdout), "top --once", timeout=60)
    assert "DOMAIN" in screen and "RATE-IN" in screen and "%IN" in screen
    cells = _row(screen, "vnet0")
    # DOMAIN VNIC AVG-IN AVG-OUT RATE-IN RATE-OUT %IN %OUT DROPS/S
    assert cells[0] == DOMAIN and cells[1] == "vnet0"
    assert cells[2] == "8.00Mbit/s" and cells[3] == "-"
    assert abs(_mbit(cells[4]) / 8.0 - 1) <= 0.10, cells
    assert abs(float(cells[6].rstrip("%")) - 100) <= 10, cells
    assert "DRIFT" not in cells
    tap = _row(screen, "vnet9")
    assert tap[2] == "4.00Mbit/s" and tap[3] == "2.00Mbit/s"
    # --json: the same numbers, unrounded
    r = subprocess.run(_top_cmd(host, "--json"), shell=True, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (row,) = [v for v in doc["vnics"] if v["vnic"] == "vnet0"]
    assert row["domain"] == DOMAIN and row["mac"] == MAC and row["backend"] == "ovs"
    assert row["average_in"] == AVERAGE_BYTES and row["average_out"] is None
    assert abs(row["rate_in"] / AVERAGE_BYTES - 1) <= 0.10, row
    assert abs(row["percent_in"] - 100) <= 10 and row["drift"] is False
    assert abs(row["rate_in"] * 8 / 1e6 - _mbit(cells[4])) <= 0.8


def test_top_live_view_sorts_on_key_press_and_quits(host, traffic, tmux_session, tmp_path):
    err = tmp_path / "top.stderr"
    _tmux("send-keys", "-t", tmux_session,
          "%s 2>%s; echo TOP-DONE-$?" % (_top_cmd(host), err), "Enter")

    seen = []

    def screen_with(needle):
        t = _tmux("capture-pane", "-p", "-t", tmux_session).stdout
        seen[:] = [t]
        return t if needle in t and " vnet0 " in t and " vnet9 " in t else None
    try:
        screen = _wait(lambda: screen_with("sort percent"), "the live view", timeout=60)
    except AssertionError:
        raise AssertionError("no live view; the pane shows:\n%s" % seen[0])
    lines = screen.splitlines()
    names = [ln.split()[1] for ln in lines if " vnet0 " in ln or " vnet9 " in ln]
    assert names == ["vnet0", "vnet9"], screen        # vnet0 at ~100 % of its limit first
    def wait_screen(pred, what):
        try:
            return _wait(pred, what, timeout=20)
        except AssertionError:
            raise AssertionError("%s: the pane shows:\n%s" % (what, seen[0]))
    _tmux("send-keys", "-t", tmux_session, "n")
    wait_screen(lambda: screen_with("sort vnic"), "sort by vNIC")
    _tmux("send-keys", "-t", tmux_session, "n")       # same key again: reversed
    wait_screen(lambda: (lambda t: t if t and t.index(" vnet9 ") < t.index(" vnet0 ")
                         else None)(screen_with("sort vnic")), "reversed order")
    _tmux("send-keys", "-t", tmux_session, "q")
    _wait(lambda: "TOP-DONE-0" in _tmux("capture-pane", "-p", "-t", tmux_session).stdout,
          "top to quit", timeout=20)
    assert err.read_text() == ""


def test_top_without_terminal_prints_plain_tables(host):
    """Not a TTY: no curses, no escape sequences, a plain table per interval."""
    p = subprocess.Popen([sys.executable, "-m", "qos_hooks", "top", "--interval", "0.5"]
                         + host.obs_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=host.obs_env, universal_newlines=True)
    try:
        out = []
        end = time.monotonic() + 30
        while time.monotonic() < end and sum("DOMAIN" in ln for ln in out) < 2:
            out.append(p.stdout.readline())
    finally:
        p.terminate()
        p.wait(timeout=10)
    text = "".join(out)
    assert text.count("DOMAIN") >= 2 and "\x1b" not in text, text


def test_drift_when_libvirt_put_its_own_qos_back(host):
    """'virsh domiftune' makes libvirt point the Port at its own QoS (FIELD_NOTES
    section 4): no qos-hooks row is on the port any more, but the domain XML
    says what is wanted, so status DOMAIN_XML and the gauge both see drift."""
    ids = ['external-ids:vm-id="%s"' % UUID, 'external-ids:ifname="vnet0"']
    rate = ["other_config:min-rate=%d" % (AVERAGE * 8000),
            "other_config:max-rate=%d" % (2 * AVERAGE * 8000)]
    host.vsctl("set", "port", "vnet0", "qos=@q", "--", "--id=@q", "create", "qos",
               "type=linux-htb", *rate, "queues:0=@q0", *ids, "--", "--id=@q0", "create",
               "queue", *rate, *ids, wait=True)
    try:
        st = qos_hooks(host, "status", "--netns", host.netns, host.obs_xml, "--ovsdb", host.remote)
        assert st.returncode == 7, st.stdout + st.stderr
        s = parse(qos_hooks(host, "metrics", *host.obs_args).stdout)
        assert value(s, "qos_hooks_vnic_drift", ifname="vnet0") == 1
        # the limits are what the switch holds now: libvirt's peak as the QoS max-rate
        assert value(s, "qos_hooks_vnic_limit_peak_bytes_per_second", ifname="vnet0",
                     direction="inbound") == 2 * AVERAGE_BYTES
    finally:
        dq = DomainQos(UUID, DOMAIN, (InterfaceQos(MAC, "vnet0", Bandwidth(
            inbound=Rate(average=AVERAGE))),))
        ovs_backend.apply_domain(dq, remote=host.remote, timeout=20, netns=host.netns)
    s = parse(qos_hooks(host, "metrics", *host.obs_args).stdout)
    assert value(s, "qos_hooks_vnic_drift", ifname="vnet0") == 0


# -- the systemd timer ---------------------------------------------------------------------

def test_metrics_timer_and_service_verify(tmp_path):
    """systemd's own parser accepts the shipped timer + service (with ExecStart
    pointed at this interpreter, as 'qos-hooks install' does for the resync unit),
    and the service's command line is a real qos-hooks command."""
    _need("systemd-analyze")
    src = os.path.join(ROOT, "systemd")
    with open(os.path.join(src, "qos-hooks-metrics.service")) as f:
        service = f.read()
    with open(os.path.join(src, "qos-hooks-metrics.timer")) as f:
        timer = f.read()
    (exec_line,) = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")]
    assert exec_line.startswith("ExecStart=/usr/bin/qos-hooks metrics --textfile ")
    assert "OnUnitActiveSec=" in timer and "WantedBy=timers.target" in timer
    (tmp_path / "qos-hooks-metrics.service").write_text(
        service.replace("/usr/bin/qos-hooks", "%s -m qos_hooks" % sys.executable))
    (tmp_path / "qos-hooks-metrics.timer").write_text(timer)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        str(tmp_path / "qos-hooks-metrics.timer"),
                        str(tmp_path / "qos-hooks-metrics.service")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       cwd=str(tmp_path))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    from qos_hooks.cli.main import build_parser
    argv = exec_line.split()[1:]
    args = build_parser().parse_args([a.replace("${QOS_HOOKS_TEXTFILE_DIR}", str(tmp_path))
                                      for a in argv])
    assert args.command == "metrics" and args.textfile == str(tmp_path / "qos-hooks.prom")


# -- docs ----------------------------------------------------------------------------------

def test_observability_doc_lists_every_metric():
    with open(os.path.join(ROOT, "docs", "observability.md"), encoding="utf-8") as f:
        text = f.read()
    for name, kind, _ in metrics.ALL_METRICS:
        shown = name + "_total" if kind == "counter" else name
        assert "`%s`" % shown in text, shown
    assert "qos-hooks top" in text and str(metrics.DEFAULT_PORT) in text


def test_listen_on_a_taken_port_is_a_usage_error(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        r = subprocess.run([sys.executable, "-m", "qos_hooks", "metrics", "--listen",
                            "127.0.0.1:%d" % s.getsockname()[1], "--domain-xml", os.devnull,
                            "--ovsdb", "unix:%s" % (tmp_path / "none.sock")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=60, env=_env())
    finally:
        s.close()
    assert r.returncode == 2 and "cannot listen there" in r.stderr, r.stderr


def test_top_rates_and_sorting_from_two_samples():
    """Pure: rates over each vNIC's own read interval; a counter that went
    backwards (device re-created) gives no rate instead of a negative one."""
    from qos_hooks.cli import top
    from qos_hooks.observe.metrics import ClassStats, Counters, HostSample, Limit, Vnic

    def vnic(name, t, inb, drops, avg=1000):
        return Vnic("d-" + name, "", "", name, "br0", "ovs", {"inbound": Limit(avg)},
                    {"inbound": Counters(inb, 0), "outbound": Counters(0, 0)}, "kernel",
                    {"inbound": ClassStats("1:1", drops=drops)}, {}, False, t)
    prev = HostSample(10.0, (vnic("a", 10.0, 0, 0), vnic("b", 10.0, 5000, 0)))
    cur = HostSample(12.5, (vnic("a", 12.0, 2000, 4), vnic("b", 12.0, 100, 0)))
    rows = {r.vnic: r for r in top.rows(prev, cur)}
    assert rows["a"].rate_in == 1000.0 and rows["a"].percent_in == 100.0
    assert rows["a"].drops_per_second == 2.0 and rows["a"].interval == 2.0
    assert rows["b"].rate_in is None and rows["b"].percent_in is None
    assert [r.vnic for r in top.sort_rows(rows.values(), "percent")] == ["a", "b"]
    assert [r.vnic for r in top.sort_rows(rows.values(), "vnic", reverse=True)] == ["b", "a"]
    assert top.fmt_rate(1000000) == "8.00Mbit/s" and top.fmt_rate(None) == "-"


def test_listen_parsing():
    assert metrics.parse_listen("127.0.0.1:9999") == ("127.0.0.1", 9999)
    assert metrics.parse_listen("[::1]:10144") == ("::1", 10144)
    assert metrics.parse_listen("8080") == ("127.0.0.1", 8080)
    from qos_hooks.core.errors import UsageError
    with pytest.raises(UsageError, match="ADDR:PORT"):
        metrics.parse_listen("127.0.0.1:http")
