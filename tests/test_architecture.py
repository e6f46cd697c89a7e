"""The package's shape, read from its ``import`` statements and files: what docs/architecture.md promises."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from support import REPO

PACKAGE = REPO / "src" / "fmnist_lightning"
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports, at any depth of the file (``from a import b`` may name a module b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("fmnist_lightning")}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {imported for imported in project_imports(path) if imported in modules} for name, path in modules.items()
    }


def test_no_import_cycle():
    graph = import_graph()
    # a package's __init__ re-exporting its own modules is not a cycle of concerns: cycles are looked for between
    # modules, with each package's __init__ standing for what it re-exports
    visiting, done, cycles = [], set(), []

    def visit(name: str) -> None:
        if name in visiting:
            cycles.append([*visiting[visiting.index(name) :], name])
            return
        if name in done:
            return
        visiting.append(name)
        for imported in sorted(graph[name]):
            if not imported.startswith(name + "."):  # a package importing its own submodules
                visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert cycles == []


def test_networks_import_nothing_of_lightning_training_or_data():
    for path in (PACKAGE / "networks").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        forbidden = {
            name
            for name in imported
            if name.split(".")[0] in ("lightning", "pytorch_lightning")
            or name.startswith(("fmnist_lightning.training", "fmnist_lightning.data", "fmnist_lightning.observe"))
        }
        assert forbidden == set(), path.name


def test_no_file_over_300_lines():
    long = {
        str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_private_lightning_names_live_in_one_module():
    """Any ``x._name`` reached from a Lightning object, or ``from lightning... import _name``, is in
    lightning_private.py (torch's own ``torch._foreach_*`` kernels are public API in all but name)."""
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "lightning_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning"):
                outside += [f"{path.name}: {alias.name}" for alias in node.names if alias.name.startswith("_")]
                outside += [f"{path.name}: {node.module}"] if "._" in node.module else []
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = ast.unparse(node.value)
                if base.split(".")[0] in ("trainer", "optimizer", "logger") or ".trainer" in base:
                    outside.append(f"{path.name}: {base}.{node.attr}")
    assert outside == []


def test_help_and_models_do_not_import_torch():
    code = (
        "import sys; from fmnist_lightning.commands.main import main; "
        "main(['--help']); main(['models']); print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip().splitlines()[-1] == "[]"
