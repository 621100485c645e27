"""The import layers (docs/architecture.md): read from the source with ``ast``, so a new import
that crosses a layer fails here, not in a user's environment.

- the CLI and flows use tasks; tasks never import flows or the CLI;
- flows never import the CLI (``svcluster.flows.cli``, ``svcluster.flows.commands``);
- the rooms of ``svcluster.tasks`` import only rooms below them (``ROOMS``); the shared modules at
  the top of ``tasks/`` import no room;
- only the lake package touches storage (the storage libraries and ``duckdb.connect``);
- nothing imports the old top-level names ``flows``, ``tasks`` or ``sql``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"flows": "svcluster.flows", "tasks": "svcluster.tasks", "sql": "svcluster.sql", "svcluster": "svcluster"}

# Lowest first: a room may import the shared modules, the lake and the rooms listed before it.
ROOMS = ["lake", "ingest", "fetch", "embed", "cluster", "export", "search", "report", "demo"]
SHARED = {"errors", "progress", "processes", "settings", "links", "options", "files", "batches"}
STORAGE = ("s3fs", "fsspec", "pyarrow.parquet", "pyarrow.fs", "pyarrow.dataset", "deltalake", "boto3", "botocore")


def modules() -> dict[str, Path]:
    """Every module of the package, by its dotted name under ``svcluster``."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports_of(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
    return out


def room_of(module: str) -> str | None:
    """``svcluster.tasks.fetch.step`` -> ``fetch``; a shared module -> ``shared``; else None."""
    parts = module.split(".")
    if parts[:2] != ["svcluster", "tasks"] or len(parts) < 3:
        return None
    return "shared" if parts[2] in SHARED else parts[2]


MODULES = modules()


def test_every_module_belongs_to_a_known_room():
    """A new subpackage of tasks/ is placed in the layer order (or this test says where it is)."""
    for name in MODULES:
        room = room_of(name)
        if name.startswith("svcluster.tasks.") and room != "shared":
            assert room in ROOMS, f"{name}: add its room to ROOMS in tests/test_layers.py (and docs/architecture.md)"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_respect_the_layers(name):
    path = MODULES[name]
    room = room_of(name)
    problems = []
    for line, imported in imports_of(path, name):
        where = f"{path.relative_to(ROOT)}:{line} imports {imported}"
        top = imported.split(".")[0]
        if top in ("flows", "tasks", "sql"):
            problems.append(f"{where}: the old top-level name; use svcluster.{imported}")
        if name.startswith("svcluster.tasks") and imported.startswith("svcluster.flows"):
            problems.append(f"{where}: tasks never import flows or the CLI")
        if name.startswith("svcluster.flows") and not name.startswith(("svcluster.flows.cli", "svcluster.flows.commands")):
            if imported.startswith(("svcluster.flows.cli", "svcluster.flows.commands")):
                problems.append(f"{where}: flows never import the CLI")
        target = room_of(imported)
        if room is not None and target is not None and target != room:
            if room == "shared":
                problems.append(f"{where}: a shared module imports no step's room")
            elif target != "shared" and ROOMS.index(target) > ROOMS.index(room):
                problems.append(f"{where}: {room} may not import {target}, a room above it")
        if room != "lake" and (imported.startswith(STORAGE) or imported == "duckdb.connect"):
            problems.append(f"{where}: only svcluster.tasks.lake touches storage")
    assert not problems, "\n".join(problems)


def test_only_the_lake_opens_duckdb():
    """``duckdb.connect`` (and importing duckdb at all) is the lake's: others get connections from it."""
    for name, path in MODULES.items():
        if room_of(name) == "lake":
            continue
        for line, imported in imports_of(path, name):
            assert imported.split(".")[0] != "duckdb", f"{path.relative_to(ROOT)}:{line} imports duckdb"


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself can fail: an upward import in a file it reads is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from svcluster.flows.cli import main\nfrom ..report import page\n")
    found = imports_of(bad, "svcluster.tasks.fetch.bad")
    assert (1, "svcluster.flows.cli") in found and (2, "svcluster.tasks.report.page") in found
    assert room_of("svcluster.tasks.report.page") == "report" and ROOMS.index("report") > ROOMS.index("fetch")
