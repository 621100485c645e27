"""The fetch flow: a map's missing Street View views into the lake, in batches of locations.

The flow plans from the lake (what is missing or failed), submits ``fetch_batch`` tasks of
``batch_locations`` locations each with at most one batch per worker in flight, advances a
progress artifact as batches complete, removes orphaned blobs, and leaves a table artifact of
the map's view status counts. Request concurrency and the qps budget are split among the batches
running at once. When the Prefect server has a global concurrency limit named
``params.concurrency_limit`` every batch takes a slot while it runs (a rate limit, i.e. one with
slot decay, is taken once as the batch starts): that caps the API traffic of every flow run and
worker together. Without such a limit (or without a server) nothing is taken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from svcluster.flows.prefect_env import silence_prefect_notices
from svcluster.flows.artifacts import FlowProgress, artifact_key, table_artifact
from svcluster.flows.params import FetchParams
from svcluster.flows.retries import retry_unless_user_error
from svcluster.flows.runner import current_parallelism, run_windowed
from svcluster.sql import load_sql
from svcluster.tasks.lake.blob_check import check_map_blobs
from svcluster.tasks.fetch.step import FetchItem, FetchOptions, FetchStats, fetch_batch, gc_blobs, plan_fetch, record_map_views, replan_batch
from svcluster.tasks.batches import chunked
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.progress import NullProgress
from svcluster.tasks.settings import Settings, load_settings

silence_prefect_notices()  # also in worker-launched runs, which skip the CLI set-up


@dataclass(frozen=True)
class GlobalLimit:
    """A Prefect global concurrency limit found on the server, and how to take it."""

    name: str
    rate_limit: bool  # slot decay set: take once per batch start; else hold a slot per batch


@dataclass
class FetchFlowResult:
    """What the fetch flow did: the step's counters plus the map's status counts afterwards."""

    map: str
    locations_planned: int
    batches: int
    ok: int
    no_imagery: int
    failed: int
    requests: int
    image_requests: int
    orphan_blobs_removed: int
    third_party_skipped: int  # views of third-party panoramas not bought (--official-only)
    reused: int  # ok views that reuse an image of the same panorama and heading: no request
    refreshed: int  # places whose deleted pano id was found again by location
    global_limit: str | None
    status_counts: list[dict[str, Any]] = field(default_factory=list)


def find_global_limit(name: str | None) -> GlobalLimit | None:
    """The limit ``name`` if the Prefect server has it (and it is active), else None.

    The limit is optional: when the server cannot be asked (unreachable, an HTTP error, a
    refused request) the fetch runs without it, and a warning says so."""
    if not name:
        return None
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import MissingContextError, ObjectNotFound, PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return None
    except (PrefectHTTPStatusError, httpx.HTTPError, OSError) as exc:
        try:  # inside a flow or task run the warning shows in the run's logs (the UI)
            logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
        except MissingContextError:
            logger = logging.getLogger("svcluster.fetch")
        logger.warning(
            "could not read the Prefect global concurrency limit %r (%s: %s); the fetch runs without it",
            name, type(exc).__name__, exc,
        )  # fmt: skip
        return None
    if not getattr(limit, "active", True):
        return None
    return GlobalLimit(name, bool(getattr(limit, "slot_decay_per_second", 0) or 0))


@task(
    name="fetch-batch",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=retry_unless_user_error,
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
)
def fetch_batch_task(
    lake_uri: str, items: list[FetchItem], settings: Settings, options: FetchOptions, limit: GlobalLimit | None
) -> FetchStats:
    """Fetch one batch of locations (a rerun resumes: the plan only holds missing views; a
    retry first drops the views its failed attempt already stored)."""
    from prefect.runtime import task_run

    if task_run.run_count > 1:
        items = replan_batch(open_lake(lake_uri), items, options)
    if limit is None:
        return fetch_batch(lake_uri, items, settings, options, NullProgress())
    if limit.rate_limit:
        from prefect.concurrency.sync import rate_limit

        rate_limit(limit.name, occupy=1)
        return fetch_batch(lake_uri, items, settings, options, NullProgress())
    from prefect.concurrency.sync import concurrency

    with concurrency(limit.name, occupy=1):
        return fetch_batch(lake_uri, items, settings, options, NullProgress())


@task(name="fetch-plan", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error, timeout_seconds=600, cache_policy=NO_CACHE)
def plan_fetch_task(lake_uri: str, map_name: str, options: FetchOptions) -> list[FetchItem]:
    """The map's locations with views still missing or failed, in input order (views whose
    blob is gone, or was found unreadable by embed, are marked failed first: fetched again)."""
    lake = open_lake(lake_uri)
    check_map_blobs(lake, map_name)
    items = plan_fetch(lake, map_name, options)
    record_map_views(lake, map_name, options)
    return items


@task(name="fetch-cleanup", retries=1, retry_delay_seconds=5, timeout_seconds=1800, cache_policy=NO_CACHE)
def gc_blobs_task(lake_uri: str) -> int:
    """Remove blobs that no images row refers to (left by an interrupted fetch)."""
    return gc_blobs(open_lake(lake_uri)).removed


@task(name="image-status", retries=1, retry_delay_seconds=5, timeout_seconds=600, cache_policy=NO_CACHE)
def image_status_task(lake_uri: str, map_name: str) -> list[dict[str, Any]]:
    """The map's view counts per status (ok / no_imagery / skipped / failed)."""
    return open_lake(lake_uri).query(load_sql("pipeline/image_status"), {"map": map_name}).to_pylist()


