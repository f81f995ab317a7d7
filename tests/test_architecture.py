"""The shape of the code, held by tests (docs/architecture.md says why):

- no import circle, between modules or between folders; no private name taken from another module;
- 1. the library never imports ``cli`` or ``lab``; ``lab`` takes from the library only the names of
  ``relcomp.__all__`` and of the documented internal API (:data:`LAB_API`);
- 2. ``train(`` and ``evaluate_run(`` are called in the lab only by the harness (and the bench);
- 3. a study is one module with ``run``, ``markdown`` and ``figures``, listed once;
- 4. no argparse ``Namespace`` leaves ``cli``;
- 5. a run folder's file names appear only in ``run.py``;
- 6. functions, classes and modules are short;
- no model named by a string where a capability should be asked.

Each rule's test is also run on a planted violation (``test_each_rule_catches_a_planted_violation``)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "relcomp"
MAX_FUNCTION_LINES, MAX_CLASS_LINES, MAX_MODULE_LINES = 60, 120, 400
# What may be longer than the limits, and how long: none today. An entry may only shrink, and one no
# longer needed fails the test (a place to list a debt while it is paid, never to hide one).
LONG_TODAY: dict[str, int] = {}
# The library modules the lab may use beyond relcomp.__all__: its documented internal API.
LAB_API = {"relcomp.config", "relcomp.trainer", "relcomp.data.mnist", "relcomp.data.pairs", "relcomp.data.sources", "relcomp.engine",
           "relcomp.callbacks", "relcomp.evaluate", "relcomp.fewshot", "relcomp.inference", "relcomp.losses",
           "relcomp.metrics", "relcomp.models", "relcomp.run", "relcomp.suggest", "relcomp.utils", "relcomp.errors",
           "relcomp.plots", "relcomp.analysis", "relcomp.ordinal", "relcomp.distributed", "relcomp.data.comparisons", "relcomp.data.splits",
           "relcomp.annotate.oracle"}
RUN_FILES = ("config.json", "best.safetensors", "metrics.jsonl", "timing.jsonl", "validation.json", "annotators.json",
             "eval.json", "fewshot.json", "curves.png", "confusion.png", "reliability.png", "confusion-")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(src: Path = SRC) -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), filename=str(path)) for path in sorted(src.rglob("*.py"))}


def sources() -> dict[str, str]:
    return {module_name(path): path.read_text() for path in sorted(SRC.rglob("*.py"))}


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


def find_circle(g: dict[str, set[str]]) -> str | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> str | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                return " -> ".join(stack[stack.index(d):] + [d])
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def module_circle(g: dict[str, set[str]]) -> str | None:
    # A package's __init__ re-exports its modules; an edge into a package's own __init__ from inside
    # the package is the import system's, not a design circle.
    return find_circle({n: {d for d in ds if not n.startswith(d + ".")} for n, ds in g.items()})


def folder_of(name: str) -> str:
    """A module's place one level below the package: its subpackage (relcomp.data, relcomp.lab,
    relcomp.cli), or the top-level module itself."""
    return ".".join(name.split(".")[:2])


def folder_circle(g: dict[str, set[str]]) -> str | None:
    """A circle between subpackages and top-level modules (relcomp.data -> relcomp.backbones ->
    relcomp.data counts). relcomp/__init__ is the public API that re-exports the library: edges into
    it are left out."""
    fg: dict[str, set[str]] = {}
    for n, ds in g.items():
        for d in ds:
            a, b = folder_of(n), folder_of(d)
            if a != b and d != "relcomp" and n != "relcomp":
                fg.setdefault(a, set()).add(b)
    return find_circle(fg)


def test_no_import_circle():
    assert module_circle(graph()) is None, module_circle(graph())


def test_the_data_layer_never_imports_the_models_side():
    """Data sources know nothing of backbones or models (a frozen encoder reaches them through
    relcomp.data.splits.ENCODERS)."""
    assert not [f"{n} imports {d}" for n, ds in graph().items() if n.startswith("relcomp.data")
                for d in ds if d in ("relcomp.backbones", "relcomp.models")]


def test_no_folder_level_circle():
    assert folder_circle(graph()) is None, folder_circle(graph())


def test_no_private_name_imported_from_another_module():
    bad = []
    for name, tree in modules().items():
        is_pkg = (SRC.parent / name.replace(".", "/") / "__init__.py").exists()
        for target, names in imports(name, tree, is_pkg):
            bad += [f"{name}: {n} from {target}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, bad


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


# ---------------------------------------------------------------------------------------------
# The six rules of the redesign. Each check returns its violations, so a planted one can be shown.

def library_imports_lab_or_cli(g: dict[str, set[str]]) -> list[str]:
    lab_cli = ("relcomp.lab", "relcomp.cli")
    return [f"{n} imports {d}" for n, ds in g.items() if not n.startswith(lab_cli) and n != "relcomp.__main__"
            for d in ds if d.startswith(lab_cli)]


def lab_outside_its_api(mods: dict[str, ast.Module]) -> list[str]:
    import relcomp

    bad = []
    for name, tree in mods.items():
        if not name.startswith("relcomp.lab"):
            continue
        for target, names in imports(name, tree, (SRC.parent / name.replace(".", "/") / "__init__.py").exists()):
            if target.startswith("relcomp.lab"):
                continue
            if target == "relcomp":
                bad += [f"{name}: {n}" for n in names if n not in relcomp.__all__]
            elif target not in LAB_API:
                bad.append(f"{name}: {target}")
    return bad


def calls_of(tree: ast.Module, names: set[str]) -> list[int]:
    """Lines that call the library's ``names`` (``train(...)``, ``relcomp.train(...)``), not a
    harness's methods of the same name (``h.train(...)``)."""
    def library_call(f: ast.expr) -> bool:
        if isinstance(f, ast.Name):
            return f.id in names
        return isinstance(f, ast.Attribute) and f.attr in names and isinstance(f.value, ast.Name) \
            and f.value.id == "relcomp"
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and library_call(node.func)]


