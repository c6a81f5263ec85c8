"""The import structure: no circles, and the lower layers never import a kind of experiment.

The import statements of every module of ``dynsim`` and ``analysis`` are read with ``ast``
(module-level and function-level imports alike, since a function-level import is a dependency
too), resolved to the package's own modules, and searched for strongly connected components.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dynsim", "analysis")

#: modules that define or choose kinds of experiment; the layers below must not import them
KIND_LAYER = {"dynsim.kinds", "dynsim.experiment", "dynsim.simple_experiment", "dynsim.deep_experiment",
              "dynsim.chain_experiment", "dynsim.cli", "dynsim.sweep", "dynsim.precompile"}
#: the layers below the kinds (a package prefix covers its sub-modules)
LOWER_LAYERS = ("dynsim.engine", "dynsim.store", "dynsim.config", "dynsim.spec", "dynsim.models",
                "dynsim.integrators", "dynsim.observables", "dynsim.tasks")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:
                base = here[: len(here) - node.level + 1] + base
            module = ".".join(base)
            # "from package import name": name may be a sub-module or an attribute of the package
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # "import a.b.c" of an attribute path: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_import_reader_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from .store import X\n\ndef f():\n    from .engine import cpu\n    import dynsim.kinds\n")
    known = {"dynsim.store", "dynsim.engine", "dynsim.engine.cpu", "dynsim.kinds", "dynsim.mod"}
    assert _imports("dynsim.mod", source, known) == {"dynsim.store", "dynsim.engine.cpu", "dynsim.kinds"}


def test_no_import_cycles():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("lower", LOWER_LAYERS)
def test_lower_layers_import_no_kind(lower):
    graph = _graph()
    offenders = {(module, target) for module, targets in graph.items()
                 if module == lower or module.startswith(lower + ".") for target in targets if target in KIND_LAYER}
    assert offenders == set()
