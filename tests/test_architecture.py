"""The package's shape, read from its ``import`` statements and files: what docs/architecture.md promises."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

from support import REPO

PACKAGE = REPO / "src" / "fmnist_lightning"
# Which parts of fmnist_lightning (its subpackages and top-level modules) each part may import, "A → B" meaning A
# imports B: docs/architecture.md's direction. Commands sit on top and nothing imports them but the entry point;
# below them run folders and checkpoints (runs), the callbacks that watch training (observe), the models, the
# LightningModule they train with (training), the data and the plain networks. A new part needs a row here.
EVERYTHING_BELOW_COMMANDS = {
    *("networks", "models", "training", "data", "observe", "runs"),
    *("registry", "study", "fashion_mnist", "errors", "weights", "safe_files", "lightning_private", "old_keys"),
}
ALLOWED = {
    "__main__": {"commands"},  # python -m fmnist_lightning
    "fmnist_lightning": {"errors", "fashion_mnist", "registry"},  # the package's __init__; the rest by name, lazily
    "commands": EVERYTHING_BELOW_COMMANDS,
    "runs": {"registry", "training", "old_keys", "errors", "safe_files"},  # old_keys: an old run's keys, moved
    "observe": {"training", "data", "fashion_mnist", "lightning_private", "safe_files", "errors"},
    "models": {"networks", "training", "registry", "errors"},
    "training": {"data", "networks", "fashion_mnist", "lightning_private", "old_keys", "errors"},
    "data": {"fashion_mnist", "safe_files", "errors"},
    "networks": {"errors"},  # their Keras layers are their own (networks/keras_layers.py)
    "registry": {"errors", "study"},  # the model classes by name (importlib), never by import
    "study": set(),
    "weights": {"errors"},
    "old_keys": {"errors"},  # settings that moved: read by commands, run folders and checkpoints alike
    "fashion_mnist": set(),
    "errors": set(),
    "safe_files": set(),
    "lightning_private": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: Collection[str]) -> set[str]:
    """The project modules a file imports, at any depth of the file (inside functions too: a lazy import is still a
    dependency). ``from a import b`` imports module a.b where that is a module, else a; a relative import is read
    from the file's package."""
    module = module_name(path).split(".")
    package = module if path.name == "__init__.py" else module[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            names |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return names & set(modules)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: project_imports(path, modules) for name, path in modules.items()}


def part(module: str) -> str:
    """The subpackage or top-level module a module belongs to (``fmnist_lightning`` for the package's __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def part_graph() -> dict[tuple[str, str], set[str]]:
    """Every import between two parts: ``(importer, imported)`` → the module imports that make it."""
    edges: dict[tuple[str, str], set[str]] = {}
    for module, imported in import_graph().items():
        for target in imported:
            if part(module) != part(target):
                edges.setdefault((part(module), part(target)), set()).add(f"{module} → {target}")
    return edges


def test_parts_import_one_way():
    """Each part imports only what ``ALLOWED`` lists for it: the callbacks of ``observe`` read the training module,
    never the other way."""
    edges = part_graph()
    parts = {part(module) for module in import_graph()}
    assert parts == ALLOWED.keys(), "a part of fmnist_lightning without its row in ALLOWED (or a row left over)"
    wrong_way = {edge: sorted(imports) for edge, imports in edges.items() if edge[1] not in ALLOWED[edge[0]]}
    assert wrong_way == {}


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


def test_networks_import_no_lightning():
    """Plain nn.Modules, usable without Lightning (what they import of the project is ``ALLOWED["networks"]``)."""
    for path in (PACKAGE / "networks").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert {name for name in imported if name.split(".")[0] in ("lightning", "pytorch_lightning")} == set(), path


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
