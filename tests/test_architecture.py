"""The shape of the code, held by tests: no import circle, short functions, no private names taken
from another module, and no model named by a string where a capability should be asked."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "relcomp"
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def imports(name: str, tree: ast.Module, is_package: bool) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, anywhere in it."""
    found = []
    package = name if is_package else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return [(t, n) for t, n in found if t == "relcomp" or t.startswith("relcomp.")]


def graph() -> dict[str, set[str]]:
    mods = modules()
    g: dict[str, set[str]] = {}
    for name, tree in mods.items():
        is_pkg = (SRC.parent / name.replace(".", "/") / "__init__.py").exists()
        deps = set()
        for target, names in imports(name, tree, is_pkg):
            for n in names:  # `from .data import sources` imports the module relcomp.data.sources
                if f"{target}.{n}" in mods:
                    deps.add(f"{target}.{n}")
            deps.add(target)
        g[name] = {d for d in deps if d in mods and d != name}
    return g


def test_no_import_circle():
    g = graph()
    # A package's __init__ re-exports its modules; an edge into a package's own __init__ from inside
    # the package is the import system's, not a design circle.
    for name in g:
        g[name] = {d for d in g[name] if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g[n]):
            if state.get(d) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_no_private_name_imported_from_another_module():
    bad = []
    for name, tree in modules().items():
        is_pkg = (SRC.parent / name.replace(".", "/") / "__init__.py").exists()
        for target, names in imports(name, tree, is_pkg):
            bad += [f"{name}: {n} from {target}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, bad


def test_functions_are_short():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


def test_models_are_asked_what_they_can_do_not_named():
    """Outside the registry and the studies (whose content is which models to compare), no code
    tests a model's name."""
    pattern = re.compile(r"""(model|kind)\s*[!=]=\s*["'](supervised|siamese|weak|ranker)["']""")
    allowed = {"models.py", "config.py"}
    hits = []
    for path in SRC.rglob("*.py"):
        if path.name in allowed or "studies" in path.parts:
            continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(SRC)}:{k}: {line.strip()}")
    assert not hits, hits
