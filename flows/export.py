"""The export flow: a map written back in its own shape, tagged by a cluster run.

The output path is where the flow runs: a local file for ``svcluster run``, a path inside the
container (on a volume) for a deployment.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from svcluster.flows.prefect_env import silence_prefect_notices
from svcluster.flows.retries import retry_unless_user_error
from svcluster.tasks.export.step import DEFAULT_NOISE_FORMAT, DEFAULT_TAG_FORMAT, ExportResult, export_map
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.settings import load_settings

silence_prefect_notices()  # also in worker-launched runs, which skip the CLI set-up


@task(name="export-map", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error, timeout_seconds=1800, cache_policy=NO_CACHE)
def export_task(
    lake_uri: str, out: str, run: str | None, map_name: str | None, tag_format: str, refresh_panos: bool = False,
    noise_format: str = DEFAULT_NOISE_FORMAT, tag_outliers: bool = False,
) -> ExportResult:
    """Write the tagged map to ``out`` (atomically)."""
    return export_map(
        open_lake(lake_uri), out, map_name=map_name, run=run, tag_format=tag_format, refresh_panos=refresh_panos,
        noise_format=noise_format, tag_outliers=tag_outliers,
    )


@flow(name="svcluster-export", log_prints=False, validate_parameters=True)
def export_flow(
    out: str,
    run: str | None = None,
    map_name: str | None = None,
    tag_format: str = DEFAULT_TAG_FORMAT,
    refresh_panos: bool = False,
    lake: str | None = None,
    noise_format: str = DEFAULT_NOISE_FORMAT,
    tag_outliers: bool = False,
) -> ExportResult:
    """Export ``run`` (run_id or MAP@vN) — or ``map_name`` untagged — as JSON to ``out``; with
    ``refresh_panos`` stale pano ids are written as the ids the fetch refreshed them to; HDBSCAN's
    noise is tagged by ``noise_format``, and with ``tag_outliers`` the run's outliers ``outlier``."""
    return export_task(
        open_lake(lake or load_settings().lake).uri, str(out), run, map_name, tag_format, refresh_panos, noise_format, tag_outliers
    )
