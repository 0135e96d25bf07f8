#!/usr/bin/env python3
"""Write the man pages, in roff: qos-hooks(1) and qos-hooks.conf(5).

    python3 tools/gen-manpage.py [--section 1|5] [--output FILE]   (default: 1, stdout)

Section 1 comes from ``qos_hooks.cli.main.build_parser()``: the synopsis, the
description, every subcommand with its usage, description and options, and
the epilog (EXIT STATUS, FILES, ENVIRONMENT), plus EXAMPLES (the first things
an operator does, below) and the installed FILES (paths from
qos_hooks.cli.install).  Section 5 is docs/policy.md itself, converted: the key
tables, units, disk rules, selection and bounds of the policy file have one
source.  ``make man`` and the RPM's %build run this, so the pages cannot drift
from ``--help`` or from docs/policy.md (tests/cli/test_manpage.py checks the
committed docs/qos-hooks.1 and docs/qos-hooks.conf.5).  Needs only the
standard library (qos_hooks.cli.main imports nothing else at module level).
"""

import argparse
import datetime
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
POLICY_MD = os.path.join(REPO, "docs", "policy.md")

from qos_hooks import __version__  # noqa: E402
from qos_hooks.cli.main import build_parser  # noqa: E402
from qos_hooks.cli import install as inst  # noqa: E402

# EXAMPLES: the first five things an operator does, in order
EXAMPLES = (
    ("See what the hooks would do, on the example shipped with this install "
     "(from any directory):", "qos-hooks dry-run --example"),
    ("Check a policy file against a real VM before deploying it (nothing is touched; "
     "exit 3 names the file, line and key of a mistake):",
     "virsh dumpxml vm1 > vm1.xml\n"
     "qos-hooks dry-run --config new.conf --profile gold vm1.xml"),
    ("Install the hooks from a pip install (the RPMs install the same files): VDSM hooks, "
     "root helper and sudoers drop-in on oVirt hosts; the qemu.d hook on plain libvirt:",
     "qos-hooks install --vdsm\nqos-hooks install --libvirt"),
    ("Give a running VM a profile now, and keep it in its definition:",
     "qos-hooks set --domain vm1 --profile gold --live --persistent"),
    ("Check that what is in force matches the policy (exit 7 on drift; on a host "
     "without Open vSwitch: the libvirt tc of the running domains):",
     "qos-hooks status\nqos-hooks status --json"),
)

# FILES: what an installed host has (qos_hooks.cli.install is the one list)
FILES = (
    (inst.CONFIG, "the policy file: profiles and settings, see qos-hooks.conf(5)"),
    ("/usr/share/doc/qos-hooks/examples/", "the example config and domain XML (RPM); "
     "a pip install has them under qos_hooks/data/examples/"),
    ("%s/HOOK_POINT/%s" % (inst.VDSM_HOOKS_DIR, inst.HOOK_NAME),
     "the VDSM hooks (vdsm-hook-qos, or qos-hooks install --vdsm)"),
    ("%s/%s" % (inst.LIBVIRT_QEMU_D, inst.HOOK_NAME),
     "the libvirt qemu hook (qos-hooks-libvirt, or qos-hooks install --libvirt)"),
    (inst.HELPER, "the root helper VDSM hooks call through sudo"),
    (inst.SUDOERS, "the sudoers drop-in that allows exactly that helper"),
    (inst.UNIT, "re-applies host network QoS after ovs-vswitchd restarts"),
    (inst.STATE_DIR + "/", "state: remembered host network QoS, files installed by "
     "qos-hooks install"),
)