@flow(name="svcluster-fetch", log_prints=False, validate_parameters=True)
def fetch_flow(
    map_name: str,
    lake: str | None = None,
    params: FetchParams = FetchParams(),
    parallelism: int | None = None,
) -> FetchFlowResult:
    """Fetch the map's missing Street View views (credentials from the environment)."""
    logger = get_run_logger()
    lake_uri = open_lake(lake or load_settings().lake).uri
    in_flight = parallelism or current_parallelism(default=1)
    options = params.to_options(in_flight)
    settings = load_settings(lake=lake_uri)
    items = plan_fetch_task(lake_uri, map_name, options)
    batches = chunked(items, params.batch_locations)
    limit = find_global_limit(params.concurrency_limit) if batches else None
    if limit:
        logger.info("fetch batches take the Prefect global concurrency limit %r", limit.name)
    total = FetchStats()
    progress = FlowProgress(artifact_key("fetch", map_name), unit="img")
    progress.start(sum(len(i.headings) for i in items), f"fetching {map_name}")

    def done(batch: list[FetchItem], stats: FetchStats) -> None:
        nonlocal total
        total = total.merge(stats)
        progress.advance(sum(len(i.headings) for i in batch))

    try:
        run_windowed(
            lambda batch: fetch_batch_task.submit(lake_uri, batch, settings, options, limit),
            batches,
            in_flight,
            done,
        )
    finally:
        progress.finish()
    removed = gc_blobs_task(lake_uri) if batches else 0
    counts = image_status_task(lake_uri, map_name)
    table_artifact(artifact_key("fetch-status", map_name), counts, f"Street View views of {map_name} by status")
    logger.info("fetched %d views of %s in %d batches (%d ok, %d no imagery, %d skipped as third-party, %d failed)",
                total.ok + total.no_imagery + total.third_party_skipped + total.failed, map_name, len(batches), total.ok,
                total.no_imagery, total.third_party_skipped, total.failed)  # fmt: skip
    return FetchFlowResult(
        map=map_name,
        locations_planned=len(items),
        batches=len(batches),
        ok=total.ok,
        no_imagery=total.no_imagery,
        failed=total.failed,
        requests=total.requests,
        image_requests=total.image_requests,
        orphan_blobs_removed=removed,
        third_party_skipped=total.third_party_skipped,
        reused=total.reused,
        refreshed=total.refreshed,
        global_limit=limit.name if limit else None,
        status_counts=counts,
    )
