"""Ctrl-C: ``svcluster run``/``demo``/``fetch`` stop within seconds on the first SIGINT, exit 130
with "interrupted; rerun to resume", and leave no helper process behind (the temporary Prefect
API, the demo's scene server). Real processes, real signals: each command runs in a session of
its own and gets SIGINT on its whole process group, as a terminal's Ctrl-C sends it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from svcluster.flows.demo import DEMO_KEY, write_demo_map
from svcluster.tasks.lake.store import open_lake

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from svcluster.flows.cli import main; main()"]
STOPS_WITHIN = 15.0  # seconds from Ctrl-C to exit (the command's grace period is 5 s)


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no Prefect server, a fresh Prefect home, this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GOOGLE_MAPS", "GSV_", "SVCLUSTER_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT))
    return {**env, **extra}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def wait_for(condition, seconds: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command ended (code {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"waited {seconds:.0f} s for {what}")


def interrupt(proc: subprocess.Popen) -> tuple[float, str, str]:
    """Ctrl-C as a terminal sends it (SIGINT to the foreground process group); returns the
    seconds until the command exited, its stdout and stderr."""
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"still running 60 s after Ctrl-C:\n{err[-3000:]}")
    return time.monotonic() - started, out, err


def assert_interrupted(proc: subprocess.Popen, seconds: float, err: str, helpers: list[int]) -> None:
    assert proc.returncode == 130, err[-3000:]
    assert seconds < STOPS_WITHIN, f"took {seconds:.1f} s to stop"
    assert err.strip().splitlines()[-1] == "interrupted; rerun to resume", err[-3000:]
    assert "Traceback" not in err and "Crash detected" not in err, err[-3000:]
    deadline = time.monotonic() + 5
    while any(alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in helpers if alive(p)], "a helper process outlived the interrupted command"


def images_written(lake: Path) -> bool:
    return any((lake / "tables" / "images").glob("part-*.parquet"))


def test_ctrl_c_stops_the_demo_and_its_helpers(tmp_path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [*CLI, "demo", "--out", str(out), "--locations", "5000"], cwd=tmp_path, env=user_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: images_written(out / "lake"), 240, "the fetch wrote images", proc)
    helpers = children(proc.pid)
    assert len(helpers) >= 2  # the temporary Prefect API and the scene server
    seconds, _, err = interrupt(proc)
    assert_interrupted(proc, seconds, err, helpers)


@pytest.fixture
def scene_server(tmp_path):
    """The demo's scene server for a 5000-location sample, in its own process; yields
    (map file, base URL)."""
    map_file = tmp_path / "chile.json"
    write_demo_map(map_file, 5000)
    server = subprocess.Popen(
        [sys.executable, "-m", "svcluster.flows.demo", "--locations", "5000"], cwd=ROOT, env=user_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        yield map_file, server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ctrl_c_stops_run_mid_fetch(tmp_path, scene_server) -> None:
    map_file, url = scene_server
    lake = tmp_path / "lake"
    env = user_env(tmp_path, SVCLUSTER_STREETVIEW_URL=url, GOOGLE_MAPS_API_KEY=DEMO_KEY)
    proc = subprocess.Popen(
        [*CLI, "--lake", str(lake), "run", str(map_file), "--model", "baseline", "--qps", "200",
         "--out", str(tmp_path / "out.json"), "--summary", str(tmp_path / "summary.md")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: images_written(lake), 240, "the fetch wrote images", proc)
    helpers = children(proc.pid)
    assert helpers  # the temporary Prefect API
    seconds, out, err = interrupt(proc)
    assert_interrupted(proc, seconds, err, helpers)
    assert not (tmp_path / "out.json").exists()  # it stopped: no export


def test_ctrl_c_stops_fetch_with_the_same_line(tmp_path, scene_server) -> None:
    map_file, url = scene_server
    lake = tmp_path / "lake"
    env = user_env(tmp_path, SVCLUSTER_STREETVIEW_URL=url, GOOGLE_MAPS_API_KEY=DEMO_KEY)
    subprocess.run([*CLI, "--lake", str(lake), "ingest", str(map_file), "--map", "m"], env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen(
        [*CLI, "--lake", str(lake), "fetch", "--map", "m", "--qps", "200"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: images_written(lake), 120, "the fetch wrote images", proc)
    seconds, _, err = interrupt(proc)
    assert_interrupted(proc, seconds, err, [])


def test_ctrl_c_stops_embed_with_the_same_line(tmp_path) -> None:
    import numpy as np

    from svcluster.tasks.demo.sample import BANDS, band_of
    from tests.report_helpers import write_map as write_lake_map, write_views

    lake = open_lake(str(tmp_path / "lake"))
    ids, lat, _ = write_lake_map(lake, tmp_path, 3000)
    names = [b.name for b in BANDS]
    write_views(lake, ids, np.asarray([names.index(band_of(float(x)).name) for x in lat]))
    proc = subprocess.Popen(
        [*CLI, "--lake", lake.uri, "embed", "--map", "chile", "--model", "baseline"],
        cwd=tmp_path, env=user_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: any(Path(lake.path("tables/embeddings")).glob("part-*.parquet")), 120, "embed wrote vectors", proc)
    seconds, _, err = interrupt(proc)
    assert_interrupted(proc, seconds, err, [])


# A command whose batch never ends: a helper process, then a worker thread that ignores the
# interruption (a model's forward pass, a stuck request). As a flow's task runner does, leaving
# the pool waits for the batch in flight. Prints the helper's pid once the batch runs.
STUCK_COMMAND = textwrap.dedent(
    """
    import sys, time
    from concurrent.futures import ThreadPoolExecutor
    from svcluster.flows.cli import app, main
    from svcluster.tasks.processes import start_helper

    @app.command("stuck")
    def stuck() -> None:
        helper = start_helper([sys.executable, "-c", "import time; time.sleep(600)"])
        with ThreadPoolExecutor(1) as pool:
            batch = pool.submit(time.sleep, 600)
            print(helper.pid, flush=True)
            batch.result()

    main()  # as the svcluster script calls it: sys.argv[1:] is ["stuck"]
    """
)


def start_stuck_command(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_COMMAND, "stuck"], cwd=ROOT, env=user_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    return proc, int(proc.stdout.readline())


def test_a_batch_that_does_not_end_is_abandoned_after_the_grace_period(tmp_path) -> None:
    """The stuck batch does not keep the command: it exits 130 once the grace period is over,
    and its helper process is stopped."""
    proc, helper = start_stuck_command(tmp_path)
    seconds, _, err = interrupt(proc)
    assert_interrupted(proc, seconds, err, [helper])
    assert seconds > 4  # the grace period: the work had its chance to finish


def test_a_second_ctrl_c_stops_at_once(tmp_path) -> None:
    proc, helper = start_stuck_command(tmp_path)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    seconds = time.monotonic() - started
    assert seconds < 3
    assert_interrupted(proc, seconds, err, [helper])


def test_a_ctrl_c_landing_in_a_finalizer_is_delivered_again_not_lost_in_a_traceback() -> None:
    # CI saw it: SIGINT arrived while the garbage collector ran aiohttp's ClientResponse.__del__;
    # a KeyboardInterrupt raised there is printed ("Exception ignored in ...", a traceback) and dropped
    import threading

    from svcluster.flows.cli import Interrupts

    interrupts = Interrupts(grace=60)
    outcome: dict[str, object] = {}

    class Finalised:
        def __del__(self) -> None:
            try:
                interrupts._handle(signal.SIGINT, sys._getframe())
                outcome["raised"] = False
            except KeyboardInterrupt:
                outcome["raised"] = True

    again = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: again.set())
    try:
        obj = Finalised()
        del obj
        for _ in range(100):  # the re-delivered signal runs the handler in this (the main) thread
            if again.is_set():
                break
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert outcome == {"raised": False} and interrupts.count == 0 and again.is_set()
    with pytest.raises(KeyboardInterrupt):  # outside a finalizer it interrupts at once
        interrupts._handle(signal.SIGINT, sys._getframe())
    interrupts.uninstall()
    assert interrupts.count == 1


def test_the_crash_notices_of_a_stopping_flow_are_not_printed(caplog) -> None:
    # CI saw it: Ctrl-C during a fetch, and a task run that was about to start when the flow's
    # ThreadPoolTaskRunner cancelled what was left logged "Crash detected! ... CancelledError: Task
    # run cancelled by the task runner". The messages are built here by Prefect's own code.
    import asyncio
    import logging

    from prefect._internal.states import exception_to_crashed_state_sync

    from svcluster.flows.prefect_env import silence_prefect_notices

    silence_prefect_notices()

    def crash_notice(exc: BaseException) -> str:  # as the sync task engine's handle_crash logs it
        return f"Crash detected! {exception_to_crashed_state_sync(exc).message}"

    logger = logging.getLogger("prefect.task_runs")
    with caplog.at_level(logging.ERROR, logger="prefect.task_runs"):
        logger.error(crash_notice(asyncio.CancelledError("Task run cancelled by the task runner")))
        logger.error(crash_notice(KeyboardInterrupt()))
        logger.error(crash_notice(ValueError("a real crash")))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "ValueError: a real crash" in messages[0]  # a real crash still shows