def esc(text):
    """Escape text for roff: backslashes, hyphens, and control characters at line start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line
                     for line in text.split("\n"))


def bold(text):
    return "\\fB" + esc(text) + "\\fR"


def italic(text):
    return "\\fI" + esc(text) + "\\fR"


def _help(parser, action):
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    formatter = parser._get_formatter()
    return formatter._expand_help(action)


def _invocation(parser, action):
    if not action.option_strings:
        return italic(parser._get_formatter()._format_args(action, action.dest.upper())
                      if action.metavar is None else str(action.metavar))
    parts = []
    for opt in action.option_strings:
        if action.nargs == 0:
            parts.append(bold(opt))
        else:
            metavar = action.metavar or (
                "{%s}" % ",".join(map(str, action.choices)) if action.choices
                else action.dest.upper())
            parts.append(bold(opt) + " " + italic(metavar))
    return ", ".join(parts)


def _summary(description):
    """First clause of the description, lower-cased, for the NAME line."""
    first = re.split(r"[:.]\s", description.strip(), maxsplit=1)[0].rstrip(".")
    return first[:1].lower() + first[1:]


def _usage(parser):
    usage = parser.format_usage().strip()
    usage = re.sub(r"^usage:\s*", "", usage)
    return " ".join(usage.split())


def _options(parser, skip_help=True):
    lines = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if skip_help and isinstance(action, argparse._HelpAction):
            continue
        lines.append(".TP")
        lines.append(_invocation(parser, action))
        lines.append(esc(_help(parser, action)) or "")
    return lines


def _paragraphs(text):
    """Description text as filled paragraphs (its line breaks are only wrapping)."""
    out = []
    for block in text.strip("\n").split("\n\n"):
        out.append(".PP")
        out.append(esc(" ".join(block.split())))
    return out


def _subcommands(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub
            return


def render(parser=None, date=None):
    parser = parser or build_parser(for_manpage=True)
    prog = parser.prog
    date = date or datetime.date.today().isoformat()
    out = [
        '.\\" Generated by tools/gen-manpage.py from qos_hooks.cli.main.build_parser(); do not edit.',
        '.TH %s 1 "%s" "%s %s" "User Commands"' % (prog.upper(), date, prog, __version__),
        ".SH NAME",
        "%s \\- %s" % (esc(prog), esc(_summary(parser.description))),
        ".SH SYNOPSIS",
    ]
    for name, _, sub in _subcommands(parser):
        out.append(".br")
        out.append(esc(_usage(sub)))
    out += [".SH DESCRIPTION", esc(parser.description), ".SH OPTIONS"]
    out += _options(parser, skip_help=False)
    out.append(".SH COMMANDS")
    for name, short, sub in _subcommands(parser):
        out.append(".SS %s" % bold(name))
        out.append(esc(short[:1].upper() + short[1:] + ".") if short else "")
        out.append(".PP")
        out.append(esc(_usage(sub)))
        if sub.description and sub.description != short:
            out += _paragraphs(sub.description)
        opts = _options(sub)
        if opts:
            out.append(".PP")
            out.append("Options and arguments:")
            out.append(".RS")
            out += opts
            out.append(".RE")
    sections = {"exit codes": "EXIT STATUS", "files and environment": "ENVIRONMENT"}
    if parser.epilog:
        for block in parser.epilog.strip("\n").split("\n\n"):
            head, _, body = block.partition("\n")
            head = head.rstrip(":")
            if head == "start here":
                continue   # EXAMPLES says it, with the documented paths
            out.append(".SH %s" % esc(sections.get(head, head.upper())))
            out.append(".nf")
            out.append(esc(body))
            out.append(".fi")
    out.append(".SH FILES")
    for path, what in FILES:
        out += [".TP", bold(path), esc(what)]
    out.append(".SH EXAMPLES")
    for i, (what, cmd) in enumerate(EXAMPLES, 1):
        out += [".PP", "%d. %s" % (i, esc(what)), ".PP", ".RS 4", ".nf"]
        out += [esc(line) for line in cmd.split("\n")]
        out += [".fi", ".RE"]
    out += [".SH SEE ALSO",
            "\\fBqos\\-hooks.conf\\fR(5) for the policy file; the operator's guide, "
            "docs/operator\\-guide.md (installed under /usr/share/doc/qos\\-hooks/ by the RPM)."]
    return "\n".join(out) + "\n"


# -- section 5: docs/policy.md in roff ------------------------------------------------

_UNICODE = {"\u2192": "\\(->", "\u00d7": "\\(mu", "\u2265": "\\(>=", "\u2264": "\\(<=",
            "\u00b5": "\\(mc", "\u2212": "\\-", "\u00b7": "\\(pc", "\u2026": "...",
            "\u2014": "\\(em", "\u2013": "\\(en", "\u2019": "'"}
_INLINE = re.compile(r"(`[^`]+`|\*\*[^*]+\*\*|\[[^\]]+\]\([^)]+\))")


def _esc5(text):
    out = text.replace("\\", "\\e").replace("-", "\\-")
    for u, r in _UNICODE.items():
        out = out.replace(u, r)
    return out


def inline(text):
    """Markdown inline markup (code, bold, links) to roff."""
    parts = []
    for tok in _INLINE.split(text):
        if not tok:
            continue
        if tok.startswith("`") and tok.endswith("`"):
            parts.append("\\fB" + _esc5(tok[1:-1]) + "\\fR")
        elif tok.startswith("**"):
            parts.append("\\fB" + _esc5(tok[2:-2].replace("`", "")) + "\\fR")
        elif tok.startswith("["):
            parts.append(inline(tok[1:tok.index("](")]))
        else:
            parts.append(_esc5(tok))
    return "".join(parts)


def _safe_lines(lines):
    return [("\\&" + ln) if ln[:1] in (".", "'") else ln for ln in lines]


def _cells(row):
    return [c.strip() for c in row.strip().strip("|").split("|")]


def render_conf(md_text, date=None):
    """qos-hooks.conf(5) from the text of docs/policy.md."""
    date = date or datetime.date.today().isoformat()
    out = ['.\\" Generated by tools/gen-manpage.py --section 5 from docs/policy.md; do not edit.',
           '.TH QOS-HOOKS.CONF 5 "%s" "qos-hooks %s" "File Formats"' % (date, __version__),
           ".SH NAME",
           "qos\\-hooks.conf \\- the qos\\-hooks policy file: QoS profiles for libvirt and "
           "oVirt VMs",
           ".SH SYNOPSIS", "/etc/qos\\-hooks/qos\\-hooks.conf",
           ".SH DESCRIPTION"]
    lines = md_text.splitlines()
    i = 0
    para = []

    def flush():
        if para:
            out.append(".PP")
            out.extend(_safe_lines([inline(" ".join(para))]))
            del para[:]

    while i < len(lines):
        line = lines[i]
        if line.startswith("# ") or line.startswith("Contents:"):
            flush()
            while line.strip():   # the title, or the contents paragraph
                i += 1
                line = lines[i] if i < len(lines) else ""
            continue
        if line.startswith("## "):
            flush()
            title = re.sub(r"^\d+\.\s*", "", line[3:]).replace("`", "")
            out.append(".SH %s" % _esc5(title.upper()))
        elif line.startswith("### "):
            flush()
            out.append(".SS %s" % _esc5(line[4:].replace("`", "")))
        elif line.startswith("```"):
            flush()
            out += [".PP", ".RS 4", ".nf"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.extend(_safe_lines([_esc5(lines[i])]))
                i += 1
            out += [".fi", ".RE"]
        elif line.startswith("|"):
            flush()
            head = _cells(line)
            i += 2   # the header and the |---| line
            while i < len(lines) and lines[i].startswith("|"):
                cells = _cells(lines[i])
                out += [".TP", inline(cells[0])]
                rest = []
                for h, c in zip(head[1:], cells[1:]):
                    if c:
                        rest.append(("%s: %s" % (h, c)) if h else c)
                out.extend(_safe_lines([inline("; ".join(rest))]) if rest else [])
                i += 1
            continue
        elif re.match(r"^(\*|\d+\.) ", line):
            flush()
            m = re.match(r"^(\*|\d+\.) ", line)
            item = [line[m.end():]]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                item.append(lines[i].strip())
                i += 1
            mark = "\\(bu" if m.group(1) == "*" else m.group(1)
            out.append(".IP %s 4" % mark)
            out.extend(_safe_lines([inline(" ".join(item))]))
            continue
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    out += [".SH SEE ALSO", "\\fBqos\\-hooks\\fR(1)"]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    ap.add_argument("--section", choices=("1", "5"), default="1",
                    help="1: qos-hooks(1) from the CLI; 5: qos-hooks.conf(5) from docs/policy.md")
    ap.add_argument("--date", help="date in the .TH line (default: $SOURCE_DATE_EPOCH or today)")
    args = ap.parse_args(argv)
    date = args.date
    if date is None and os.environ.get("SOURCE_DATE_EPOCH"):
        date = datetime.datetime.fromtimestamp(
            int(os.environ["SOURCE_DATE_EPOCH"]), datetime.timezone.utc).date().isoformat()
    if args.section == "5":
        with open(POLICY_MD, encoding="utf-8") as f:
            text = render_conf(f.read(), date=date)
    else:
        text = render(date=date)
    if args.output:
        d = os.path.dirname(args.output)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
