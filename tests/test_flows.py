"""The Prefect flows, run for real against a temporary Prefect API: the pipeline end to end on
60 demo locations (real HTTP to the scene server, real lake, baseline embedder), its rerun over
a complete lake, batching, artifacts, a refused key, the global concurrency limit, and
``svcluster run`` through the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from svcluster.flows.artifacts import FlowProgress, artifact_key, console_progress
from svcluster.flows.params import ClusterParams, EmbedParams, FetchParams
from svcluster.flows.retries import retry_unless_user_error
from svcluster.flows.demo import DEMO_MAP
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import FatalApiError
from svcluster.tasks.lake.store import open_lake

FAST_FETCH = FetchParams(size="128x128", qps=0, batch_locations=25)
BASELINE = EmbedParams(model="baseline", batch_locations=25)


def pipeline_kwargs(world, lake_uri: str, out: Path, **extra) -> dict:
    return dict(
        map_file=str(world.map_file),
        lake=lake_uri,
        map_name=DEMO_MAP,
        fetch=FAST_FETCH,
        embed=BASELINE,
        cluster=ClusterParams(k=5),
        export_out=str(out / "tagged.json"),
        summary_out=str(out / "summary.md"),
        **extra,
    )


def task_run_counts(flow_run_id) -> Counter:
    """Task runs per task name under a pipeline run (its subflows' tasks included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [flow_run_id, *[f.id for f in subflows]]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200)
    return Counter(re.sub(r"-[0-9a-f]{3}$", "", r.name) for r in runs if r.flow_run_id in ids and r.state and r.state.is_completed())


def latest_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return max(found, key=lambda a: a.created) if found else None


def lake_parts(lake_uri: str) -> list[str]:
    lake = open_lake(lake_uri)
    return [p for t in ("images", "embeddings", "cluster_runs") for p in lake.table_files(t)]


def test_pipeline_end_to_end_then_rerun_does_nothing(demo_world, tmp_path):
    from svcluster.flows.pipeline import pipeline

    lake_uri = str(tmp_path / "lake")
    out = tmp_path / "out"
    first = pipeline(**pipeline_kwargs(demo_world, lake_uri, out))

    # Real work happened, in batches (never one task per image).
    assert first.ingest.locations == 60
    statuses = {r["status"]: r["views"] for r in first.fetch.status_counts}
    assert statuses["ok"] + statuses.get("no_imagery", 0) == 240 and statuses["ok"] > 200
    assert first.fetch.batches == 3 and first.embed.batches == 3
    counts = task_run_counts(first.flow_run_id)
    assert counts["fetch-batch"] == 3 and counts["embed-batch"] == 3 and counts["cluster-map"] == 1
    assert sum(counts.values()) < 25

    # The export: every location with a view carries exactly one cluster tag.
    doc = json.loads((out / "tagged.json").read_text())
    coords = doc["customCoordinates"]
    assert len(coords) == 60
    tags = [[t for t in c.get("extra", {}).get("tags", []) if re.fullmatch(r"k5-c[0-4]", t)] for c in coords]
    assert sum(1 for t in tags if len(t) == 1) == first.export.tagged == first.cluster.result.n_locations
    assert first.cluster.vs_tags is not None and first.cluster.vs_tags.ari > 0.5  # bands mostly recovered (16 tags)

    # Artifacts: progress reached 100 %, status table, markdown summary (also written to a file).
    progress = latest_artifact(artifact_key("fetch", DEMO_MAP))
    assert progress is not None and progress.type == "progress" and float(progress.data) == 100.0
    assert float(latest_artifact(artifact_key("embed", DEMO_MAP)).data) == 100.0
    table = latest_artifact(artifact_key("fetch-status", DEMO_MAP))
    assert table.type == "table" and ("no_imagery" in str(table.data) or "ok" in str(table.data))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {r["status"]: r["views"] for r in rows} == statuses  # the table is the status counts
    summary = latest_artifact(artifact_key("cluster-summary", DEMO_MAP))
    assert summary.type == "markdown" and "## Cluster sizes" in summary.data
    assert (out / "summary.md").read_text() == first.cluster.summary_markdown
    # The run's report: markdown linking the PNG map and the page, both written into the lake.
    report = latest_artifact(artifact_key("cluster-report", DEMO_MAP))
    assert report.type == "markdown" and "cluster_map.png" in report.data
    run_id = first.cluster.run.run_id
    assert (Path(lake_uri) / "reports" / run_id / "cluster_map.png").stat().st_size > 1000
    assert "<canvas" in (Path(lake_uri) / "reports" / run_id / "report.html").read_text()

    # A second run over the complete lake: nothing fetched, embedded or fitted; same export.
    before = lake_parts(lake_uri)
    exported = (out / "tagged.json").read_bytes()
    second = pipeline(**pipeline_kwargs(demo_world, lake_uri, out))
    assert second.ingest.unchanged
    assert second.fetch.locations_planned == 0 and second.fetch.batches == 0
    assert second.embed.locations_planned == 0
    assert second.cluster.run.reused and second.cluster.run.run_id == first.cluster.run.run_id
    assert lake_parts(lake_uri) == before
    assert (out / "tagged.json").read_bytes() == exported
    assert task_run_counts(second.flow_run_id)["fetch-batch"] == 0

    # The pipeline's export takes --tag-outliers too (svcluster run): the run's outliers, and only
    # they, carry `outlier`.
    pipeline(**pipeline_kwargs(demo_world, lake_uri, out / "outliers", tag_outliers=True))
    marked = json.loads((out / "outliers" / "tagged.json").read_text())["customCoordinates"]
    outlier_places = {r["location_id"] for r in open_lake(lake_uri).query(
        "SELECT location_id FROM cluster_outliers WHERE run_id = $r", {"r": run_id}).to_pylist()}  # fmt: skip
    placed = open_lake(lake_uri).query("SELECT position, location_id FROM locations WHERE map = $m", {"m": DEMO_MAP}).to_pylist()
    expected = sorted(r["position"] for r in placed if r["location_id"] in outlier_places)
    assert expected and [i for i, c in enumerate(marked) if "outlier" in c.get("extra", {}).get("tags", [])] == expected

    # A new version of the map's clustering is compared with the previous one.
    from svcluster.flows.cluster import cluster_flow

    again = cluster_flow(DEMO_MAP, lake_uri, ClusterParams(k=4, model="baseline"))
    assert again.previous == first.cluster.run.name and again.run.name == f"{DEMO_MAP}@v2"
    assert again.vs_previous is not None and again.vs_previous.compared == first.cluster.result.n_locations
    assert f"{first.cluster.run.name} → {again.run.name}" in again.summary_markdown


def test_cluster_summary_compares_with_the_maps_previous_version_not_a_sibling_k(prefect_api, lake, tmp_path):
    """After a k sweep the previous version is the latest earlier run with the same k, else the
    latest earlier run of any k, never a run of the same sweep (a sibling k): the one rule,
    ``svcluster.tasks.cluster.runs.previous_version``, that the report uses too."""
    from svcluster.flows.cluster import cluster_flow
    from tests.cluster_data import append_embeddings, band_matrix, ingest_sample

    locs = ingest_sample(lake, tmp_path, n=150, name="versions")
    append_embeddings(lake, [r["location_id"] for r in locs], band_matrix(locs)[0])

    def cluster(**params):
        return cluster_flow("versions", lake.uri, ClusterParams(report=False, **params))

    first = cluster(k=3, seed=0)
    assert first.run.name == "versions@v1" and first.previous is None and first.vs_previous is None
    assert "This is the map's first clustering." in first.summary_markdown

    # A sweep with another seed: v2 (k=2), v3 (k=3), v4 (k=4). Whichever k it recommends, the
    # map's previous version is v1: the same k (3), or else the latest run before the sweep.
    sweep = cluster(ks=[2, 3, 4], seed=1)
    assert [r.name for r in sweep.result.runs] == ["versions@v2", "versions@v3", "versions@v4"]
    assert sweep.previous == "versions@v1"
    assert sweep.vs_previous is not None and (sweep.vs_previous.a, sweep.vs_previous.b) == ("versions@v1", sweep.run.name)
    assert f"versions@v1 → {sweep.run.name}: ARI" in sweep.summary_markdown

    # A single k=2 run: the sweep's k=2 (v2) is its previous version, not v4 made just before it.
    k2 = cluster(k=2, seed=2)
    assert k2.run.name == "versions@v5" and k2.previous == "versions@v2"
    assert "versions@v2 → versions@v5: ARI" in k2.summary_markdown

    # The sweep's k=3 asked for again (reused, nothing refitted): compared with v1, the k=3 before it.
    again = cluster(k=3, seed=1)
    assert again.run.reused and again.run.name == "versions@v3" and again.previous == "versions@v1"

    # A sweep of new k values: compared with the latest run before it (v5), never a sibling k.
    fresh = cluster(ks=[5, 6], seed=3)
    assert [r.name for r in fresh.result.runs] == ["versions@v6", "versions@v7"] and fresh.previous == "versions@v5"
    # A k=7 asked for later with the same parameters is a request of its own, not a sibling of
    # that sweep (runs of one request share a request_id): compared with v7, the run before it.
    more = cluster(k=7, seed=3)
    assert more.run.name == "versions@v8" and more.previous == "versions@v7"

    # A map whose only clustering is one sweep has no previous version at all.
    other = ingest_sample(lake, tmp_path, n=120, name="sweep-only", seed=6)
    append_embeddings(lake, [r["location_id"] for r in other], band_matrix(other, seed=1)[0])
    only = cluster_flow("sweep-only", lake.uri, ClusterParams(report=False, ks=[2, 3]))
    assert only.previous is None and only.vs_previous is None
    assert "The map has no clustering from before this sweep to compare with." in only.summary_markdown


def test_refused_key_stops_the_fetch_at_once_without_retries(demo_world, tmp_path, monkeypatch):
    from svcluster.flows.fetch import fetch_flow
    from svcluster.flows.ingest import ingest_flow

    lake_uri = str(tmp_path / "lake")
    ingest_flow(str(demo_world.map_file), lake_uri, DEMO_MAP)
    wrong = "AIzaWRONGkey-do-not-print-0123456789"
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", wrong)
    demo_world.server.reset_counts()
    with pytest.raises(FatalApiError) as err:
        fetch_flow(DEMO_MAP, lake_uri, FAST_FETCH)
    assert wrong not in str(err.value)
    # No retry of the batch and no billed request: the free metadata requests in flight when the
    # refusal came (the run's --concurrency at most, shared by its batches), nothing more.
    assert demo_world.server.counts["image"] == 0
    assert 1 <= demo_world.server.counts["metadata"] <= FAST_FETCH.concurrency


def test_fetch_takes_the_global_concurrency_limit_when_the_server_has_one(demo_world, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from svcluster.flows.fetch import fetch_flow
    from svcluster.flows.ingest import ingest_flow

    lake_uri = str(tmp_path / "lake")
    ingest_flow(str(demo_world.map_file), lake_uri, DEMO_MAP)
    absent = fetch_flow(DEMO_MAP, lake_uri, FAST_FETCH.model_copy(update={"concurrency_limit": "no-such-limit", "headings": [0]}))
    assert absent.global_limit is None and absent.ok > 0

    name = "svcluster-test-streetview"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    try:
        taken = fetch_flow(DEMO_MAP, lake_uri, FAST_FETCH.model_copy(update={"concurrency_limit": name, "headings": [90]}))
        assert taken.global_limit == name and taken.batches == 3 and taken.ok > 0
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 0  # released
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


@pytest.fixture
def refusing_api():
    """A real HTTP server on 127.0.0.1 that answers every request 403 Forbidden; yields its API URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def _refuse(self):
            body = b'{"detail": "forbidden"}'
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_api() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"  # nothing listens there: connection refused


def test_global_limit_lookup_failure_lets_the_fetch_run_without_it(refusing_api):
    """The limit is optional: an unreachable server or an HTTP error returns None with a warning."""
    import logging

    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from svcluster.flows.fetch import find_global_limit

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.records: list[logging.LogRecord] = []

        def emit(self, record):
            self.records.append(record)

    logger = logging.getLogger("svcluster.fetch")
    for api in (closed_port_api(), refusing_api):
        collect = Collect()
        logger.addHandler(collect)
        try:
            with temporary_settings({PREFECT_API_URL: api, PREFECT_CLIENT_MAX_RETRIES: 0}):
                assert find_global_limit("svcluster-streetview") is None
        finally:
            logger.removeHandler(collect)
        assert len(collect.records) == 1, api
        message = collect.records[0].getMessage()
        assert "'svcluster-streetview'" in message and "runs without it" in message
    assert "403" in message  # the HTTP error is named
    assert find_global_limit(None) is None and find_global_limit("") is None  # no name: no lookup

def test_svcluster_run_goes_through_the_pipeline_flow(demo_world, tmp_path, capsys):
    from svcluster.flows.cli import main

    lake_uri = str(tmp_path / "lake")
    out = tmp_path / "cli.json"
    code = main(
        ["--lake", lake_uri, "--json", "run", str(demo_world.map_file), "--map", "cli-map", "--model", "baseline",
         "--size", "128x128", "--qps", "0", "--k", "3", "--out", str(out), "--summary", str(tmp_path / "cli.md")]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["map"] == "cli-map" and result["flow_run_id"]
    assert result["cluster"]["run"]["name"] == "cli-map@v1" and result["cluster"]["run"]["k"] == 3
    assert result["export"]["tagged"] > 50 and out.is_file()
    assert open_lake(lake_uri).query("SELECT count(*) AS n FROM cluster_runs WHERE map = 'cli-map'").column(0)[0].as_py() == 1


def test_cli_rejects_a_missing_map_file_in_one_line(tmp_path, capsys):
    from svcluster.flows.cli import main

    assert main(["--lake", str(tmp_path / "lake"), "run", str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err
    assert "nope.json: no such map file" in err and "Traceback" not in err


def test_flow_progress_drives_the_console_bar_outside_a_flow_run():
    calls = []

    class Recorder:
        def __init__(self, unit):
            self.unit = unit

        def start(self, total, description):
            calls.append(("start", total, description, self.unit))

        def advance(self, amount=1):
            calls.append(("advance", amount))

        def finish(self):
            calls.append(("finish",))

    with console_progress(Recorder):
        p = FlowProgress("k", unit="img")
        p.start(10, "fetching")
        p.advance(4)
        p.advance(6)
        p.finish()
    assert calls == [("start", 10, "fetching", "img"), ("advance", 4), ("advance", 6), ("finish",)]
    assert p.percent == 100.0
    assert FlowProgress("k")._console.__class__.__name__ == "NullProgress"  # the factory is gone


def test_artifact_keys_are_valid_for_any_map_name():
    assert artifact_key("fetch", "Chile 1000 Locs!") == "fetch-chile-1000-locs"
    assert re.fullmatch(r"[a-z0-9-]+", artifact_key("embed", "Ñuble/ß__map"))


def test_user_errors_are_not_retried_but_other_failures_are():
    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self, raise_on_failure=True):
            return self.exc

    assert retry_unless_user_error(None, None, State(FatalApiError("key refused"))) is False
    assert retry_unless_user_error(None, None, State(SvclusterError("no such map"))) is False
    assert retry_unless_user_error(None, None, State(OSError("connection reset"))) is True


def test_fetch_params_split_the_rate_among_parallel_batches():
    options = FetchParams(concurrency=16, qps=100).to_options(parallelism=4)
    assert options.concurrency == 4 and options.qps == 25.0
    assert FetchParams(qps=0).to_options(3).qps == 0.0
    with pytest.raises(SvclusterError):
        FetchParams(size="9999x1").to_options()