def lab_trains_outside_the_harness(mods: dict[str, ast.Module]) -> list[str]:
    allowed = {"relcomp.lab.harness", "relcomp.lab.bench"}
    return [f"{name}:{line}" for name, tree in mods.items() if name.startswith("relcomp.lab") and name not in allowed
            for line in calls_of(tree, {"train", "evaluate_run"})]


def studies_off_contract(studies: dict) -> list[str]:
    return [f"{kind}: no {fn}" for kind, mod in studies.items() for fn in ("run", "markdown", "figures")
            if not callable(getattr(mod, fn, None))]


def namespace_leaves_cli(mods: dict[str, ast.Module]) -> list[str]:
    bad = []
    for name, tree in mods.items():
        if name.startswith("relcomp.cli"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                bad.append(f"{name}: imports argparse")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(a.arg == "args" for a in node.args.args):
                bad.append(f"{name}.{node.name}: takes args")
    return bad


def run_file_names_outside_run(texts: dict[str, str]) -> list[str]:
    bad = []
    for name, text in texts.items():
        if name == "relcomp.run":
            continue
        for k, line in enumerate(text.splitlines(), 1):
            for f in RUN_FILES:
                # a Hugging Face model folder has a config.json of its own
                if f'"{f}' in line and not (name == "relcomp.backbones" and f == "config.json"):
                    bad.append(f"{name}:{k}: {f}")
    return bad


def lengths(mods: dict[str, ast.Module], texts: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Every module, class and function: (its length in lines, its standard limit)."""
    out = {}
    for name, tree in mods.items():
        out[name] = (len(texts[name].splitlines()), MAX_MODULE_LINES)
        for node in ast.walk(tree):
            limit = {ast.FunctionDef: MAX_FUNCTION_LINES, ast.AsyncFunctionDef: MAX_FUNCTION_LINES,
                     ast.ClassDef: MAX_CLASS_LINES}.get(type(node))
            if limit is not None:
                out[f"{name}.{node.name}"] = (node.end_lineno - node.lineno + 1, limit)
    return out


def too_long(mods: dict[str, ast.Module], texts: dict[str, str]) -> list[str]:
    return [f"{name}: {n} lines" for name, (n, limit) in lengths(mods, texts).items()
            if n > LONG_TODAY.get(name, limit)]


def test_rule_1_the_library_never_imports_the_lab_or_the_cli():
    assert not library_imports_lab_or_cli(graph())
    assert not lab_outside_its_api(modules())


def test_rule_2_only_the_harness_trains_and_evaluates_in_the_lab():
    assert not lab_trains_outside_the_harness(modules())


def test_rule_3_a_study_is_one_module_listed_once():
    from relcomp.lab import report, reproduce
    from relcomp.lab.studies import STUDIES

    assert not studies_off_contract(STUDIES)
    assert set(STUDIES) <= set(report.RENDERERS) and reproduce.STUDIES is STUDIES
    # the kinds are written in the list alone, not again in reproduce or report
    for mod in ("relcomp.lab.reproduce", "relcomp.lab.report"):
        assert not re.search(r'"(beyond|crowd|ties|bt|own)"', sources()[mod]), mod


def test_rule_4_no_namespace_leaves_the_cli():
    assert not namespace_leaves_cli(modules())


def test_rule_5_run_file_names_only_in_run():
    assert not run_file_names_outside_run(sources())


def test_rule_6_short_functions_classes_and_modules():
    mods, texts = modules(), sources()
    assert not too_long(mods, texts), too_long(mods, texts)
    sizes = lengths(mods, texts)
    # an exception that is no longer needed (shortened, or gone) is removed from LONG_TODAY
    assert not [n for n in LONG_TODAY if n not in sizes or sizes[n][0] <= sizes[n][1]]


def test_each_rule_catches_a_planted_violation():
    """Each check, given code that breaks its rule, reports it (the checks are not vacuous)."""
    g = graph()
    assert module_circle({**g, "relcomp.run": g["relcomp.run"] | {"relcomp.engine"}})
    assert folder_circle({**g, "relcomp.data.splits": g["relcomp.data.splits"] | {"relcomp.backbones"}})
    assert library_imports_lab_or_cli({**g, "relcomp.engine": g["relcomp.engine"] | {"relcomp.lab.harness"}})
    planted = {"relcomp.lab.studies.x": ast.parse("from ...data.idx import read_idx\nfrom ... import _private\n"
                                                 "train(cfg, out)\nrelcomp.evaluate_run(out)\nh.train(cfg)\n")}
    assert len(lab_outside_its_api(planted)) == 2
    assert len(lab_trains_outside_the_harness(planted)) == 2
    assert studies_off_contract({"x": ast})
    assert namespace_leaves_cli({"relcomp.engine": ast.parse("import argparse\ndef f(args): pass\n")})
    assert run_file_names_outside_run({"relcomp.engine": 'p = out / "eval.json"\n'})
    long_fn = "def f():\n" + "    x = 1\n" * 70
    assert too_long({"relcomp.x": ast.parse(long_fn)}, {"relcomp.x": long_fn})
