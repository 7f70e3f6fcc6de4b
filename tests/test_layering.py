"""The package's import graph reads top-down: no import circles, and no module imports a floor above its own.

The graph is built with ``ast`` from the source (every ``import regressor...`` and
``from regressor... import`` / relative import, at module level, inside functions and under
``TYPE_CHECKING`` alike), so a lazy import inside a function counts as much as one at the top.
One exception: a package's ``__init__`` importing its own submodules *inside a function* (a lazy
facade such as ``regressor.detect.__getattr__``) is containment, not a dependency, and is left out;
the same import at module level runs whenever the package is imported, so it counts.

The floors, lowest first, follow the data flow image -> encoder -> FaceParams -> face model ->
render -> losses -> fitting / training (docs/architecture.md). A module may import its own floor and
the floors below it. The critic *network* sits low, beside the encoder (``regressor.models``), so the
losses use it from below; critic training data that runs the fitter sits above the fitter.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "regressor"

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("regressor", "regressor.types", "regressor.registry", "regressor.components", "regressor.assets")),
    ("inputs and measures", ("regressor.data", "regressor.detect", "regressor.evaluation")),
    ("face model", ("regressor.face_model",)),
    ("rendering", ("regressor.render",)),
    ("networks: encoder, critic network", ("regressor.models",)),
    ("losses", ("regressor.losses",)),
    ("pipeline, inference, outputs, synthetic data, critic training data",
     ("regressor.pipeline", "regressor.inference", "regressor.io", "regressor.synthetic",
      "regressor.evaluation.synth_scans", "regressor.critic")),
    ("fitting config", ("regressor.fitting_config",)),
    ("fitting", ("regressor.fitting",)),
    ("above the fitter: training, fits for the critic, entry points",
     ("regressor.critic.fits", "regressor.critic.fit_error_estimate", "regressor.training",
      "regressor.fitting_cli", "regressor.predict_cli", "regressor.cli", "regressor.demo")),
]


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package is its ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST, in_function: bool = False):
    """(import node, whether it sits inside a function) for every import in ``tree``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        yield from _imports(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (lazy facade edges left out)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            found: set[str | None] = set()
            if isinstance(node, ast.Import):
                found = {_known(alias.name, modules) for alias in node.names if alias.name.startswith("regressor")}
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.startswith("regressor"):
                    for alias in node.names:  # ``from pkg import submodule`` depends on the submodule
                        full = f"{source}.{alias.name}"
                        found.add(full if full in modules else _known(source, modules))
            for target in found:
                if target and target != name and not (in_function and target.startswith(name + ".")):
                    targets.add(target)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def floor_of(module: str) -> int | None:
    """The floor of the longest prefix (whole dotted parts) that ``FLOORS`` names; the root package only exactly."""
    best, best_len = None, -1
    for level, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "regressor" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits on a higher floor."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if floor_of(b) > floor_of(a))


def test_every_module_has_a_floor():
    unplaced = [m for m in package_modules() if floor_of(m) is None]
    assert not unplaced, f"place these modules on a floor in tests/test_layering.py FLOORS: {unplaced}"


def test_no_import_circles():
    found = circles(import_graph(package_modules()))
    assert not found, "import circles (each line one circle): \n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_module_imports_a_floor_above_its_own():
    upward = upward_imports(import_graph(package_modules()))
    assert not upward, "upward imports:\n" + "\n".join(
        f"  {a} (floor {floor_of(a)}: {FLOORS[floor_of(a)][0]}) -> {b} (floor {floor_of(b)}: {FLOORS[floor_of(b)][0]})"
        for a, b in upward)


def test_the_checker_sees_lazy_imports_circles_and_upward_edges(tmp_path):
    root = tmp_path / "regressor"
    (root / "losses").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "types.py").write_text("def f():\n    from regressor.losses import term\n")
    (root / "losses" / "__init__.py").write_text("def __getattr__(name):\n    from . import term\n")
    (root / "losses" / "term.py").write_text("from regressor.types import f\nimport regressor.fitting\n")
    (root / "fitting.py").write_text("from regressor.critic import negatives\n")
    (root / "critic" / "types").mkdir(parents=True)
    (root / "critic" / "__init__.py").write_text("")
    (root / "critic" / "negatives.py").write_text("import regressor.critic.types\n")
    (root / "critic" / "types" / "__init__.py").write_text("from regressor.critic.types import builtin\n")
    (root / "critic" / "types" / "builtin.py").write_text("from regressor.critic.negatives import x\n")
    graph = import_graph(package_modules(root))
    assert graph["regressor.losses"] == set()  # a lazy facade over its own submodule: containment
    assert graph["regressor.types"] == {"regressor.losses.term"}  # a lazy import counts
    assert graph["regressor.critic.types"] == {"regressor.critic.types.builtin"}  # an eager one counts
    assert circles(graph) == [
        ["regressor.critic.negatives", "regressor.critic.types", "regressor.critic.types.builtin"],
        ["regressor.losses.term", "regressor.types"],
    ]
    assert upward_imports(graph) == [("regressor.losses.term", "regressor.fitting"),  # fitting -> critic is down
                                     ("regressor.types", "regressor.losses.term")]
