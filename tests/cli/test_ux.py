"""An operator's first hour (issue 17): each surprise as a case.

Each case runs the command a new user runs and checks the exit code and the
exact line the user reads (the log prefix's process id aside).  The numbers
are the issue's items; 17.1 (virtualenv in the Makefile) and 17.10 (install
--root) are tested where they were fixed.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

from qos_hooks.core import examples
from qos_hooks.core.errors import EXIT_CONFIG, EXIT_DRIFT, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from tests.core_helpers import EXAMPLES, ROOT, run_cli

CONF = os.path.join(EXAMPLES, "qos-hooks.conf")
OVIRT = os.path.join(EXAMPLES, "ovirt-guest.xml")
OVS = os.path.join(EXAMPLES, "ovs-guest.xml")


def lines(data):
    text = data.decode() if isinstance(data, bytes) else data
    return [re.sub(r"^qos-hooks\[\d+\]", "qos-hooks[PID]", ln) for ln in text.splitlines()]


def error_line(p, code):
    """The one line on stderr of a failed command."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    err = lines(p.stderr)
    assert "Traceback" not in p.stderr.decode()
    return err[-1]


def conf(tmp_path, text, name="qos-hooks.conf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- 17.2: each plan step names the command that makes it --------------------------------

DOMXML_BY = ("       made by: VDSM hook before_vm_start (oVirt); libvirt hook qemu.d at "
             "migrate/restore; qos-hooks set --persistent (defined domain); qos-hooks set "
             "--live (running domain)")
OVSDB_BY = ("       made by: qos-hooks apply; VDSM hook after_vm_start (oVirt); libvirt hook "
            "qemu.d at started; qos-hooks set --live")


def test_17_2_each_step_names_its_executor():
    p = run_cli("dry-run", "--config", CONF, OVIRT)
    assert p.returncode == EXIT_OK, p.stderr
    out = lines(p.stdout)
    steps = [i for i, ln in enumerate(out) if re.match(r"^\s+\d+\. \[", ln)]
    assert steps
    for i in steps:
        backend = re.match(r"^\s+\d+\. \[(\w+)\]", out[i]).group(1)
        assert out[i + 1] == {"domxml": DOMXML_BY, "ovsdb": OVSDB_BY}[backend], out[i:i + 2]


def test_17_2_json_ops_carry_executors():
    p = run_cli("dry-run", "--output", "json", "--config", CONF, OVIRT)
    assert p.returncode == EXIT_OK, p.stderr
    ops = json.loads(p.stdout)["ops"]
    for op in ops:
        if op["backend"] == "domxml":
            assert "qos-hooks apply" not in op["executors"]
            assert op["executors"][0] == "VDSM hook before_vm_start (oVirt)"
        else:
            assert op["executors"][0] == "qos-hooks apply"


def test_17_2_help_and_readme_say_who_makes_what():
    p = run_cli("dry-run", "--help")
    assert p.returncode == EXIT_OK
    text = p.stdout.decode()
    assert "every change that apply would make" not in text
    assert "[ovsdb]  OVS QoS and policing: 'qos-hooks apply' (OVSDB steps only, no" in text
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "every change apply would make" not in readme
    assert "`[ovsdb]` steps by `qos-hooks apply` (OVSDB only, it takes no `--profile`)" in readme


# -- 17.3: "nothing to change" says why ----------------------------------------------------

def test_17_3_no_profile_says_why(tmp_path):
    c = conf(tmp_path, "[profile web]\ninbound.average = 100Mbit\n")
    p = run_cli("dry-run", "--config", c, OVS)
    assert p.returncode == EXIT_OK, p.stderr
    out = lines(p.stdout)
    assert "plan: nothing to change" in out
    assert ("note: no profile applies to this domain: read config file %s; no --profile "
            "given, no qos_profile custom property on the VM or its vNICs (the domain has no "
            "oVirt metadata), and no default_profile in [settings] (profiles defined: web)"
            % c) in out


def test_17_3_profile_with_nothing_left_to_do_says_so(tmp_path):
    first = run_cli("dry-run", "--output", "xml", "--config", CONF, OVIRT)
    done = tmp_path / "done.xml"
    done.write_bytes(first.stdout)
    p = run_cli("dry-run", "--config", CONF, str(done))
    assert p.returncode == EXIT_OK, p.stderr
    note = [ln for ln in lines(p.stdout) if ln.startswith("note: profile ")]
    assert note == ["note: profile gold (VM custom property qos_profile (metadata)), silver "
                    "(vNIC custom property qos_profile (metadata)) from config file %s applies, "
                    "but the domain XML already has what it sets (on_existing = fill) or the "
                    "profile sets nothing for these devices" % CONF]


def test_17_3_debug_shows_the_selection_steps(tmp_path):
    c = conf(tmp_path, "[settings]\ndefault_profile = web\n[profile web]\ncpu.shares = 100\n")
    p = run_cli("dry-run", "--config", c, OVS, "--log-level", "DEBUG")
    assert p.returncode == EXIT_OK, p.stderr
    err = lines(p.stderr)
    for want in ("config: %s" % c, "VM level: --profile: not set",
                 "VM level: VM custom property qos_profile (metadata): not set",
                 "VM level: default_profile = 'web': chosen",
                 "interface 52:54:00:6b:1f:01/vnet0: no vNIC custom property: the VM-level "
                 "profile"):
        assert "qos-hooks[PID] DEBUG cmd=dry-run: profile selection: " + want in err, err


def test_17_3_cpu_cap_says_whose_cpus_and_takes_host_cpus(tmp_path):
    c = conf(tmp_path, "[profile web]\ncpu.limit = 50\n")
    p = run_cli("dry-run", "--config", c, "--profile", "web", OVS)
    assert p.returncode == EXIT_OK, p.stderr
    n = os.cpu_count()
    step = [ln for ln in lines(p.stdout) if "[domxml] set <cputune>" in ln][0]
    assert step.endswith("(cpu.limit=50%% of %d host CPUs over 2 vCPUs; host CPUs from "
                         "os.cpu_count() of %s, the machine this ran on (for another "
                         "hypervisor: --host-cpus N or host_cpus in [settings]))"
                         % (n, os.uname().nodename)), step
    p = run_cli("dry-run", "--config", c, "--profile", "web", "--host-cpus", "64", OVS)
    step = [ln for ln in lines(p.stdout) if "[domxml] set <cputune>" in ln][0]
    assert step == ("  1. [domxml] set <cputune> period=100000, quota=1600000 from profile "
                    "'web' (cpu.limit=50% of 64 host CPUs over 2 vCPUs; host CPUs from "
                    "--host-cpus)")
    p = run_cli("dry-run", "--config", c, "--host-cpus", "0", OVS)
    assert lines(p.stderr)[-1] == ("qos-hooks dry-run: error: argument --host-cpus: '0' is "
                                   "not a CPU count (allowed: 1..65536)")


# -- 17.4: disk rules that can match nothing -----------------------------------------------

BUSES = "ide, fdc, scsi, virtio, xen, usb, uml, sata, sd"


@pytest.mark.parametrize("selector,message", [
    ("bus=nvme0", "'nvme0' is not a libvirt disk bus: bus= is the <target bus=...> attribute, "
                  "not a device name (for device names use target=GLOB) (allowed: %s)" % BUSES),
    ("bus=SATA", "'SATA' is not a libvirt disk bus: libvirt bus names are lower case, write "
                 "bus=sata (allowed: %s)" % BUSES),
    ("bus=sati", "'sati' is not a libvirt disk bus: did you mean bus=sata? (allowed: %s)"
                 % BUSES),
    ("target=/dev/sdb", "target= is the disk's <target dev=...> name as libvirt writes it, "
                        "not a /dev path: write target=sdb (allowed: a glob over target names "
                        "such as vdb, sd[b-z], vd*)"),
])
def test_17_4_disk_rule_selectors_are_checked(tmp_path, selector, message):
    c = conf(tmp_path, "[profile web]\ndisk.total_iops_sec = 100\n\n"
                       "[profile web disk %s]\ntotal_iops_sec = 5\n" % selector)
    p = run_cli("dry-run", "--config", c, OVS)
    assert error_line(p, EXIT_CONFIG) == (
        "qos-hooks[PID] ERROR cmd=dry-run: %s:4: profile 'web': [profile web disk %s]: %s"
        % (c, selector, message))


def test_17_4_rule_matching_no_disk_is_noted(tmp_path):
    c = conf(tmp_path, "[profile web]\ndisk.total_iops_sec = 100\n\n"
                       "[profile web disk bus=scsi]\ntotal_iops_sec = 5\n")
    p = run_cli("dry-run", "--config", c, "--profile", "web", OVS)
    assert p.returncode == EXIT_OK, p.stderr
    assert ("note: disk rule [profile web disk bus=scsi] matched no disk of this domain "
            "(its disks: vda bus=virtio, sda bus=sata)") in lines(p.stdout)


# -- 17.5: backend storage limits at config time -------------------------------------------

@pytest.mark.parametrize("key,value,message", [
    ("inbound.average", "35Gbit",
     "35Gbit/s (4375000 KB/s) is above what Open vSwitch linux-htb can store (rates are "
     "bytes/s in 32 bits: at most 34359736kbit/s (4294967 KB/s)) (allowed: 1..4294967 KB/s "
     "(up to 34.359Gbit/s))"),
    ("outbound.average", "4295Gbit",
     "4295Gbit/s (536875000 KB/s) is above what Open vSwitch ingress_policing_rate can store "
     "(kbit/s in 32 bits) (allowed: 1..536870911 KB/s)"),
])
def test_17_5_backend_limits_are_config_errors(tmp_path, key, value, message):
    c = conf(tmp_path, "[profile web]\n%s = %s\n" % (key, value))
    p = run_cli("dry-run", "--config", c, "--profile", "web", OVS)
    assert error_line(p, EXIT_CONFIG) == (
        "qos-hooks[PID] ERROR cmd=dry-run: %s:2: profile 'web', key %r = %r: %s"
        % (c, key, value, message))


def test_17_5_the_bound_itself_passes(tmp_path):
    c = conf(tmp_path, "[profile web]\ninbound.average = 4294967\noutbound.average = 536870911\n")
    p = run_cli("dry-run", "--config", c, "--profile", "web", OVS)
    assert p.returncode == EXIT_OK, p.stderr
    with open(os.path.join(ROOT, "docs", "policy.md"), encoding="utf-8") as f:
        assert "| `inbound.average`, `inbound.peak` | 1..4294967 KB/s (34.359 Gbit/s) |" in f.read()


def test_17_5_the_ovs_bound_is_real(ovs_sandbox):  # noqa: F811
    """Why the bound: Open vSwitch keeps linux-htb rates as 32-bit bytes/s.  At
    (2^32-1)*8 bit/s the kernel class is 34359Mbit; at 35 Gbit/s the rate
    wraps to 640261Kbit (35e9/8 - 2^32 bytes/s): a silent 55x cut."""
    sb = ovs_sandbox
    sb.add_port("vnet0")
    seen = {}
    for bps in (34359738360, 35000000000):
        sb.vsctl("--", "set", "Port", "vnet0", "qos=@q", "--", "--id=@q", "create", "QoS",
                 "type=linux-htb", "other_config:max-rate=%d" % bps, "queues:0=@q0", "--",
                 "--id=@q0", "create", "Queue", "other_config:min-rate=%d" % bps,
                 "other_config:max-rate=%d" % bps, wait=True)
        out = subprocess.run(["ip", "netns", "exec", sb.netns, "tc", "class", "show", "dev",
                              "vnet0"], capture_output=True, text=True, check=True).stdout
        seen[bps] = sorted(re.findall(r"class htb (\S+) .*? rate (\S+) ", out))
        sb.vsctl("clear", "Port", "vnet0", "qos")
        sb.vsctl("--all", "destroy", "QoS", "--", "--all", "destroy", "Queue")
    assert seen[34359738360] == [("1:1", "34359Mbit"), ("1:fffe", "34359Mbit")]
    assert seen[35000000000] == [("1:1", "640261Kbit"), ("1:fffe", "640261Kbit")]


# -- 17.6: status on a host without Open vSwitch ---------------------------------------------

def _node(tmp_path, bandwidth):
    """A libvirt test-driver host with one running domain on a Linux bridge."""
    node = tmp_path / "node.xml"
    node.write_text("""<node><domain type='test'><name>web1</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid><memory>65536</memory><vcpu>1</vcpu>
  <os><type>hvm</type></os><devices><interface type='bridge'>
  <mac address='52:54:00:aa:bb:01'/><source bridge='br0'/><target dev='uxtap0'/>
  %s</interface></devices></domain></node>""" % bandwidth)
    return "test://" + str(node)


@pytest.fixture
def no_ovs(tmp_path):
    """A config whose OVSDB socket does not exist: a host without OVS."""
    return {"QOS_HOOKS_CONFIG": conf(tmp_path, "[settings]\novsdb = unix:%s\n"
                                     % (tmp_path / "no-ovs" / "db.sock"), "noovs.conf")}


def _libvirt():
    import importlib.util
    if importlib.util.find_spec("libvirt") is None:
        from tests.ovs_sandbox import require
        require("needs the libvirt Python binding (libvirt-python)")


def test_17_6_status_without_ovs_is_not_an_error(tmp_path, no_ovs):
    _libvirt()
    uri = _node(tmp_path, "")
    p = run_cli("status", "--connect", uri, env=no_ovs)
    assert p.returncode == EXIT_OK, p.stderr
    assert lines(p.stdout) == [
        "Open vSwitch: not on this host (no OVSDB socket at %s): no OVS port to check "
        "(--ovsdb REMOTE reads another)" % (tmp_path / "no-ovs" / "db.sock"),
        "libvirt %s: no running domain has <bandwidth> on a tap" % uri]


@pytest.fixture
def netns_tap():
    """A network namespace with a device uxtap0 carrying what libvirt puts on a
    tap for <inbound average='1000'/> (htb 1: default 1, class 1:1 1000kbps)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        from tests.ovs_sandbox import require
        require("needs root, ip and tc for a namespace with a shaped device")
    ns = "qh-ux-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for argv in (["ip", "link", "add", "uxtap0", "type", "veth", "peer", "name", "uxpeer0"],
                     ["ip", "link", "set", "uxtap0", "up"],
                     ["tc", "qdisc", "add", "dev", "uxtap0", "root", "handle", "1:", "htb",
                      "default", "1"],
                     ["tc", "class", "add", "dev", "uxtap0", "parent", "1:", "classid", "1:1",
                      "htb", "rate", "1000kbps", "ceil", "1000kbps"]):
            subprocess.run(["ip", "netns", "exec", ns] + argv, check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def test_17_6_status_without_ovs_checks_libvirt_taps(tmp_path, no_ovs, netns_tap):
    _libvirt()
    uri = _node(tmp_path, "<bandwidth><inbound average='1000'/></bandwidth>")
    p = run_cli("status", "--connect", uri, "--netns", netns_tap, env=no_ovs)
    assert p.returncode == EXIT_OK, (p.stdout, p.stderr)
    out = lines(p.stdout)
    assert out[1] == "domain web1 (6695eb01-f6a4-8304-79aa-97f2502e193f):"
    assert out[2] == "  ok    tap uxtap0  mac 52:54:00:aa:bb:01  type bridge (libvirt tc, not OVS)"
    # the same domain with its tap gone is drift (exit 7), and --json says so
    p = run_cli("status", "--json", "--connect", uri, env=no_ovs)
    assert p.returncode == EXIT_DRIFT, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ovs"]["present"] is False and doc["drift"] is True
    assert doc["domains"][0]["tap_ports"][0]["dev"] == "uxtap0"


def test_17_6_json_always_prints_a_document(tmp_path):
    sock = str(tmp_path / "down.sock")
    p = run_cli("status", "--json", "--ovsdb", sock)
    assert p.returncode == EXIT_UNAVAILABLE
    doc = json.loads(p.stdout)
    assert doc == {"error": "OVSDB at unix:%s: no such socket (is ovsdb-server running?)" % sock,
                   "exit_code": EXIT_UNAVAILABLE, "drift": None}
    assert error_line(p, EXIT_UNAVAILABLE) == ("qos-hooks[PID] ERROR cmd=status: " + doc["error"])


# -- 17.7: the examples ship with every install ----------------------------------------------

def test_17_7_example_runs_from_anywhere():
    p = run_cli("dry-run", "--example", cwd="/")
    assert p.returncode == EXIT_OK, p.stderr
    assert p.stdout.startswith(b"--- a/ovirt-guest.xml\n")
    p = run_cli("--help", cwd="/")
    assert ("                                  domains are in %s" % EXAMPLES) in lines(p.stdout)


def test_17_7_no_domain_xml_points_at_the_example():
    p = run_cli("dry-run", cwd="/")
    assert error_line(p, EXIT_USAGE) == (
        "qos-hooks dry-run: error: DOMAIN_XML is required (a file, or - for stdin); "
        "'qos-hooks dry-run --example' runs the shipped example (%s)" % EXAMPLES)


def test_17_7_missing_config_names_the_installed_example(tmp_path):
    missing = str(tmp_path / "nope.conf")
    p = run_cli("dry-run", "--config", missing, OVIRT)
    assert error_line(p, EXIT_CONFIG) == (
        "qos-hooks[PID] ERROR cmd=dry-run: %s: config file not found (allowed: a readable "
        "file; see the example %s)" % (missing, CONF))


def test_17_7_rpm_ships_examples_as_doc():
    with open(os.path.join(ROOT, "rpm", "qos-hooks.spec"), encoding="utf-8") as f:
        assert "%doc README.md docs/*.md examples\n" in f.read()
    assert examples.RPM_DOC_DIR == "/usr/share/doc/qos-hooks/examples"


from tests.cli.test_install import wheel_venv  # noqa: E402,F401  (the module-scoped fixture)


def test_17_7_example_from_a_wheel_install(wheel_venv, tmp_path):  # noqa: F811
    cli = os.path.join(wheel_venv, "bin", "qos-hooks")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QOS_HOOKS_CONFIG")}
    p = subprocess.run([cli, "dry-run", "--example"], cwd="/", env=env, capture_output=True)
    assert p.returncode == EXIT_OK, p.stderr
    assert p.stdout.startswith(b"--- a/ovirt-guest.xml\n")
    data = subprocess.run([os.path.join(wheel_venv, "bin", "python"), "-c",
                           "from qos_hooks.core import examples; print(examples.directory())"],
                          cwd="/", env=env, capture_output=True, text=True).stdout.strip()
    assert data.startswith(wheel_venv) and data.endswith("qos_hooks/data/examples")
    p = subprocess.run([cli, "--help"], cwd="/", env=env, capture_output=True, text=True)
    assert "domains are in %s\n" % data in p.stdout


# -- 17.8: CLI sharp edges ----------------------------------------------------------------

def test_17_8_log_level_after_the_command():
    p = run_cli("dry-run", "--example", "--log-level", "debug")
    assert p.returncode == EXIT_OK, p.stderr
    assert any(" DEBUG cmd=dry-run: profile selection: " in ln for ln in lines(p.stderr))


def test_17_8_ovsdb_takes_a_path(tmp_path):
    sock = str(tmp_path / "db.sock")
    p = run_cli("dry-run", "--example", "--ovsdb", sock)
    assert error_line(p, EXIT_UNAVAILABLE) == (
        "qos-hooks[PID] ERROR cmd=dry-run: OVSDB at unix:%s: no such socket (is ovsdb-server "
        "running?)" % sock)
    p = run_cli("status", "--ovsdb", "db.sock")
    assert error_line(p, EXIT_USAGE) == (
        "qos-hooks status: error: argument --ovsdb: 'db.sock' is not an OVSDB remote: write "
        "unix:PATH (or just the socket's /PATH), tcp:IP:PORT or ssl:IP:PORT, e.g. "
        "unix:/run/openvswitch/db.sock or tcp:127.0.0.1:6640")


RATE_UNITS = ("'kbit', 'Mbit', 'Gbit', 'Tbit', 'Kibit', 'Mibit', 'Gibit' (optionally '/s'); "
              "byte/s forms 'B/s', 'kB/s', 'MB/s', 'GB/s', 'KiB/s', 'MiB/s', 'GiB/s'")
RATE_HELP = ("a whole number in the default unit, or a number with a unit: bit/s forms "
             + RATE_UNITS)


@pytest.mark.parametrize("value,message", [
    ("1G", "unknown rate unit 'G': it has no 'bit' or 'B'; write 1Gbit (bits/s) or 1GB/s "
           "(bytes/s) (allowed: %s)" % RATE_HELP),
    ("100M", "unknown rate unit 'M': it has no 'bit' or 'B'; write 100Mbit (bits/s) or "
             "100MB/s (bytes/s) (allowed: %s)" % RATE_HELP),
    ("100Mb", "unknown rate unit 'Mb': 'b' could be bits or bytes; write 100Mbit (bits/s) or "
              "100MB/s (bytes/s) (allowed: %s)" % RATE_HELP),
    ("-5", "not a quantity: '-5': negative values are not allowed (allowed: a whole number "
           ">= 1 in the key's unit (e.g. 12500), or a number with a unit (e.g. 100Mbit, "
           "12MB/s, 1MiB))"),
    ("100kbit", "'100kbit' is not a whole number of KB/s units (8000 bit each); nearest exact "
                "values are 12 KB/s = 96kbit/s and 13 KB/s = 104kbit/s (allowed: whole "
                "multiples of 8000 bit)"),
])
def test_17_8_unit_mistakes_get_a_suggestion(tmp_path, value, message):
    c = conf(tmp_path, "[profile web]\ninbound.average = %s\n" % value)
    p = run_cli("dry-run", "--config", c, OVS)
    assert error_line(p, EXIT_CONFIG) == (
        "qos-hooks[PID] ERROR cmd=dry-run: %s:2: profile 'web', key 'inbound.average' = %r: %s"
        % (c, value, message))


def test_17_8_units_in_errors_match_policy_md():
    with open(os.path.join(ROOT, "docs", "policy.md"), encoding="utf-8") as f:
        md = f.read()
    for unit in ("Tbit", "Kibit", "Gibit", "GiB/s"):
        assert "`%s`" % unit in md and "'%s'" % unit in RATE_UNITS


def test_17_8_space_in_profile_name(tmp_path):
    c = conf(tmp_path, "[profile web server]\ninbound.average = 100Mbit\n")
    p = run_cli("dry-run", "--config", c, OVS)
    assert error_line(p, EXIT_CONFIG) == (
        "qos-hooks[PID] ERROR cmd=dry-run: %s:1: [profile web server]: a profile name cannot "
        "contain spaces (this reads as profile 'web' followed by 'server'); write "
        "[profile web_server] (allowed: [profile NAME] with NAME of letters, digits, '_', '.', "
        "'-'; [profile NAME disk bus=BUS]; [profile NAME disk target=GLOB])" % c)


def test_17_8_set_config_is_the_policy_file():
    p = run_cli("set", "--domain", "vm1", "--live", "--config")
    assert error_line(p, EXIT_USAGE) == (
        "qos-hooks set: error: argument --config: expected one argument; note: in qos-hooks "
        "--config FILE is the policy file (qos-hooks.conf); virsh's --config (change the "
        "persistent definition) is --persistent here")


# -- 17.9: the man pages (rendering and currency: tests/cli/test_manpage.py) -----------------------

def test_17_9_man_pages_have_the_operator_sections():
    with open(os.path.join(ROOT, "docs", "qos-hooks.1"), encoding="utf-8") as f:
        page1 = f.read()
    for section in ("EXAMPLES", "FILES", "EXIT STATUS"):
        assert "\n.SH %s\n" % section in page1, section
    assert "qos\\-hooks dry\\-run \\-\\-example" in page1
    with open(os.path.join(ROOT, "docs", "qos-hooks.conf.5"), encoding="utf-8") as f:
        page5 = f.read()
    assert page5.startswith('.\\" Generated by tools/gen-manpage.py --section 5 from docs/policy.md')
    assert ".TH QOS-HOOKS.CONF 5 " in page5 and "\\fBdefault_profile\\fR" in page5
