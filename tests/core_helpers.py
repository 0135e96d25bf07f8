"""Helpers shared by the core tests (domain XML, rewrite, dry-run, properties)."""

import os
import shutil
import subprocess
import sys
import tempfile

from lxml import etree

from qos_hooks.core import policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
QOS_TAGS = ("bandwidth", "iotune", "cputune")


def config(text, path="test.conf"):
    return policy.parse_config(text, path)


def have_validator():
    return bool(shutil.which("virt-xml-validate") and shutil.which("xmllint"))


def validate(data):
    """Run libvirt's schema check on domain XML bytes; return (ok, output)."""
    if not have_validator():
        raise AssertionError("virt-xml-validate and xmllint are needed (tests/install-deps.sh "
                             "installs libvirt-clients and libxml2-utils)")
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        f.write(data)
        f.flush()
        p = subprocess.run(["virt-xml-validate", f.name, "domain"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    return p.returncode == 0, p.stdout.decode("utf-8", "replace")


def strip_qos(data):
    """The document with every QoS node this project may write removed, as a
    canonical string: what must be equal before and after a rewrite."""
    root = etree.fromstring(data)
    for tag in QOS_TAGS:
        for e in root.iter(tag):
            e.getparent().remove(e)
    for q in list(root.iter("{http://ovirt.org/vm/tune/1.0}qos")):
        for child in list(q):
            if isinstance(child.tag, str) and etree.QName(child).localname == "vcpuLimit":
                q.remove(child)
        if len(q) == 0:    # the container the rewriter may have created
            q.getparent().remove(q)
    for e in root.iter():
        # whitespace-only text and tails are layout, not content
        if e.text is not None and not e.text.strip():
            e.text = None
        if e.tail is not None and not e.tail.strip():
            e.tail = None
    return etree.tostring(root, method="c14n")


def run_cli(*args, stdin=None, env=None, cwd=None):
    """Run ``python -m qos_hooks`` as a subprocess; return CompletedProcess."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("QOS_HOOKS_CONFIG", None)
    e.pop("QOS_HOOKS_LOG_LEVEL", None)
    e["NO_COLOR"] = "1"
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "qos_hooks"] + list(args), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                          cwd=cwd or ROOT, timeout=120)
