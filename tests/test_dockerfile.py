"""The Dockerfile, tested without a container engine: what it copies exists and is not ignored,
its install commands resolve in a fresh venv (pip --dry-run, the default index standing in for
the CPU torch index), and its entry point, ``deployments/entrypoint.sh``, run for real by sh:
svcluster's commands go to the installed ``svcluster`` script, other programs (``prefect
flow-run execute`` from Prefect's docker worker, ``python``, ``dask``) run as they are."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENTRYPOINT_SCRIPT = ROOT / "deployments" / "entrypoint.sh"


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
    # The entry point: the script, run by sh (no exec bit needed), from where COPY puts it.
    entrypoint = [json.loads(rest) for word, rest in steps if word == "ENTRYPOINT"]
    assert entrypoint == [["/bin/sh", "/app/deployments/entrypoint.sh"]]
    assert ("WORKDIR", "/app") in steps and ("COPY", "deployments ./deployments") in steps
    assert [json.loads(rest) for word, rest in steps if word == "CMD"] == [["--help"]]
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


def test_the_svcluster_command_is_the_installed_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["svcluster"] == "svcluster.flows.cli:main"
    proc = subprocess.run([sys.executable, "-c", "from svcluster.flows.cli import main; main()", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout and "run" in proc.stdout


# ---- the entry point script, run by real shells ----------------------------------------------

SHELLS = [sh for sh in ("/bin/sh", "dash", "bash") if shutil.which(sh)]
STUB = '#!/bin/sh\nprintf "%s" "${0##*/}"; for a in "$@"; do printf " <%s>" "$a"; done; printf "\\n"\n'


@pytest.fixture
def stub_path(tmp_path) -> Path:
    """A PATH folder of stub programs that print their name and their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("svcluster", "prefect", "python", "dask", "run", "echo"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "notes").write_text("not a program\n")  # on PATH but not executable
    return bin_dir


def entrypoint(shell: str, bin_dir: Path, *args: str) -> str:
    """What the image's entry point runs for ``docker run IMAGE args...`` (sh as the image has it)."""
    proc = subprocess.run(
        [shutil.which(shell), str(ENTRYPOINT_SCRIPT), *args],
        env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("shell", SHELLS)
def test_entrypoint_runs_svcluster_commands_and_passes_other_programs_through(shell, stub_path):
    run = lambda *args: entrypoint(shell, stub_path, *args)  # noqa: E731
    # Prefect's docker worker sets only the container command: it must run as given.
    assert run("prefect", "flow-run", "execute") == "prefect <flow-run> <execute>"
    assert run("python", "-m", "prefect", "worker", "start") == "python <-m> <prefect> <worker> <start>"
    assert run("dask", "worker", "tcp://scheduler:8786") == "dask <worker> <tcp://scheduler:8786>"
    assert run(str(stub_path / "prefect"), "version") == "prefect <version>"  # by path
    assert run("echo", "a b") == "echo <a b>"  # a program on PATH, though sh has a builtin echo
    # svcluster's commands and options, as before (docker run IMAGE demo / --help / nothing).
    assert run("demo", "--out", "/data/demo") == "svcluster <demo> <--out> </data/demo>"
    assert run("--help") == "svcluster <--help>"
    assert run("--lake", "s3://b/p", "runs") == "svcluster <--lake> <s3://b/p> <runs>"
    assert run("run", "maps/m.json", "--k", "2..12") == "svcluster <run> <maps/m.json> <--k> <2..12>"  # not PATH's run
    assert run() == "svcluster"
    # Anything else goes to svcluster, which says what is wrong.
    assert run("no-such-program", "x") == "svcluster <no-such-program> <x>"
    assert run("notes") == "svcluster <notes>"  # not executable
    assert run("export", "m") == "svcluster <export> <m>"  # a shell builtin, and a svcluster command
    assert run("", "x") == "svcluster <> <x>"
    assert run("a b*", "*") == "svcluster <a b*> <*>"  # arguments reach the program untouched


def test_entrypoint_knows_every_svcluster_command():
    import typer

    from svcluster.flows.cli import _register_commands, app

    _register_commands()
    commands = set(typer.main.get_command(app).commands)
    listed = re.search(r'^SVCLUSTER_COMMANDS="([^"]*)"$', ENTRYPOINT_SCRIPT.read_text(), re.M)
    assert listed and set(listed.group(1).split()) == commands


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
