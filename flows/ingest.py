"""The ingest flow: a map file validated and loaded into the lake's ``locations`` table.

Ingest is one quick, all-or-nothing write, so it is one task. A map file that does not parse
fails the run at once with a message naming the file, the item and the field (no retries: the
same file fails the same way); storage trouble is retried.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from svcluster.flows.prefect_env import silence_prefect_notices
from svcluster.flows.retries import retry_unless_user_error
from svcluster.tasks.ingest.step import IngestResult, ingest_map
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.settings import load_settings

silence_prefect_notices()  # also in worker-launched runs, which skip the CLI set-up


@task(name="ingest-map", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error, timeout_seconds=1800, cache_policy=NO_CACHE)
def ingest_task(lake_uri: str, map_file: str, map_name: str | None) -> IngestResult:
    """Parse ``map_file`` and make it the map's locations (unchanged files write nothing)."""
    return ingest_map(open_lake(lake_uri), map_file, map_name)


@flow(name="svcluster-ingest", log_prints=False, validate_parameters=True)
def ingest_flow(map_file: str, lake: str | None = None, map_name: str | None = None) -> IngestResult:
    """Load a map file (GeoGuessr, Vali, map-generator or map-making.app JSON) into the lake."""
    return ingest_task(open_lake(lake or load_settings().lake).uri, str(map_file), map_name)
