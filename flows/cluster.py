"""The cluster flow: a map's embeddings clustered into a versioned run, compared and summarised.

One task fits the run(s) (K-means over a few thousand vectors takes seconds; a sweep fits each
k in the same task, the vectors read once). Then the run is compared with the map's previous
version and with the tags already in the map, and the flow leaves a markdown artifact: cluster
sizes, metrics, and both comparisons. The same markdown is returned so the CLI can write it to
a file. Asking for a clustering that exists already reuses that run (nothing is refitted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from svcluster.flows.prefect_env import silence_prefect_notices
from svcluster.flows.artifacts import FlowProgress, artifact_key, markdown_artifact
from svcluster.flows.params import ClusterParams
from svcluster.flows.retries import retry_unless_user_error
from svcluster.tasks.cluster.grow import cluster_or_assign
from svcluster.tasks.cluster.step import ClusterResult, RunSummary
from svcluster.tasks.cluster.compare import Comparison, compare_runs, compare_with_tags
from svcluster.tasks.cluster.runs import previous_version
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.settings import load_settings

silence_prefect_notices()  # also in worker-launched runs, which skip the CLI set-up


@dataclass
class ClusterFlowResult:
    """The cluster step's result, the run the pipeline exports, and the comparisons made."""

    result: ClusterResult
    run: RunSummary  # the run to export: the only run, or a sweep's recommended k
    previous: str | None  # MAP@vN of the map's version before ``run``
    vs_previous: Comparison | None
    vs_tags: Comparison | None
    summary_markdown: str


@task(name="cluster-map", retries=1, retry_delay_seconds=10, retry_condition_fn=retry_unless_user_error, timeout_seconds=4 * 3600, cache_policy=NO_CACHE)
def cluster_task(lake_uri: str, map_name: str, options: Any) -> ClusterResult:
    """Fit (or find) the run(s) for these options; a sweep's progress (one step per k) goes to a
    progress artifact and to the console bar of the CLI that started the flow."""
    return cluster_or_assign(open_lake(lake_uri), map_name, options, FlowProgress(artifact_key("cluster", map_name), unit="k"))


@task(name="report-run", retries=1, retry_delay_seconds=5, timeout_seconds=1800, cache_policy=NO_CACHE)
def report_task(lake_uri: str, run_id: str) -> str:
    """Name the run's clusters (when the model has a text tower) and write its report and PNG
    into the lake under reports/<run_id>/; returns the markdown that links them."""
    from svcluster.tasks.cluster.naming import name_clusters
    from svcluster.tasks.report.page import report_artifacts

    lake = open_lake(lake_uri)
    name_clusters(lake, run_id)
    return report_artifacts(lake, run_id).markdown


@task(name="compare-runs", retries=1, retry_delay_seconds=5, timeout_seconds=1800, cache_policy=NO_CACHE)
def compare_task(
    lake_uri: str, run: RunSummary, map_name: str
) -> tuple[str | None, Comparison | None, Comparison | None]:
    """The run against the map's previous version (if any; ``previous_version``: never a run of
    its own sweep) and against the map's own tags (if any)."""
    lake = open_lake(lake_uri)
    found = previous_version(lake, map_name, run.run_id)
    previous = found.name if found else None
    vs_previous = compare_runs(lake, found.run_id, run.run_id) if found else None
    try:
        vs_tags = compare_with_tags(lake, run.run_id)
    except SvclusterError:  # the map carries no tags of its own: nothing to compare with
        vs_tags = None
    return previous, vs_previous, vs_tags


