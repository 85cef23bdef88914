"""The shape of the code: no import circles, commands that share through
commands/common.py and commands/session.py only, and cli.py imported by
nothing (it wires the commands; they never reach back into it)."""

import ast
import os

import pfntrace

ROOT = os.path.dirname(os.path.abspath(pfntrace.__file__))
COMMANDS = "pfntrace.commands"
SHARED = {"pfntrace.commands.common", "pfntrace.commands.session"}


def _module_name(path):
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-len(".py")].split(os.sep)
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join(rel)


def _modules():
    for top, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(top, name)


def _imports(path, modules):
    """The pfntrace modules path imports, at any depth (lazy imports in
    functions are imports all the same)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pfntrace import decode` imports the module pfntrace.decode
            names = [node.module] + ["%s.%s" % (node.module, a.name) for a in node.names]
        else:
            continue
        out.update(n for n in names if n in modules)
    return out


def _ancestors(m):
    parts = m.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def graph():
    """{module: the pfntrace modules it imports}.  A module's own packages
    are left out: Python runs a package's __init__ before any of its
    modules, whoever imports them, so importing one's own package is no
    edge of a circle (`from pfntrace.recording import format`)."""
    paths = {_module_name(p): p for p in _modules()}
    return {m: _imports(p, paths) - {m} - _ancestors(m) for m, p in paths.items()}


def _cycles(g):
    """Every import circle, each as the list of modules on it."""
    found, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open":
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    return found


def test_the_graph_sees_lazy_imports():
    g = graph()
    assert "pfntrace.commands.common" in g["pfntrace.cli"]
    # top.py imports its view inside a function, reader.py the decoder at the top
    assert "pfntrace.views.top" in g["pfntrace.commands.top"]
    assert "pfntrace.decode" in g["pfntrace.recording.reader"]
    assert "pfntrace.recording" not in g["pfntrace.recording.reader"]   # its own package


def test_no_import_circles():
    assert _cycles(graph()) == []


def test_the_circle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_commands_share_only_through_common_and_session():
    g = graph()
    for m, deps in g.items():
        if not m.startswith(COMMANDS + "."):
            continue
        others = {d for d in deps if d.startswith(COMMANDS + ".") and d not in SHARED}
        assert not others, (m, others)


def test_nothing_imports_cli():
    g = graph()
    assert [m for m, deps in g.items() if "pfntrace.cli" in deps] == ["pfntrace.__main__"]
