"""Exit codes tell the truth, and options are checked before any work.

* a fetch where every view failed, an embed that could embed nothing, a sweep no k of which can
  be fitted, a pipeline whose fetch got nothing: exit 1 with the reason in one line; a partial
  failure exits 0 and says how many failed and how to retry;
* every option of every step of ``svcluster run`` is checked before ingest or fetch start: one
  line, no Prefect log, no traceback, nothing created; ``--debug`` (before or after the command)
  shows the traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from svcluster.flows.cli import hoist_debug, main
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.demo.sample import generate_locations
from svcluster.tasks.fetch.server import Fault
from tests.fixtures.maps import geoguessr_doc, write_map
from tests.fixtures.streetview import FAKE_KEY, ingest_locations

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from svcluster.flows.cli import main; main()"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GOOGLE_MAPS", "GSV_", "SVCLUSTER_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT))
    return {**env, **extra}


@pytest.fixture
def served_map(lake, tmp_path, streetview_server, monkeypatch) -> str:
    """A 6-place map whose panoramas the local server has, with this process pointed at it."""
    monkeypatch.setenv("SVCLUSTER_STREETVIEW_URL", streetview_server.base_url)
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", FAKE_KEY)
    return ingest_locations(lake, tmp_path / "six.json", generate_locations(6, seed=3), "six", streetview_server)


def test_a_fetch_where_every_view_failed_exits_1_with_the_reason(capsys, lake, streetview_server, served_map) -> None:
    streetview_server.add_fault(Fault("not_image", endpoint="image", times=None))
    code, out, err = run(capsys, "--lake", lake.uri, "fetch", "--map", served_map, "--max-retries", "0")
    assert code == 1
    assert "24 failed" in out  # the summary still comes first
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: every view this fetch tried failed (24 views; the commonest reason: ") and "rerun" in line, err
    # --json: the document on stdout, the reason on stderr, still exit 1
    code, out, err = run(capsys, "--lake", lake.uri, "--json", "fetch", "--map", served_map, "--max-retries", "0")
    assert code == 1 and json.loads(out)["failed"] == 24 and err.strip().startswith("error: every view")


def test_a_partly_failed_fetch_exits_0_and_says_how_many_and_how_to_retry(capsys, lake, streetview_server, served_map) -> None:
    first = lake.query("SELECT pano_id FROM locations WHERE map = ? ORDER BY position LIMIT 1", [served_map]).column(0)[0].as_py()
    streetview_server.add_fault(Fault("not_image", endpoint="image", pano=first, times=None))
    code, out, err = run(capsys, "--lake", lake.uri, "fetch", "--map", served_map, "--max-retries", "0")
    assert code == 0, err
    assert "20 ok" in out and "4 failed" in out and "rerun the same command to retry the failed views" in out


def test_an_embed_that_can_embed_nothing_exits_1_with_the_reason(capsys, lake, tmp_path) -> None:
    ingest_locations(lake, tmp_path / "m.json", generate_locations(5, seed=2), "unfetched")
    code, out, err = run(capsys, "--lake", lake.uri, "embed", "--map", "unfetched", "--model", "baseline")
    assert code == 1
    assert "5 places have not been fetched yet" in out
    assert err.strip() == "error: nothing to embed: none of the 5 places of unfetched has a usable image (5 are not fetched yet)"


def test_a_sweep_no_k_of_which_can_be_fitted_exits_1(capsys, lake, tmp_path) -> None:
    import numpy as np

    from tests.cluster_data import append_embeddings

    ingest_locations(lake, tmp_path / "m.json", generate_locations(8, seed=4), "tiny")
    ids = lake.query("SELECT DISTINCT location_id FROM locations WHERE map = 'tiny'").column(0).to_pylist()
    append_embeddings(lake, ids, np.random.default_rng(0).standard_normal((len(ids), 8)).astype(np.float32), model="baseline")
    code, _, err = run(capsys, "--lake", lake.uri, "cluster", "--map", "tiny", "--k", "20..30")
    assert code == 1 and err.strip().startswith("error: ") and "k=20" in err


def test_a_pipeline_whose_fetch_got_nothing_stops_there_with_the_reason(tmp_path, streetview_server) -> None:
    locs = generate_locations(8, seed=6)
    streetview_server.register_panoramas_of(locs)
    streetview_server.add_fault(Fault("not_image", endpoint="image", times=None))
    map_file = tmp_path / "m.json"
    map_file.write_text(json.dumps(locs))
    env = user_env(tmp_path, SVCLUSTER_STREETVIEW_URL=streetview_server.base_url, GOOGLE_MAPS_API_KEY=FAKE_KEY)
    proc = subprocess.run(
        [*CLI, "--lake", str(tmp_path / "lake"), "run", str(map_file), "--model", "baseline",
         "--out", str(tmp_path / "o.json"), "--summary", str(tmp_path / "s.md")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: every view the fetch tried failed (32 views) and m has no image to embed: rerun"), proc.stderr
    assert "Traceback" not in proc.stderr and "Encountered exception" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "o.json").exists()


# ---- options checked before any work ----------------------------------------------------------


@pytest.mark.parametrize(
    "options,words",
    [
        (["--tag-format", "oops"], "--tag-format 'oops' must contain {cluster}"),
        (["--tag-format", "{cluster:03d}"], "format specs such as '{cluster:03d}' are not supported"),
        (["--tag-format", "{name}-{cluster}"], "--model baseline cannot name clusters"),
        (["--k", "1"], "--k 1: k must be between 2"),
        (["--k", "five"], "--k 'five'"),
        (["--size", "9999x10"], "--size"),
        (["--headings", "0,east"], "--headings"),
        (["--fov", "200"], "--fov"),
        (["--concurrency", "0"], "--concurrency"),
        (["--qps", "-1"], "--qps"),
        (["--source", "indoor"], "--source"),
        (["--pooling", "max"], "--pooling"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "tpu"], "--device"),
        (["--precision", "fp16"], "--model baseline computes its descriptor in fp32 only"),
        (["--algorithm", "dbscan"], "--algorithm"),
        (["--pca", "0"], "--pca"),
        (["--seed", "-1"], "--seed"),
        (["--threads", "0"], "--threads"),
        (["--runner", "spark"], "--runner"),
        (["--map", "a@b"], "--map"),
        (["--out", "."], "--out"),
        (["--model", "./no/such/model-folder"], "no such model folder"),
    ],
)
def test_run_checks_every_option_before_any_work(tmp_path, options, words) -> None:
    map_file = write_map(tmp_path / "m.json", geoguessr_doc(4))
    lake = tmp_path / "lake"
    base = ["--model", "baseline"] if "--model" not in options else []
    proc = subprocess.run(
        [*CLI, "--lake", str(lake), "run", str(map_file), *base, *options],
        cwd=tmp_path, env=user_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr  # no Prefect log, no traceback
    assert not lake.exists()  # nothing ingested: the lake was not even created


def test_run_refuses_an_uncached_model_at_once_offline(tmp_path) -> None:
    map_file = write_map(tmp_path / "m.json", geoguessr_doc(4))
    proc = subprocess.run(
        [*CLI, "--lake", str(tmp_path / "lake"), "run", str(map_file), "--model", "nobody/no-such-clip-model"],
        cwd=tmp_path, env=user_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model 'nobody/no-such-clip-model' could not be loaded" in lines[0], proc.stderr
    assert not (tmp_path / "lake").exists()


def test_debug_is_accepted_after_the_command(tmp_path) -> None:
    bad = write_map(tmp_path / "bad.json", [{"lat": 100, "lng": 2}])
    for argv in (["ingest", str(bad), "--debug"], ["--debug", "ingest", str(bad)], ["ingest", "--debug", str(bad)]):
        proc = subprocess.run([*CLI, "--lake", str(tmp_path / "lake"), *argv], env=user_env(tmp_path), capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "Traceback" in proc.stderr and "MapFormatError" in proc.stderr, (argv, proc.stderr)
    open_lake(str(tmp_path / "lake"))
    proc = subprocess.run(
        [*CLI, "--lake", str(tmp_path / "lake"), "sql", "SELEC 1", "--debug"], env=user_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_hoisting_debug_leaves_everything_else_in_place() -> None:
    assert hoist_debug(["sql", "SELECT 1", "--debug"]) == ["--debug", "sql", "SELECT 1"]
    assert hoist_debug(["--lake", "x", "run", "m.json", "--debug", "--k", "5"]) == ["--debug", "--lake", "x", "run", "m.json", "--k", "5"]
    assert hoist_debug(["sql", "--", "--debug"]) == ["sql", "--", "--debug"]
    assert hoist_debug(["runs"]) == ["runs"]


def test_pydantic_errors_are_one_line() -> None:
    from pydantic import BaseModel, Field, ValidationError

    from svcluster.flows.cli import _validation_message

    class Opts(BaseModel):
        dask_workers: int = Field(1, ge=1)

    with pytest.raises(ValidationError) as caught:
        Opts(dask_workers=0)
    assert _validation_message(caught.value) == "dask-workers: Input should be greater than or equal to 1"
