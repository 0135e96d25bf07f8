"""``qos-hooks dry-run`` as a subprocess: outputs, stdin, exit codes, no writes.

The golden files under tests/golden/ hold what the README's main command
(``make dry-run``: ``python3 -m qos_hooks dry-run --config
examples/qos-hooks.conf examples/ovirt-guest.xml``) prints for the domain XML:
the diff and the [domxml] part of the plan, each step with the commands that
make it (the OVS part belongs to the OVS backend's own tests).  Regenerate them with ``QOS_HOOKS_UPDATE_GOLDEN=1``.
"""

import json
import os
import re

import pytest

from qos_hooks.core.errors import EXIT_CONFIG, EXIT_INPUT, EXIT_USAGE
from tests.core_helpers import EXAMPLES, ROOT, run_cli, strip_qos, validate

GOLDEN = os.path.join(ROOT, "tests", "golden")
CONF = os.path.join(EXAMPLES, "qos-hooks.conf")
OVIRT = os.path.join(EXAMPLES, "ovirt-guest.xml")
OVS = os.path.join(EXAMPLES, "ovs-guest.xml")


def golden(name, actual):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("QOS_HOOKS_UPDATE_GOLDEN"):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "wb") as f:
            f.write(actual)
    with open(path, "rb") as f:
        assert actual == f.read(), "%s differs (QOS_HOOKS_UPDATE_GOLDEN=1 rewrites it)" % name


def domxml_plan_lines(text):
    """The numbered [domxml] operations of a rendered plan with their command lines."""
    out, keep = [], False
    for line in text.splitlines():
        m = re.match(r"^\s+\d+\. \[(\w+)\] ", line)
        if m:
            keep = m.group(1) == "domxml"
            if keep:
                out.append(re.sub(r"^\s+\d+\. ", "", line))
        elif keep and line.startswith(("       $ ", "       made by: ")):
            out.append(line)
        elif not line.startswith("       "):
            keep = False
    return "\n".join(out) + "\n"


def one_line_error(proc, code):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    err = proc.stderr.decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert proc.stdout == b""
    return lines[0]


# -- the shipped example (the README's main command) -------------------------------------

def test_make_dry_run_golden():
    p = run_cli("dry-run", "--config", "examples/qos-hooks.conf", "examples/ovirt-guest.xml")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    diff, _, plan = out.partition("\nplan: ")
    assert diff.startswith("--- a/ovirt-guest.xml\n+++ b/ovirt-guest.xml\n@@ ")
    golden("ovirt-guest.diff", diff.encode())
    golden("ovirt-guest.plan-domxml.txt", domxml_plan_lines("plan: " + plan).encode())
    assert "\x1b[" not in out       # not a terminal: no colour


def test_output_xml_golden_and_valid():
    p = run_cli("dry-run", "--config", CONF, "--output", "xml", OVIRT)
    assert p.returncode == 0, p.stderr
    golden("ovirt-guest.rewritten.xml", p.stdout)
    with open(OVIRT, "rb") as f:
        original = f.read()
    assert strip_qos(p.stdout) == strip_qos(original)
    for data in (original, p.stdout):
        ok, msg = validate(data)
        assert ok, msg


@pytest.mark.parametrize("profile", ["gold", "silver", "nova-m1"])
def test_both_examples_validate_before_and_after(profile):
    for path in (OVIRT, OVS):
        p = run_cli("dry-run", "--config", CONF, "--profile", profile, "--output", "xml", path)
        assert p.returncode == 0, p.stderr
        with open(path, "rb") as f:
            ok, msg = validate(f.read())
        assert ok, msg
        ok, msg = validate(p.stdout)
        assert ok, (path, profile, msg)
        # and a second pass changes nothing
        again = run_cli("dry-run", "--config", CONF, "--profile", profile, "--output", "xml",
                        "-", stdin=p.stdout)
        assert again.stdout == p.stdout


def test_output_json_is_the_plan():
    p = run_cli("dry-run", "--config", CONF, "--output", "json", OVIRT)
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    core = [op for op in plan["ops"] if op["backend"] == "domxml"]
    assert [op["op"] for op in core] == ["SetInterfaceBandwidth", "SetInterfaceBandwidth",
                                         "SetDiskIoTune", "SetDiskIoTune", "SetVcpuLimit",
                                         "SetCpuTune"]
    assert core[0]["bandwidth"]["inbound"] == {"average": 12500, "peak": 25000, "burst": 1024,
                                               "floor": None}
    assert core[4]["limit"] == 50
    assert all(op["description"] and op["commands"] for op in core)


def test_stdin_gives_the_same_result_as_the_file():
    with open(OVIRT, "rb") as f:
        data = f.read()
    a = run_cli("dry-run", "--config", CONF, "--output", "xml", OVIRT)
    b = run_cli("dry-run", "--config", CONF, "--output", "xml", "-", stdin=data)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    d = run_cli("dry-run", "--config", CONF, "-", stdin=data)
    assert d.stdout.startswith(b"--- a/<stdin>\n+++ b/<stdin>\n")


def test_no_change_says_so():
    p = run_cli("dry-run", "--config", CONF, OVS)       # no profile named anywhere
    assert p.returncode == 0
    assert p.stdout.decode().startswith("domain XML: no changes\n\nplan: nothing to change")