def chosen_run(result: ClusterResult) -> RunSummary:
    """The run the pipeline exports: the recommended k of a sweep, else the (first) run."""
    if result.recommended_k is not None:
        for r in result.runs:
            if r.k == result.recommended_k:
                return r
    return result.runs[0]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_markdown(result: ClusterResult, run: RunSummary, previous: str | None, vs_previous: Comparison | None, vs_tags: Comparison | None) -> str:
    """The run summary: what was clustered, sizes, metrics, and the comparisons."""
    lines = [
        f"# {run.name} — {result.map}",
        "",
        f"- run id: `{run.run_id}`{' (reused: the same clustering was already in the lake)' if run.reused else ''}",
        f"- embeddings: {result.model} · {result.pooling} · {result.precision}",
        f"- locations clustered: {result.n_locations} of {result.map_locations}",
        f"- k = {run.k} ({run.nonempty} non-empty clusters) · inertia {_fmt(run.inertia, 2)} · silhouette {_fmt(run.silhouette)}",
    ]
    if run.duplicates:
        lines.append(
            f"- near-identical panoramas: {run.duplicates} pairs of places in one cluster "
            "(cosine ≥ 0.995, different panoramas; the `duplicate_panoramas` SQL view)"
        )
    lines += [f"- **warning**: {w}" for w in run.warnings]
    if result.note:
        lines.append(f"- note: {result.note}")
    if result.grow_note:
        lines.append(f"- grown map: {result.grow_note}")
    if run.aligned_to:
        lines.append(f"- cluster numbers follow {run.aligned_to}")
    lines += ["", "## Cluster sizes", "", "| cluster | locations | share |", "|---:|---:|---:|"]
    total = (sum(run.sizes) + run.noise) or 1
    lines += [f"| {i} | {n} | {100 * n / total:.1f}% |" for i, n in enumerate(run.sizes)]
    if run.noise:
        lines.append(f"| noise (-1) | {run.noise} | {100 * run.noise / total:.1f}% |")
    if len(result.runs) > 1:
        lines += ["", "## Sweep", "", "| k | run | non-empty clusters | inertia | silhouette |", "|---:|---|---:|---:|---:|"]
        lines += [f"| {r.k} | {r.name} | {r.nonempty} | {_fmt(r.inertia, 2)} | {_fmt(r.silhouette)} |" for r in result.runs]
        others = [f"- **warning** ({r.name}, k={r.k}): {w}" for r in result.runs if r is not run for w in r.warnings]
        lines += [""] + others if others else []
        if result.recommendation:
            lines += ["", f"Recommended: {result.recommendation}."]
    lines += ["", "## Compared with the previous version", ""]
    if vs_previous is None:
        if previous is not None:
            lines.append(f"{previous} could not be compared.")
        elif len(result.runs) == 1 and run.name == f"{result.map}@v1":
            lines.append("This is the map's first clustering.")
        else:  # only runs of its sweep (the same parameters, another k) came before it
            lines.append("The map has no clustering from before this sweep to compare with.")
    else:
        lines.append(
            f"{vs_previous.a} → {vs_previous.b}: ARI {vs_previous.ari:.3f}, NMI {vs_previous.nmi:.3f}, "
            f"{vs_previous.changed} of {vs_previous.compared} locations changed cluster "
            f"({vs_previous.only_a} only in {vs_previous.a}, {vs_previous.only_b} only in {vs_previous.b})."
        )
    lines += ["", "## Compared with the map's own tags", ""]
    if vs_tags is None:
        lines.append("No location of the map carries a tag of its own.")
    else:
        lines.append(
            f"{vs_tags.compared} tagged locations: ARI {vs_tags.ari:.3f}, NMI {vs_tags.nmi:.3f}. "
            "Each cluster's dominant tag:"
        )
        lines += ["", "| cluster | locations | dominant tag | purity |", "|---:|---:|---|---:|"]
        lines += [f"| {p.category} | {p.size} | {p.dominant} | {100 * p.purity:.0f}% |" for p in vs_tags.purity]
    return "\n".join(lines) + "\n"


@flow(name="svcluster-cluster", log_prints=False, validate_parameters=True)
def cluster_flow(map_name: str, lake: str | None = None, params: ClusterParams = ClusterParams()) -> ClusterFlowResult:
    """Cluster the map's embeddings (one k or a sweep), compare, and summarise the run."""
    logger = get_run_logger()
    lake_uri = open_lake(lake or load_settings().lake).uri
    # Submitted, so the K-means runs where the flow's task runner runs tasks (a Dask worker in a
    # scaled-out pipeline); the comparisons and the summary are light and stay here.
    result = cluster_task.submit(lake_uri, map_name, params.to_options()).result()
    run = chosen_run(result)
    previous, vs_previous, vs_tags = compare_task(lake_uri, run, map_name)
    markdown = summary_markdown(result, run, previous, vs_previous, vs_tags)
    markdown_artifact(artifact_key("cluster-summary", map_name), markdown, f"cluster run {run.name}")
    if params.report:
        report_markdown = report_task(lake_uri, run.run_id)
        markdown_artifact(artifact_key("cluster-report", map_name), report_markdown, f"report of {run.name}")
    logger.info("%s: k=%d, silhouette %s%s", run.name, run.k, _fmt(run.silhouette), " (reused)" if run.reused else "")
    for r in result.runs:
        for w in r.warnings:
            logger.warning("%s (k=%d): %s", r.name, r.k, w)
    return ClusterFlowResult(result, run, previous, vs_previous, vs_tags, markdown)
