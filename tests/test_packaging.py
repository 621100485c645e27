"""One import namespace: svcluster installs as ``svcluster.…`` only, with every module, SQL file
and report asset, and runs as ``python -m svcluster`` like the ``svcluster`` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import svcluster

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FOLDERS = {"svcluster": "svcluster", "flows": "svcluster.flows", "tasks": "svcluster.tasks", "sql": "svcluster.sql"}


def source_packages() -> set[str]:
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    return found


def test_pyproject_lists_every_package_and_maps_the_folders():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert set(setuptools["packages"]) == source_packages()
    assert setuptools["package-dir"] == {"svcluster": "svcluster", "svcluster.flows": "flows", "svcluster.tasks": "tasks", "svcluster.sql": "sql"}
    assert PYPROJECT["project"]["scripts"]["svcluster"] == "svcluster.flows.cli:main"


def test_the_wheel_installs_one_top_level_name(tmp_path):
    # Built from a copy, so the checkout gets no build/ folder.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = out.glob("svcluster-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"svcluster", f"svcluster-{metadata.version('svcluster')}.dist-info"}, tops
    sql_files = {str(p.relative_to(ROOT)) for p in (ROOT / "sql").rglob("*.sql")}
    assert {f"svcluster/{p}" for p in sql_files} <= set(names)
    assets = {p.name for p in (ROOT / "tasks" / "report" / "assets").iterdir()}
    assert {f"svcluster/tasks/report/assets/{a}" for a in assets} <= set(names)
    assert "svcluster/tasks/fetch/step.py" in names and "svcluster/flows/cli.py" in names


def test_python_dash_m_svcluster_is_the_command(tmp_path):
    by_module = subprocess.run([sys.executable, "-m", "svcluster", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert by_module.returncode == 0, by_module.stderr
    assert "demo" in by_module.stdout and "ingest" in by_module.stdout
    old = subprocess.run([sys.executable, "-c", "import tasks"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert old.returncode != 0 and "No module named 'tasks'" in old.stderr


def test_version_is_the_package_version():
    assert svcluster.__version__ == metadata.version("svcluster") == PYPROJECT["project"]["version"]
