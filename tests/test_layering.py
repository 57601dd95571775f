"""The engine's layers: no import cycles among its modules, models below model files, inference
below fine-tuning.

The module graph is read from the source with `ast`: every import statement counts, those inside
functions included; imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import allinone

PACKAGE = Path(allinone.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            skipped.update(ast.walk(node))
    return skipped


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The engine modules that module `name` imports, anywhere in it. A package that holds
    `name` does not count: Python has run it before `name`, so importing from it (`from
    allinone.cli import common` in `allinone.cli.restore`) closes no circle."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    holders = {".".join(name.split(".")[:n]) for n in range(1, name.count(".") + 1)}
    return {module for module in found if module in modules and module not in holders | {name}}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the modules along it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_graph_holds_imports_inside_functions_not_those_for_type_checking() -> None:
    graph = _graph()
    assert "allinone.train.finetune" in graph["allinone.microscopy_baselines"]
    assert "allinone.infer.restorer" in graph["allinone"]  # in `__getattr__`
    assert "allinone.infer.restorer" in graph["allinone.batch"]  # in `restorer_for`
    assert "allinone.infer.restorer" not in graph["allinone.export_bioimageio"]


def test_a_module_importing_from_its_own_package_is_no_cycle() -> None:
    graph = _graph()
    assert "allinone.cli.common" in graph["allinone.cli.restore"]
    assert "allinone.cli" not in graph["allinone.cli.restore"]
    assert "allinone.cli.restore" in graph["allinone.cli"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_no_import_cycles_among_the_engine_modules() -> None:
    assert _cycle(_graph()) is None


def test_inference_never_imports_fine_tuning_or_the_commands() -> None:
    graph = _graph()
    above = ("allinone.train", "allinone.cli", "allinone.evaluate", "allinone.batch")
    for module in (name for name in graph if name.startswith("allinone.infer")):
        assert not {m for m in _reachable(graph, module) if m.startswith(above)}, module


def test_models_import_neither_model_files_nor_inference() -> None:
    graph = _graph()
    above = ("allinone.weights", "allinone.loading", "allinone.infer", "allinone.train")
    for module in (name for name in graph if name.startswith("allinone.models")):
        assert not {m for m in _reachable(graph, module) if m.startswith(above)}, module


def test_importing_the_restorer_leaves_training_unloaded() -> None:
    code = (
        "import sys\n"
        "import allinone.infer.restorer\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('allinone.train'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_job_plumbing_and_the_options_load_without_torch() -> None:
    code = (
        "import sys\n"
        "import allinone.jobs, allinone.infer.options\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