def test_colour_when_asked():
    p = run_cli("dry-run", "--config", CONF, "--color", "always", OVIRT)
    assert b"\x1b[32m+" in p.stdout and b"\x1b[31m-" in p.stdout and b"\x1b[36m@@" in p.stdout


def test_config_from_environment_and_cli_precedence(tmp_path):
    other = tmp_path / "other.conf"
    other.write_text("[profile gold]\ncpu.limit = 10\n[profile silver]\n")
    p = run_cli("dry-run", "--output", "xml", OVIRT, env={"QOS_HOOKS_CONFIG": str(other)})
    assert p.returncode == 0, p.stderr
    assert b"<vcpuLimit>10</vcpuLimit>" in p.stdout and b"<iotune>" not in p.stdout
    p = run_cli("dry-run", "--config", CONF, "--output", "xml", OVIRT,
                env={"QOS_HOOKS_CONFIG": str(other)})
    assert b"<vcpuLimit>50</vcpuLimit>" in p.stdout


# -- errors: one line, documented exit code, nothing written ------------------------------

def test_missing_config(tmp_path):
    missing = str(tmp_path / "nope.conf")
    line = one_line_error(run_cli("dry-run", "--config", missing, OVIRT), EXIT_CONFIG)
    # the hint names the example config of this install (here: the checkout's)
    assert line.endswith("ERROR cmd=dry-run: %s: config file not found (allowed: a readable "
                         "file; see the example %s)" % (missing, CONF))


def test_bad_config_value(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[profile gold]\ninbound.average = 100Mbit\ninbound.peak = 10Mbit\n")
    line = one_line_error(run_cli("dry-run", "--config", str(conf), OVIRT), EXIT_CONFIG)
    assert line.endswith("%s:3: profile 'gold', key 'inbound.peak' = '10Mbit': peak (1250 "
                         "KB/s) is below average (12500 KB/s) (allowed: 12500..4294967295, "
                         "at least the average)" % conf)


def test_unknown_profile_on_the_command_line():
    line = one_line_error(run_cli("dry-run", "--config", CONF, "--profile", "platinum", OVIRT),
                          EXIT_CONFIG)
    assert "unknown profile 'platinum' named by --profile (allowed: gold, nova-m1, silver, vm-network)" \
        in line


def test_unknown_profile_in_the_vm_metadata(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("[profile silver]\n")
    line = one_line_error(run_cli("dry-run", "--config", str(conf), OVIRT), EXIT_CONFIG)
    assert "unknown profile 'gold' named by VM custom property qos_profile (metadata)" in line


def test_missing_input():
    line = one_line_error(run_cli("dry-run", "--config", CONF, "/nonexistent/dom.xml"),
                          EXIT_INPUT)
    assert line.endswith("/nonexistent/dom.xml: cannot read: No such file or directory")


def test_malformed_input():
    line = one_line_error(run_cli("dry-run", "--config", CONF, "-", stdin=b"<domain><name>"),
                          EXIT_INPUT)
    assert "<stdin>:1: not well-formed XML:" in line


def test_not_a_domain():
    line = one_line_error(run_cli("dry-run", "--config", CONF, "-", stdin=b"<network/>"),
                          EXIT_INPUT)
    assert line.endswith("<stdin>:1: root element is <network>, expected <domain> or "
                         "<interface>")


@pytest.mark.parametrize("args", [
    ("dry-run",), ("dry-run", "--output", "yaml", OVIRT), ("dry-run", "--bogus", OVIRT), (),
])
def test_usage_errors(args):
    p = run_cli(*args)
    assert p.returncode == EXIT_USAGE
    assert b"usage: qos-hooks" in p.stderr and b"Traceback" not in p.stderr


def test_writes_nothing(tmp_path):
    """Neither on success nor on error: the input, the config and the working
    directory are left exactly as they were."""
    conf = tmp_path / "qos-hooks.conf"
    dom = tmp_path / "dom.xml"
    with open(CONF, "rb") as f:
        conf.write_bytes(f.read())
    with open(OVIRT, "rb") as f:
        dom.write_bytes(f.read())
    work = tmp_path / "cwd"
    work.mkdir()

    def snapshot():
        return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")
                if p.is_file()}

    before = snapshot()
    for args in (("--output", "xml"), ("--output", "json"), ("--output", "diff"),
                 ("--profile", "nope")):
        run_cli("dry-run", "--config", str(conf), *args, str(dom), cwd=str(work))
    bad = tmp_path / "bad.conf"
    bad.write_text("[profile gold]\ncpu.limit = 500\n")
    before[str(bad)] = (bad.read_bytes(), bad.stat().st_mtime_ns)
    p = run_cli("dry-run", "--config", str(bad), str(dom), cwd=str(work))
    assert p.returncode == EXIT_CONFIG
    assert snapshot() == before
    assert list(work.iterdir()) == []


def test_colour_on_a_terminal_only():
    """--color auto (the default): colour when stdout is a terminal, unless NO_COLOR."""
    import pty
    import subprocess
    import sys

    def on_tty(env_extra):
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        env.update(PYTHONPATH=ROOT, **env_extra)
        p = subprocess.Popen([sys.executable, "-m", "qos_hooks", "dry-run", "--config", CONF,
                              OVIRT], stdout=slave, stderr=subprocess.DEVNULL, env=env,
                             cwd=ROOT)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:       # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        assert p.wait(timeout=60) == 0
        return out

    assert b"\x1b[32m+" in on_tty({})
    assert b"\x1b[" not in on_tty({"NO_COLOR": "1"})

