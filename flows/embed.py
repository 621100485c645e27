"""The embed flow: every fetched view of a map through the image model, pooled per location.

The embed step plans from the lake (locations whose views have no embedding yet for this model,
pooling and precision) and the flow submits ``embed_batch`` tasks of ``batch_locations``
locations. Each task loads the model where it runs (once per worker process, then cached by
the step), so on Dask the weights never travel; locally one batch runs at a time because the
model already uses every core. A progress artifact advances as batches complete and a table
artifact shows the map's embedding coverage afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from svcluster.flows.prefect_env import silence_prefect_notices
from svcluster.flows.artifacts import FlowProgress, artifact_key, table_artifact
from svcluster.flows.params import EmbedParams
from svcluster.flows.retries import retry_unless_user_error
from svcluster.flows.runner import run_windowed
from svcluster.sql import load_sql
from svcluster.tasks.batches import chunked
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.progress import NullProgress
from svcluster.tasks.settings import load_settings

silence_prefect_notices()  # also in worker-launched runs, which skip the CLI set-up


@dataclass
class EmbedFlowResult:
    """What the embed flow did: locations embedded now, batches, and the map's coverage."""

    map: str
    model: str  # as the lake records it
    pooling: str
    precision: str
    locations_planned: int
    batches: int
    totals: dict[str, float] = field(default_factory=dict)  # the step's counters, summed
    coverage: list[dict[str, Any]] = field(default_factory=list)
    precision_decision: Any = None  # how auto was resolved (tasks/embed/precision_auto.py); None: forced


@task(name="embed-plan", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error, timeout_seconds=600, cache_policy=NO_CACHE)
def plan_embed_task(lake_uri: str, map_name: str, options: Any) -> list[list[str]]:
    """Batches of location ids whose embedding is missing (the step's own batch sizes)."""
    from svcluster.tasks.embed.step import plan_embed

    return plan_embed(open_lake(lake_uri), map_name, options)


@task(
    name="embed-batch",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=retry_unless_user_error,
    timeout_seconds=4 * 3600,
    cache_policy=NO_CACHE,
)
def embed_batch_task(lake_uri: str, location_ids: list[str], options: Any) -> Any:
    """Embed one batch of locations (their views, pooled) and append them to the lake."""
    from svcluster.tasks.embed.step import embed_batch

    return embed_batch(lake_uri, location_ids, options, NullProgress())


@task(name="embedding-status", retries=1, retry_delay_seconds=5, timeout_seconds=600, cache_policy=NO_CACHE)
def embedding_status_task(lake_uri: str, map_name: str) -> list[dict[str, Any]]:
    """How many of the map's locations have an embedding, per model/pooling/precision."""
    return open_lake(lake_uri).query(load_sql("pipeline/embedding_status"), {"map": map_name}).to_pylist()


def rebatch(batches: list[list[str]], size: int) -> list[list[str]]:
    """The planned location ids regrouped in batches of ``size`` (plan order kept)."""
    flat = [loc for batch in batches for loc in batch]
    return chunked(flat, size)


def add_counters(totals: dict[str, float], stats: Any) -> None:
    """Sum the numeric fields of a step's stats dataclass into ``totals``."""
    if not is_dataclass(stats):
        return
    for f in fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            totals[f.name] = totals.get(f.name, 0) + value


@flow(name="svcluster-embed", log_prints=False, validate_parameters=True)
def embed_flow(
    map_name: str, lake: str | None = None, params: EmbedParams = EmbedParams(), parallelism: int | None = None
) -> EmbedFlowResult:
    """Embed the map's fetched views that have no embedding yet for this model and pooling."""
    logger = get_run_logger()
    lake_uri = open_lake(lake or load_settings().lake).uri
    options = params.to_options()
    from svcluster.tasks.embed.models import choose_model

    from svcluster.tasks.embed.step import with_decided_precision, with_map_view_settings

    # Every batch pools the views at one set of settings and runs one precision: the map's
    # settings, and auto's decision (measured once per model and machine), resolved once here.
    the_lake = open_lake(lake_uri)
    options = with_map_view_settings(the_lake, map_name, options)
    options, decision = with_decided_precision(the_lake, map_name, options)
    if decision is not None:
        logger.info("precision auto -> %s (%s, %s): %s", decision.precision, decision.runtime, decision.how, decision.reason)
    choice = choose_model(options.model, options.device, options.precision)
    batches = rebatch(plan_embed_task(lake_uri, map_name, options), params.batch_locations)
    totals: dict[str, float] = {}
    progress = FlowProgress(artifact_key("embed", map_name), unit="loc")
    progress.start(sum(len(b) for b in batches), f"embedding {map_name} with {choice.model}")

    def done(batch: list[str], stats: Any) -> None:
        add_counters(totals, stats)
        progress.advance(len(batch))

    try:
        run_windowed(lambda batch: embed_batch_task.submit(lake_uri, batch, options), batches, parallelism or 1, done)
    finally:
        progress.finish()
    coverage = embedding_status_task(lake_uri, map_name)
    table_artifact(artifact_key("embed-status", map_name), coverage, f"embeddings of {map_name}'s locations")
    logger.info("embedded %d locations of %s in %d batches", sum(len(b) for b in batches), map_name, len(batches))
    return EmbedFlowResult(
        map=map_name,
        model=choice.model,
        pooling=params.pooling,
        precision=choice.precision,
        locations_planned=sum(len(b) for b in batches),
        batches=len(batches),
        totals=totals,
        coverage=coverage,
        precision_decision=decision,
    )
