"""Where the step tasks run: threads in this process (default), or a Dask cluster.

``RunnerOptions`` is a flow parameter (so a deployment can choose it too):

* ``kind="thread"`` — a ``ThreadPoolTaskRunner`` with ``threads`` workers in this process;
* ``kind="dask"`` with ``dask_address`` — an existing Dask scheduler (``tcp://host:8786``);
  its workers need svcluster installed, the lake reachable (S3) and ``PREFECT_API_URL`` of a
  real Prefect server in their environment;
* ``kind="dask"`` without an address — a ``LocalCluster`` of ``dask_workers`` processes,
  started once for the whole pipeline and told where this run's Prefect API is (the temporary
  one included), so tasks on its workers report to the same run.

Batches are submitted with at most ``parallelism`` in flight: one per worker, so a rate limit
can be split among them and progress advances as each completes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

log = logging.getLogger("svcluster.runner")

T = TypeVar("T")
R = TypeVar("R")


class RunnerOptions(BaseModel):
    """How the pipeline's step tasks are executed."""

    kind: Literal["thread", "dask"] = Field("thread", description="thread: this process; dask: a Dask cluster")
    threads: int = Field(2, ge=1, le=64, description="worker threads for kind=thread")
    dask_address: str | None = Field(None, description="scheduler address (tcp://host:8786); none = a LocalCluster")
    dask_workers: int = Field(2, ge=1, le=256, description="LocalCluster worker processes (kind=dask, no address)")


@dataclass
class RunnerPlan:
    """A task runner for the step flows and how many batches to keep in flight on it."""

    options: RunnerOptions
    address: str | None  # the Dask scheduler, when kind is dask
    parallelism: int

    def task_runner(self) -> Any:
        """A fresh Prefect task runner (each flow run enters its own)."""
        if self.options.kind == "dask":
            from prefect_dask import DaskTaskRunner

            return DaskTaskRunner(address=self.address)
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=self.options.threads)


@contextmanager
def open_runner(options: RunnerOptions | None = None) -> Iterator[RunnerPlan]:
    """The runner for a pipeline run; a LocalCluster lives as long as the ``with`` block."""
    options = options or RunnerOptions()
    if options.kind == "thread":
        yield RunnerPlan(options, None, options.threads)
        return
    if options.dask_address:
        from svcluster.flows.prefect_env import is_temporary_api

        if is_temporary_api():
            log.warning(
                "Dask workers at %s cannot reach this command's temporary Prefect API; "
                "set PREFECT_API_URL to a Prefect server that they can reach", options.dask_address
            )
        yield RunnerPlan(options, options.dask_address, count_dask_workers(options.dask_address) or options.dask_workers)
        return
    from distributed import LocalCluster

    from svcluster.flows.prefect_env import current_api_url

    env = {
        "PREFECT_API_URL": current_api_url(),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Worker consoles share the user's terminal: errors only (their logs all reach the API).
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "ERROR",
    }
    cluster = LocalCluster(
        n_workers=options.dask_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        env=env,
        silence_logs=logging.WARNING,
    )
    try:
        yield RunnerPlan(options, cluster.scheduler_address, options.dask_workers)
    finally:
        cluster.close()


def count_dask_workers(address: str) -> int:
    """How many workers the scheduler at ``address`` has now (0 if it cannot be asked)."""
    try:
        from distributed import Client

        with Client(address, timeout=10) as client:
            return len(client.scheduler_info().get("workers", {}))
    except (OSError, TimeoutError) as exc:
        log.warning("cannot count the workers of the Dask scheduler at %s: %s", address, exc)
        return 0


def current_parallelism(default: int = 1) -> int:
    """How many tasks the current flow run's task runner runs at once (for standalone step
    flows, whose runner was not chosen by the pipeline)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx else None
    if runner is None:
        return default
    max_workers = getattr(runner, "_max_workers", None)
    if isinstance(max_workers, int) and 0 < max_workers < 1024:
        return max_workers
    client = getattr(runner, "_client", None)
    if client is not None:
        try:
            return max(1, len(client.scheduler_info().get("workers", {})))
        except Exception:  # the count is a hint: never fail a run over it
            return default
    return default


def run_windowed(
    submit: Callable[[T], Any],
    batches: Sequence[T],
    in_flight: int,
    on_done: Callable[[T, R], None],
) -> list[R]:
    """Submit ``batches`` keeping at most ``in_flight`` futures open; call ``on_done(batch,
    result)`` as each finishes (in completion order). Returns results in batch order; the first
    failure is raised once the batches already running have settled."""
    from prefect.futures import as_completed

    results: list[Any] = [None] * len(batches)
    pending: dict[Any, int] = {}
    queue: Iterable[int] = iter(range(len(batches)))
    error: BaseException | None = None

    def top_up() -> None:
        while error is None and len(pending) < max(1, in_flight):
            i = next(queue, None)
            if i is None:
                return
            pending[submit(batches[i])] = i

    top_up()
    while pending:
        completed = as_completed(list(pending))
        future = next(completed)
        completed.close()
        i = pending.pop(future)
        try:
            results[i] = future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others settle
            error = error or exc
        else:
            on_done(batches[i], results[i])
        top_up()
    if error is not None:
        raise error
    return results

