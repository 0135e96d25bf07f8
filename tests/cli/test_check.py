"""``qos-hooks check`` (issue 10, item 6): a policy file validated without a domain.

Run as a command, as an operator or a fleet rollout runs it; the same check
runs in ``qos-hooks install`` and in the RPM's %post (its scriptlet is taken
from rpm/qos-hooks.spec and executed here against a staged tree).
"""

import json
import os
import re
import subprocess
import sys

import pytest

from tests import packaging_helpers as ph

GOOD = """\
[settings]
default_profile = gold
on_error.before_vm_start = fail

[profile gold]
inbound.average = 1000
outbound.average = 500
disk.total_iops_sec = 500
host.ls.m2 = 10
host.ul.m2 = 20Mbit

[profile silver]
inbound.average = 250
"""


def check(tmp_path, text, *args):
    conf = tmp_path / "qos-hooks.conf"
    conf.write_text(text)
    r = subprocess.run([sys.executable, "-m", "qos_hooks", "check", "--config", str(conf)]
                       + list(args), capture_output=True, text=True, cwd="/",
                       env=ph.base_env(PYTHONPATH=ph.REPO))
    return r, str(conf)


def test_valid_file_exits_0_and_lists_profiles(tmp_path):
    r, conf = check(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert "ok: %s: 2 profiles (gold, silver); default_profile gold" % conf in r.stdout
    assert "profile gold host network QoS: link-share weight 10, upper limit 20Mbit/s" \
        in r.stdout


def test_valid_file_json(tmp_path):
    r, conf = check(tmp_path, GOOD, "--json")
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["ok"] is True and d["path"] == conf
    assert d["profiles"] == ["gold", "silver"] and d["default_profile"] == "gold"
    assert set(d["host_profiles"]) == {"gold"}


@pytest.mark.parametrize("edit,line,key,words", [
    # a value out of range names file, line, profile, key and range
    (("inbound.average = 1000", "inbound.average = 4294967296"), 6, "inbound.average",
     ["profile 'gold'", "out of range", "allowed: 1..4294967295"]),
    # a key the hooks do not know
    (("outbound.average = 500", "outbound.avrage = 500"), 7, "outbound.avrage",
     ["unknown"]),
    # default_profile naming no profile
    (("default_profile = gold", "default_profile = platinum"), 2, "default_profile",
     ["does not exist", "gold, silver"]),
    # a host.* value that is not a rate
    (("host.ul.m2 = 20Mbit", "host.ul.m2 = fast"), 10, "host.ul.m2", ["fast"]),
    # host.* keys that parse one by one but make no valid hfsc class together:
    # the network hooks would only find out in a setupNetworks
    (("host.ls.m2 = 10\n", ""), 9, None, ["upper limit alone"]),
    # a disk key in range but mutually exclusive with another
    (("disk.total_iops_sec = 500", "disk.total_iops_sec = 500\ndisk.read_iops_sec = 5"),
     None, None, ["total_iops_sec"]),
    # a syntax error
    (("[profile silver]", "[profile silver"), 12, None, ["section header"]),
])
def test_invalid_file_exits_3_naming_file_line_key(tmp_path, edit, line, key, words):
    text = GOOD.replace(edit[0], edit[1], 1)
    assert text != GOOD
    r, conf = check(tmp_path, text)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert r.stdout == ""
    msg = r.stderr
    assert msg.startswith("qos-hooks check: INVALID: %s:" % conf)
    if line is not None:
        assert msg.startswith("qos-hooks check: INVALID: %s:%d: " % (conf, line)), msg
    for w in words:
        assert w in msg, (w, msg)
    r, _ = check(tmp_path, text, "--json")
    assert r.returncode == 3
    d = json.loads(r.stdout)
    assert d["ok"] is False and d["path"] == conf and d["error"] in msg
    if line is not None:
        assert d["line"] == line
    if key is not None:
        assert d["key"] == key


def test_missing_file_is_a_configuration_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "qos_hooks", "check", "--config",
                        str(tmp_path / "nope.conf")], capture_output=True, text=True,
                       env=ph.base_env(PYTHONPATH=ph.REPO))
    assert r.returncode == 3 and "not found" in r.stderr


def test_shipped_example_is_valid():
    r = subprocess.run([sys.executable, "-m", "qos_hooks", "check", "--config",
                        os.path.join(ph.REPO, "examples", "qos-hooks.conf")],
                       capture_output=True, text=True, env=ph.base_env(PYTHONPATH=ph.REPO))
    assert r.returncode == 0, r.stderr


