"""The man pages (tools/gen-manpage.py) and the operator's guide cover the whole CLI.

qos-hooks(1) and the guide are checked against ``qos_hooks.cli.main.build_parser()``
itself, so a new subcommand or option that is not documented fails here;
qos-hooks.conf(5) is docs/policy.md converted, checked against the keys
qos_hooks.core.policy accepts.  Both committed pages must be what the generator
makes today and render without a warning from ``man --warnings``.
"""

import argparse
import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from qos_hooks.cli.main import build_parser
from tests import packaging_helpers as ph

GUIDE = os.path.join(ph.REPO, "docs", "operator-guide.md")


def _gen():
    spec = importlib.util.spec_from_file_location(
        "gen_manpage", os.path.join(ph.REPO, "tools", "gen-manpage.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _subparsers():
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return parser, action.choices
    raise AssertionError("no subcommands")


def roff(text):
    return text.replace("\\", "\\e").replace("-", "\\-")


def test_manpage_has_every_subcommand_and_option():
    gen = _gen()
    page = gen.render(date="2026-01-01")
    parser, subs = _subparsers()
    assert page.startswith('.\\"') and '.TH QOS-HOOKS 1 "2026-01-01"' in page
    for opt in ("--version", "--log-level"):
        assert "\\fB%s\\fR" % roff(opt) in page
    for name, sub in subs.items():
        assert ".SS \\fB%s\\fR" % roff(name) in page, name
        for action in sub._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert "\\fB%s\\fR" % roff(opt) in page, (name, opt)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS",
                    "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"):
        assert "\n.SH %s\n" % section in page, section
    # no line may start with a stray control character from help text
    for line in page.splitlines():
        assert not line.startswith("'"), line


def _without_date(page):
    return re.sub(r'^(\.TH \S+ [15]) "[^"]*"', r"\1", page, flags=re.M)


def test_manpage_examples_are_real_commands():
    """Each EXAMPLES command parses with today's CLI (no stale option)."""
    gen = _gen()
    assert len(gen.EXAMPLES) == 5
    parser = build_parser()
    for _, cmds in gen.EXAMPLES:
        for cmd in cmds.split("\n"):
            if cmd.startswith("qos-hooks "):
                parser.parse_args(cmd.split()[1:])   # SystemExit on a usage error


def test_manpage_names_no_checkout_path():
    """The committed page is one file for every install: no path of this checkout."""
    page = _gen().render(date="2026-01-01")
    assert ph.REPO not in page and "/usr/share/doc/qos\\-hooks/examples/" in page


def test_committed_manpage_is_current():
    """docs/qos-hooks.1 is what the generator makes of today's CLI (date aside)."""
    with open(os.path.join(ph.REPO, "docs", "qos-hooks.1"), encoding="utf-8") as f:
        committed = f.read()
    assert _without_date(committed) == _without_date(_gen().render()), \
        "docs/qos-hooks.1 is out of date with qos_hooks/cli/main.py: run 'make man' and commit it"


def test_conf5_page_is_policy_md(tmp_path):
    """qos-hooks.conf(5) is generated from docs/policy.md: every settings key and
    every profile key family qos_hooks.core.policy accepts is in it, and the committed
    docs/qos-hooks.conf.5 is current."""
    from qos_hooks.core import policy
    with open(os.path.join(ph.REPO, "docs", "policy.md"), encoding="utf-8") as f:
        md = f.read()
    page = _gen().render_conf(md, date="2026-01-01")
    assert '.TH QOS-HOOKS.CONF 5 "2026-01-01"' in page
    for key in policy._SETTINGS_KEYS + ("on_existing", "inbound.average", "outbound.burst",
                                        "disk.total_bytes_sec", "cpu.limit", "cpu.shares",
                                        "quota:vif_inbound_average"):
        assert "\\fB%s\\fR" % roff(key) in page or roff(key) in page, key
    for bus in policy.DISK_BUSES:
        assert "\\fB%s\\fR" % bus in page, bus
    with open(os.path.join(ph.REPO, "docs", "qos-hooks.conf.5"), encoding="utf-8") as f:
        committed = f.read()
    assert _without_date(committed) == _without_date(_gen().render_conf(md)), \
        "docs/qos-hooks.conf.5 is out of date with docs/policy.md: run " \
        "'python3 tools/gen-manpage.py --section 5 -o docs/qos-hooks.conf.5' and commit it"


@pytest.mark.parametrize("section", ["1", "5"])
def test_manpage_renders(tmp_path, section):
    out = tmp_path / ("qos-hooks.1" if section == "1" else "qos-hooks.conf.5")
    r = subprocess.run(["python3" if shutil.which("python3") else "python",
                        os.path.join(ph.REPO, "tools", "gen-manpage.py"), "--section", section,
                        "-o", str(out)],
                       capture_output=True, text=True, cwd=ph.REPO)
    assert r.returncode == 0, r.stderr
    for tool in ("man", "groff"):
        if shutil.which(tool) is None:
            msg = "%s is not installed (tests/install-deps.sh installs it): " \
                  "rendering not checked" % tool
            if os.environ.get("CI") == "true":
                pytest.fail(msg)
            pytest.skip(msg)
    r = subprocess.run(["man", "--warnings", "-l", str(out)], capture_output=True, text=True,
                       env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0"))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    text = re.sub(r".\x08", "", r.stdout)   # overstrike bold
    if section == "5":
        for head in ("WHERE THE FILE IS", "[SETTINGS]", "UNITS", "VALIDATION BOUNDS"):
            assert head in text, head
        return
    for name in _subparsers()[1]:
        assert name in r.stdout
    for head in ("EXIT STATUS", "FILES", "EXAMPLES"):
        assert "\n%s\n" % head in text, head


def test_operator_guide_covers_every_command():
    with open(GUIDE, encoding="utf-8") as f:
        guide = f.read()
    for name in _subparsers()[1]:
        assert "qos-hooks %s" % name in guide, "docs/operator-guide.md: no example of %r" % name
    for needle in ("engine-config -g UserDefinedVMProperties",
                   "engine-config -s UserDefinedVMProperties",
                   "CustomDeviceProperties", "UserDefinedNetworkCustomProperties",
                   "--cver", "systemctl restart ovirt-engine",
                   "{type=interface;prop={qos_profile=^[A-Za-z0-9_.-]+$}}"):
        assert needle in guide, needle
