"""The package's folders are its layers, and imports only run downward.

Read from the source (ast), counting every import, also those made inside
functions (lazy imports keep hook start-up cheap, but they go downward too):

* a module imports only from its own layer or a layer below it (LAYERS);
* there is no import cycle at all among the package's modules;
* core/ imports nothing that opens a socket, runs a process or talks netlink,
  OVSDB or libvirt;
* the policy parser does not know about host networks;
* the OVS plan for dry-run, which reads OVSDB, lives with the backend, not in
  the pure mapping.

docs/architecture.md describes the same layers; this test keeps it true.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(ROOT, "qos_hooks")

# bottom to top: a layer may import from itself and from the layers before it
LAYERS = ("core", "kernel", "ovs", "hostnet", "priv", "virt", "observe", "hooks", "agent", "cli")
# what the pure core must never import (sockets, processes, netlink, OVSDB, libvirt)
CORE_FORBIDDEN = ("socket", "subprocess", "pyroute2", "ovs", "libvirt", "http", "urllib",
                  "asyncio", "select", "selectors", "multiprocessing", "ssl")


def modules():
    """{dotted module name: path} for every module of the package."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PKG):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "data"))
        for f in sorted(filenames):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, f)
    return out


def imports_of(name, path, known):
    """Every import in the module (top level or not): (dotted target, lineno)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    pkg = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg[:len(pkg) - node.level + 1])
                mod = base + ("." + node.module if node.module else "")
            else:
                mod = node.module
            for a in node.names:
                sub = "%s.%s" % (mod, a.name)
                out.append((sub if sub in known else mod, node.lineno))
    return out


def layer_of(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def graph():
    known = modules()
    edges = {}
    for name, path in known.items():
        edges[name] = [(t, ln) for t, ln in imports_of(name, path, known)]
    return known, edges


def test_every_module_sits_in_a_layer():
    known, _ = graph()
    top = {"qos_hooks", "qos_hooks.__main__"} | {"qos_hooks." + x for x in LAYERS}
    loose = sorted(n for n in known if n not in top and layer_of(n) is None)
    assert not loose, "modules outside the layer folders: %s" % loose


def test_imports_only_run_downward():
    known, edges = graph()
    bad = []
    for name, targets in edges.items():
        mine = layer_of(name)
        if mine is None:
            continue
        for target, line in targets:
            if not target.startswith("qos_hooks."):
                continue
            theirs = layer_of(target)
            if theirs is None:
                continue
            if LAYERS.index(theirs) > LAYERS.index(mine):
                bad.append("%s:%d imports %s (%s is above %s)"
                           % (known[name][len(ROOT) + 1:], line, target, theirs, mine))
    assert not bad, "\n".join(bad)


def test_no_import_cycle_at_all():
    known, edges = graph()
    adj = {n: sorted({t for t, _ in ts if t in known and t != n}) for n, ts in edges.items()}
    # drop package __init__ edges to their own children (a package importing
    # its submodule is not a cycle through the child)
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in adj.get(n, ()):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(adj):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_core_does_no_io_beyond_files():
    known, edges = graph()
    bad = []
    for name, targets in edges.items():
        if layer_of(name) != "core":
            continue
        for target, line in targets:
            if target.split(".")[0] in CORE_FORBIDDEN:
                bad.append("%s:%d imports %s" % (known[name][len(ROOT) + 1:], line, target))
    assert not bad, "\n".join(bad)


def test_policy_parser_does_not_know_host_networks():
    known, edges = graph()
    hits = [(t, ln) for t, ln in edges["qos_hooks.core.policy"]
            if t.startswith("qos_hooks.hostnet")]
    assert not hits, hits


def test_dry_run_ovs_plan_lives_with_the_backend():
    known, edges = graph()
    with open(known["qos_hooks.ovs.mapping"], encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert "plan_domain" not in names
    assert not [t for t, _ in edges["qos_hooks.ovs.mapping"] if t == "qos_hooks.ovs.ovsdb"]


def test_the_rules_see_lazy_imports():
    """The reader above counts an import inside a function: checked on a
    module known to import lazily (kept so the rules cannot go vacuous)."""
    known, edges = graph()
    lazy = []
    for name, path in known.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                            "qos_hooks"):
                        lazy.append((name, node.module, node.lineno))
    assert lazy, "no lazy import found: the walker would miss them"
    for name, mod, line in lazy:
        assert any(t.startswith(mod) and ln == line for t, ln in edges[name]), (name, mod, line)


def test_every_layer_is_packaged():
    """pyproject.toml lists every package folder (setuptools does not find
    subpackages of an explicit list by itself)."""
    import re
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"(?ms)^packages = \[(.*?)\]", text)
    listed = set(re.findall(r'"([\w.]+)"', m.group(1)))
    have = {"qos_hooks"} | {"qos_hooks." + d for d in os.listdir(PKG)
                            if os.path.isfile(os.path.join(PKG, d, "__init__.py"))}
    assert listed == have
