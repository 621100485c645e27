"""The Dockerfile, tested without a container engine: what it copies exists and is not ignored,
its install commands resolve in a fresh venv (pip --dry-run, the default index standing in for
the CPU torch index), and its entry point is the installed ``svcluster`` script."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def build_args() -> dict[str, str]:
    args = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    return args


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [p.strip().rstrip("/") for p in lines if p.strip() and not p.startswith("#")]


def test_base_user_volumes_and_entrypoint():
    args = build_args()
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["BASE_IMAGE"])
    assert "/whl/cpu" in args["TORCH_INDEX_URL"] and args["TORCH_VERSION"]
    steps = instructions()
    assert steps[0] == ("ARG", f"BASE_IMAGE={args['BASE_IMAGE']}") and ("FROM", "${BASE_IMAGE}") in steps
    user = [rest for word, rest in steps if word == "USER"]
    assert user == ["svcluster"]
    volumes = " ".join(rest for word, rest in steps if word == "VOLUME")
    assert "/data/lake" in volumes and "/data/hf-cache" in volumes
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "HF_HOME=/data/hf-cache" in env and "SVCLUSTER_LAKE=/data/lake" in env
    assert ("ENTRYPOINT", '["svcluster"]') in steps
    # Cache order: torch before the dependencies, the dependencies before the code.
    order = [i for i, (w, r) in enumerate(steps) if w in ("RUN", "COPY")]
    text = [steps[i][1] for i in order]
    torch_at = next(i for i, t in enumerate(text) if "torch==" in t)
    deps_at = next(i for i, t in enumerate(text) if "requirements.txt" in t and "pip install" in t)
    code_at = next(i for i, t in enumerate(text) if t.startswith("tasks"))
    assert torch_at < deps_at < code_at


def test_every_copied_path_exists_and_is_not_dockerignored():
    ignored = dockerignore_patterns()
    for word, rest in instructions():
        if word != "COPY":
            continue
        *sources, _dest = shlex.split(rest)
        for src in sources:
            assert not src.startswith("--"), "no COPY --from / --chown expected"
            assert (ROOT / src).exists(), src
            assert not any(fnmatch.fnmatch(src, p) for p in ignored), f"{src} is excluded by .dockerignore"
    # Secrets and local data never enter the build context.
    for private in (".env", "lake", ".git", "tests"):
        assert private in ignored


def test_the_entrypoint_is_the_installed_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["svcluster"] == "flows.cli:main"
    proc = subprocess.run([sys.executable, "-c", "from flows.cli import main; main()", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout and "run" in proc.stdout


@pytest.mark.slow
def test_install_commands_resolve_in_a_fresh_venv(tmp_path):
    """The Dockerfile's pip commands, run as written (build args substituted) with --dry-run in a
    new venv. TORCH_INDEX_URL is empty here (no route to the PyTorch index): the command then
    uses the default index, exactly as the Dockerfile allows."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    workdir = tmp_path / "app"
    workdir.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (workdir / name).write_text((ROOT / name).read_text())
    env = {**os.environ, **build_args(), "TORCH_INDEX_URL": "", "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    runs = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest and "--no-deps" not in rest]
    assert len(runs) == 2
    for command in runs:
        dry = command.replace("pip install", "pip install --dry-run --quiet").replace("/tmp/requirements.txt", str(tmp_path / "requirements.txt"))
        proc = subprocess.run(["/bin/sh", "-c", dry], cwd=workdir, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
