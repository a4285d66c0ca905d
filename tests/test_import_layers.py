"""What importing a module loads: a config only the small registries it validates against (nothing of which
imports it back), the command line only its commands.

config.py sits low in the layers (docs/design.md): every command reads it, so what it imports every command
pays for, and a module that imported config while config was being imported would see it half made.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lenet5"
# What `import lenet5.config` may load of lenet5: the registries of names its fields are checked against.
CONFIG_REGISTRIES = {
    "lenet5",
    "lenet5.config",
    "lenet5.errors",
    "lenet5.data",
    "lenet5.data.dataset_names",
    "lenet5.engines",
    "lenet5.models",
    "lenet5.training",
    "lenet5.training.schedules",
}


def _loaded_by(statement: str) -> set[str]:
    """The lenet5 modules a fresh interpreter holds after running ``statement``."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('lenet5'))))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(proc.stdout))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _with_packages(name: str) -> set[str]:
    """Importing a.b.c runs a and a.b first: the module and the packages above it."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & MODULES.keys()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_imports(module: str) -> set[str]:
    """The lenet5 modules ``module`` imports while it is being imported: its import statements outside
    functions, classes and ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.update(_with_packages(alias.name))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.update(_with_packages(base))
                for alias in node.names:
                    found.update(_with_packages(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else ())
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With)):
                visit(node.body)
                for handler in getattr(node, "handlers", ()):
                    visit(handler.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")).body)
    found.discard(module)
    return found


def test_importing_config_loads_only_the_registries_not_the_downloader():
    loaded = _loaded_by("import lenet5.config")
    assert "lenet5.data.sources" not in loaded
    assert loaded <= CONFIG_REGISTRIES, sorted(loaded - CONFIG_REGISTRIES)


def test_nothing_config_imports_imports_config_back():
    """An import graph walk from config: no path leads back to it (a circle)."""
    seen, path = set(), []

    def walk(module: str) -> None:
        path.append(module)
        for imported in sorted(_import_time_imports(module)):
            assert imported != "lenet5.config", " -> ".join([*path, imported])
            if imported not in seen:
                seen.add(imported)
                walk(imported)
        path.pop()

    walk("lenet5.config")
    assert seen <= CONFIG_REGISTRIES, sorted(seen - CONFIG_REGISTRIES)


def test_the_import_graph_walk_finds_what_python_loads():
    """The graph the walk above reads is the one Python follows: what config loads is what it finds."""
    reachable, todo = set(), ["lenet5.config"]
    while todo:
        for imported in _import_time_imports(todo.pop()) - reachable:
            reachable.add(imported)
            todo.append(imported)
    assert reachable | {"lenet5.config"} == _loaded_by("import lenet5.config")


def test_the_registries_import_nothing_heavy():
    for module in CONFIG_REGISTRIES - {"lenet5.config"}:
        imported = _import_time_imports(module)
        assert imported <= CONFIG_REGISTRIES - {"lenet5.config"}, (module, sorted(imported))


def test_the_dataset_registry_and_the_downloader_name_the_same_datasets():
    from lenet5.config import choices
    from lenet5.data.dataset_names import DATASET_NAMES
    from lenet5.data.sources import DATASETS

    assert tuple(DATASETS) == DATASET_NAMES == choices("data.dataset")


def test_the_command_line_loads_its_commands_and_nothing_they_use():
    """Each command imports what it needs when it runs, so starting one loads no other command's libraries;
    and NumPy is not loaded before cli.py has set OPENBLAS_NUM_THREADS."""
    code = "import json, sys, lenet5.cli; print(json.dumps('numpy' in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(proc.stdout) is False
    loaded = _loaded_by("import lenet5.cli")
    assert loaded <= {"lenet5", "lenet5.cli", "lenet5.errors"} | {m for m in MODULES if m.startswith("lenet5.commands")}
