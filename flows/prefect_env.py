"""How svcluster talks to Prefect: a real server when ``PREFECT_API_URL`` is set, else a temporary
API that lives as long as the command.

``prepare_prefect`` must run before ``prefect`` is first imported (Prefect reads its settings
and logging configuration at import). It turns analytics off, keeps Prefect's console logs to
warnings unless asked for more (the API still receives every log), and drops the temporary
server's start/stop announcements, which would otherwise be the last lines a user sees after
the command's own summary. Without an API URL, the commands that run flows ask it to start
their temporary API at once (``svcluster.flows.temporary_api``), so its start-up overlaps with the
command's imports; otherwise Prefect's ephemeral mode starts one at the first flow call.

Flows run inside ``PrefectTarget.session()``: it waits for the temporary API and turns flow
heartbeats off there. Heartbeats let a server mark crashed runs; a temporary API dies with the
command, so it has no use for them, and each flow run's end waits up to a second for its
heartbeat thread (five subflows: five seconds of a pipeline that has nothing to do).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Messages Prefect's ephemeral server logs on the "prefect" logger when it starts and stops.
EPHEMERAL_NOISE = ("Starting temporary server on", "Stopping temporary server on", "See https://docs.prefect.io")


class EphemeralNoiseFilter(logging.Filter):
    """Drops the ephemeral server's start/stop announcements."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record we cannot format is not ours to judge
            return True
        return not message.startswith(EPHEMERAL_NOISE)


@dataclass(frozen=True)
class PrefectTarget:
    """Which Prefect API the flows report to: a server's URL, or None for a temporary API
    (``temporary`` is the one this command started, if it did)."""

    api_url: str | None
    temporary: Any = None  # svcluster.flows.temporary_api.TemporaryApi

    @property
    def ephemeral(self) -> bool:
        return not self.api_url

    def describe(self) -> str:
        return f"Prefect server {self.api_url}" if self.api_url else "a temporary local Prefect API (no server)"

    @contextmanager
    def session(self) -> Iterator[None]:
        """Where flows run: the temporary API is up, and heartbeats are off unless a server
        that outlives the command receives them."""
        if self.temporary is not None:
            self.temporary.wait_ready()
        if _QUIET_FAILURES:
            _filter_console_failures()
        if not self.ephemeral:
            yield
            return
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