def test_check_accepts_what_the_hooks_accept(tmp_path):
    """The same parser: a file check calls valid loads in the hooks' runtime."""
    from qos_hooks.cli import check
    from qos_hooks.core import policy
    conf = tmp_path / "c.conf"
    conf.write_text(GOOD)
    assert check.check_file(str(conf))["ok"]
    assert policy.load_config(str(conf)).settings.default_profile == "gold"


def test_install_warns_loudly_on_an_invalid_installed_config(tmp_path):
    root = str(tmp_path / "root")
    os.mkdir(root)
    argv = [sys.executable, "-m", "qos_hooks", "install", "--vdsm", "--root", root]
    env = ph.base_env(PYTHONPATH=ph.REPO)
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    assert "INVALID" not in r.stderr                 # the shipped example is valid
    conf = os.path.join(root, "etc", "qos-hooks", "qos-hooks.conf")
    with open(conf, "a") as f:
        f.write("\n[profile broken]\ninbound.average = -1\n")
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/")
    assert r.returncode == 0                         # the files are installed anyway
    assert "WARNING: the qos-hooks policy file is INVALID" in r.stderr
    assert "profile 'broken'" in r.stderr and "inbound.average" in r.stderr
    assert "qos-hooks check --config %s" % conf in r.stderr


def _post_scriptlet():
    with open(os.path.join(ph.REPO, "rpm", "qos-hooks.spec")) as f:
        spec = f.read()
    m = re.search(r"^%post\n(.*?)^exit 0\n", spec, re.S | re.M)
    assert m, "rpm/qos-hooks.spec has no %post for the main package"
    return m.group(1) + "exit 0\n"


@pytest.mark.parametrize("valid", [True, False])
def test_rpm_post_checks_the_installed_config(tmp_path, valid):
    """The main package's %post, run with sh against a staged tree: a bad
    policy file prints the check's message and a warning, and the scriptlet
    still exits 0 (a scriptlet must not fail the transaction)."""
    bindir = tmp_path / "usr" / "bin"
    sysconf = tmp_path / "etc"
    bindir.mkdir(parents=True)
    (sysconf / "qos-hooks").mkdir(parents=True)
    cmd = bindir / "qos-hooks"
    cmd.write_text("#!/bin/sh\nPYTHONPATH=%s exec %s -m qos_hooks \"$@\"\n"
                   % (ph.REPO, sys.executable))
    cmd.chmod(0o755)
    conf = sysconf / "qos-hooks" / "qos-hooks.conf"
    conf.write_text(GOOD if valid else GOOD.replace("= 1000", "= 0x10"))
    script = _post_scriptlet().replace("%{_bindir}", str(bindir)).replace(
        "%{_sysconfdir}", str(sysconf))
    assert "%{" not in script
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                       env=ph.base_env())
    assert r.returncode == 0
    if valid:
        assert r.stderr == ""
    else:
        assert "WARNING: %s is INVALID" % conf in r.stderr
        assert "%s:6: profile 'gold', key 'inbound.average'" % conf in r.stderr


THREE_BAD = """\
[settings]
default_profile = gold
ovsdb_timeout = 0

[profile gold]
inbound.average = 1000
inbound.peak = 10

[profile silver]
inbound.average = 250

[profile bronze]
outbound.floor = 5
"""


def test_every_bad_section_is_listed_at_once(tmp_path):
    """One run names each section's problem (file:line, key), not only the
    first: an operator fixes the file in one pass.  default_profile names
    the broken profile gold, but that is not reported again.  The hooks
    still fail on the first problem, with the same message."""
    r, conf = check(tmp_path, THREE_BAD)
    assert r.returncode == 3
    lines = [ln for ln in r.stderr.splitlines() if "INVALID" in ln]
    assert len(lines) == 3, r.stderr
    assert lines[0].startswith("qos-hooks check: INVALID: %s:3: " % conf)
    assert "ovsdb_timeout" in lines[0]
    assert ("%s:7: " % conf) in lines[1] and "inbound.peak" in lines[1]
    assert ("%s:13: " % conf) in lines[2] and "outbound.floor" in lines[2]
    assert "3 problems (the first of each section)" in r.stderr
    assert "default_profile" not in r.stderr.split("\n", 1)[1]
    r, _ = check(tmp_path, THREE_BAD, "--json")
    d = json.loads(r.stdout)
    assert [e["line"] for e in d["errors"]] == [3, 7, 13]
    assert d["line"] == 3 and d["ok"] is False
    from qos_hooks.core import policy
    from qos_hooks.core.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        policy.parse_config(THREE_BAD, "x.conf")
    assert str(e.value).startswith("x.conf:3: ") and len(e.value.more) == 2
