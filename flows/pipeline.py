"""The pipeline flow: ingest → fetch → embed → cluster (+ compare) → export, as subflows.

Each step is its own flow run under the pipeline's, so the UI shows where time went and a
failed step can be rerun alone. Every step resumes from what the lake says is done, so
running the pipeline again over a complete lake does no work: the map is unchanged, no view is
missing, every location has its embedding, the clustering exists (reused), and the export is
rewritten identically.

Where the fetch, embed and cluster tasks run is a parameter (``runner``): threads here, a Dask
cluster at an address, or a LocalCluster the pipeline starts for its duration and stops
afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from svcluster.flows.prefect_env import silence_prefect_notices
from svcluster.flows.cluster import ClusterFlowResult, cluster_flow
from svcluster.flows.embed import EmbedFlowResult, embed_flow
from svcluster.flows.export import export_flow
from svcluster.flows.fetch import FetchFlowResult, fetch_flow
from svcluster.flows.ingest import ingest_flow
from svcluster.flows.params import ClusterParams, EmbedParams, FetchParams
from svcluster.flows.runner import RunnerOptions, open_runner
from svcluster.tasks.files import atomic_write
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.export.step import DEFAULT_TAG_FORMAT, ExportResult
from svcluster.tasks.ingest.step import IngestResult
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.settings import load_settings

silence_prefect_notices()  # also in worker-launched runs, which skip the CLI set-up


@dataclass
class PipelineResult:
    """Every step's result, where the outputs went, and how long each step took."""

    map: str
    lake: str
    ingest: IngestResult
    fetch: FetchFlowResult
    embed: EmbedFlowResult
    cluster: ClusterFlowResult
    export: ExportResult
    summary_file: str | None
    runner: str
    flow_run_id: str | None
    seconds: dict[str, float] = field(default_factory=dict)


def stop_if_nothing_fetched(fetched: FetchFlowResult) -> None:
    """Stop the pipeline with the reason when every view it tried to fetch failed and the map
    has no usable image at all (a partial failure goes on: the summary counts the failed views
    and a rerun retries them)."""
    usable = sum(int(row.get("views") or 0) for row in fetched.status_counts if row.get("status") == "ok")
    if fetched.failed and not (fetched.ok or fetched.no_imagery or fetched.third_party_skipped) and not usable:
        raise SvclusterError(
            f"every view the fetch tried failed ({fetched.failed} views) and {fetched.map} has no image to embed: "
            "rerun to retry them (svcluster sql \"SELECT reason, count(*) FROM images WHERE status = 'failed' GROUP BY ALL\" says why)"
        )


def default_outputs(map_name: str, out_dir: str | Path = "out") -> tuple[str, str]:
    """Where a run's tagged map and summary go when not given: ``out/<map>.tagged.json`` and
    ``out/<map>.summary.md``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in map_name) or "map"
    base = Path(out_dir)
    return str(base / f"{safe}.tagged.json"), str(base / f"{safe}.summary.md")


@flow(name="svcluster-pipeline", log_prints=False, validate_parameters=True)
def pipeline(
    map_file: str,
    lake: str | None = None,
    map_name: str | None = None,
    fetch: FetchParams = FetchParams(),
    embed: EmbedParams = EmbedParams(),
    cluster: ClusterParams = ClusterParams(),
    export_out: str | None = None,
    summary_out: str | None = None,
    tag_format: str = DEFAULT_TAG_FORMAT,
    refresh_panos: bool = False,
    tag_outliers: bool = False,
    runner: RunnerOptions = RunnerOptions(),
) -> PipelineResult:
    """Cluster a map's Street View locations end to end and export it tagged.

    ``lake`` defaults to ``SVCLUSTER_LAKE`` (else ``./lake``). The Street View API key comes
    from the environment of whatever runs the flow, never from a parameter.
    """
    logger = get_run_logger()
    lake_uri = open_lake(lake or load_settings().lake).uri
    seconds: dict[str, float] = {}

    def timed(step: str, started: float) -> None:
        seconds[step] = round(time.perf_counter() - started, 3)

    t = time.perf_counter()
    ingested = ingest_flow(str(map_file), lake_uri, map_name)
    timed("ingest", t)
    name = ingested.map
    with open_runner(runner) as plan:
        embed_parallelism = 1 if runner.kind == "thread" else plan.parallelism
        t = time.perf_counter()
        fetched = fetch_flow.with_options(task_runner=plan.task_runner())(name, lake_uri, fetch, plan.parallelism)
        timed("fetch", t)
        stop_if_nothing_fetched(fetched)
        t = time.perf_counter()
        embedded = embed_flow.with_options(task_runner=plan.task_runner())(name, lake_uri, embed, embed_parallelism)
        timed("embed", t)
        t = time.perf_counter()
        # Cluster what was just embedded unless told otherwise.
        params = cluster if cluster.model else cluster.model_copy(
            update={"model": embedded.model, "pooling": cluster.pooling or embedded.pooling, "precision": cluster.precision or embedded.precision}
        )
        clustered = cluster_flow.with_options(task_runner=plan.task_runner())(name, lake_uri, params)
        timed("cluster", t)
    default_export, default_summary = default_outputs(name)
    t = time.perf_counter()
    exported = export_flow(
        export_out or default_export, clustered.run.run_id, None, tag_format, refresh_panos=refresh_panos,
        tag_outliers=tag_outliers, lake=lake_uri,
    )
    timed("export", t)
    summary_path = Path(summary_out or default_summary)
    with atomic_write(summary_path, text=True) as fh:
        fh.write(clustered.summary_markdown)
    logger.info("pipeline of %s done: %s exported to %s", name, clustered.run.name, exported.out)
    return PipelineResult(
        map=name,
        lake=lake_uri,
        ingest=ingested,
        fetch=fetched,
        embed=embedded,
        cluster=clustered,
        export=exported,
        summary_file=str(summary_path),
        runner=runner.kind if runner.kind == "thread" else f"dask ({plan.address})",
        flow_run_id=flow_run.get_id(),
        seconds=seconds,
    )