class ThreadTimeoutNoticeFilter(logging.Filter):
    """Drops Prefect's notice, repeated for every task run in a thread pool or on a Dask worker,
    that a task timeout there cannot interrupt blocking I/O. Our timeouts are a backstop on
    top of the steps' own request timeouts, so that is expected (docs/scaling.md)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not (msg.startswith("Timeout of") and "running in a worker thread" in msg)


class InterruptNoticeFilter(logging.Filter):
    """Drops the crash notices a command's runs log when it stops: "Crash detected! Execution
    was aborted by an interrupt signal." from every flow run on Ctrl-C, and "... CancelledError:
    Task run cancelled by the task runner" from a task run that was about to start when its flow
    stopped (on Ctrl-C or after a failure) and its task runner cancelled what was left. The
    command says "interrupted; rerun to resume" (or the failure) once, and the runs' Crashed
    states still record why."""

    CAUSES = ("aborted by an interrupt signal", "Task run cancelled by the task runner")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not (msg.startswith("Crash detected!") and any(cause in msg for cause in self.CAUSES))


class RunFailureNoticeFilter(logging.Filter):
    """For the console only: drops the ERROR records in which flow and task runs report the
    failure that ends a command, tracebacks included (the command prints that failure itself,
    as one line; ``--debug`` or ``--verbose`` keeps them). The API still receives them."""

    PREFIXES = ("Encountered exception during execution", "Finished in state Failed", "Finished in state Crashed", "Task run failed with")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            return True
        msg = record.msg if isinstance(record.msg, str) else ""
        return not msg.startswith(self.PREFIXES)


_NOISE_FILTER = EphemeralNoiseFilter()
_TIMEOUT_FILTER = ThreadTimeoutNoticeFilter()
_INTERRUPT_FILTER = InterruptNoticeFilter()
_FAILURE_FILTER = RunFailureNoticeFilter()
_QUIET_FAILURES = False  # set by prepare_prefect: the console filter above is wanted


_TEMPORARY: Any = None  # the temporary API this process started (one per process)


def prepare_prefect(console_level: str = "WARNING", start_api: bool = False, quiet_failures: bool = False) -> PrefectTarget:
    """Configure the environment for Prefect (idempotent). ``console_level`` is what Prefect prints
    on stderr (INFO shows every flow and task run); logs sent to the API are unaffected.
    ``start_api``: without ``PREFECT_API_URL``, start this process's temporary API now (only
    before Prefect is imported: an imported Prefect has settled on its API already).
    ``quiet_failures``: the console leaves out the runs' own reports of the failure that ends
    the command (``RunFailureNoticeFilter``), for a CLI that prints it as one line."""
    global _TEMPORARY, _QUIET_FAILURES
    _QUIET_FAILURES = quiet_failures
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if _TEMPORARY is not None:
        return _finish(console_level, PrefectTarget(None, _TEMPORARY))
    api_url = os.environ.get("PREFECT_API_URL") or None
    if not api_url and start_api and "prefect" not in sys.modules:
        from svcluster.flows.temporary_api import TemporaryApi

        _TEMPORARY = TemporaryApi.launch()
        os.environ["PREFECT_API_URL"] = _TEMPORARY.api_url  # also for the processes this one starts
        return _finish(console_level, PrefectTarget(None, _TEMPORARY))
    if not api_url:
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
        # The first start on a machine creates the database (migrations); Prefect's 20 s default
        # is too short for that on a small or busy machine.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return _finish(console_level, PrefectTarget(api_url))


def _finish(console_level: str, target: PrefectTarget) -> PrefectTarget:
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = console_level.upper()
    # Dask's own INFO chatter (workers starting and stopping) is not for the user.
    os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")
    silence_prefect_notices()
    if "prefect" in sys.modules:  # imported already: apply the console level to the live handlers
        _apply_console_level(console_level.upper())
    return target


def is_temporary_api() -> bool:
    """Whether the flows report to a temporary API of this process (not a shared server)."""
    return _TEMPORARY is not None or not os.environ.get("PREFECT_API_URL")


def silence_prefect_notices() -> None:
    """Filter the temporary server's announcements, the thread-timeout notice and the per-run
    crash notice of a Ctrl-C out of Prefect's loggers (idempotent; the flow modules call it on
    import)."""
    logger = logging.getLogger("prefect")
    if _NOISE_FILTER not in logger.filters:
        logger.addFilter(_NOISE_FILTER)
    task_runs = logging.getLogger("prefect.task_runs")
    if _TIMEOUT_FILTER not in task_runs.filters:
        task_runs.addFilter(_TIMEOUT_FILTER)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        runs = logging.getLogger(name)
        if _INTERRUPT_FILTER not in runs.filters:
            runs.addFilter(_INTERRUPT_FILTER)
    logging.getLogger("distributed").setLevel(logging.WARNING)


def _console_handlers() -> list[logging.Handler]:
    """Prefect's console handlers (configured when Prefect is imported)."""
    try:
        from prefect.logging.handlers import PrefectConsoleHandler
    except ImportError:  # pragma: no cover - prefect is a dependency
        return []
    return [
        handler
        for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, PrefectConsoleHandler)
    ]


def _apply_console_level(level: str) -> None:
    for handler in _console_handlers():
        handler.setLevel(level)
    if _QUIET_FAILURES:
        _filter_console_failures()


def _filter_console_failures() -> None:
    for handler in _console_handlers():
        if _FAILURE_FILTER not in handler.filters:
            handler.addFilter(_FAILURE_FILTER)


def current_api_url() -> str:
    """The API the current flow run reports to (the ephemeral server's address included)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)
