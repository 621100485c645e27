"""What a flow run leaves in Prefect's UI: a live progress artifact per long step, a table of
status counts, and a markdown summary of each cluster run.

``FlowProgress`` is the Prefect implementation of ``svcluster.tasks.progress.Progress``: it keeps one
progress artifact up to date (throttled, so a thousand small advances cost a handful of API
calls) and also drives the console bar of the CLI that started the flow in this process, if
any (``console_progress``). Outside a flow run it only drives the console bar.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from svcluster.tasks.progress import NullProgress, Progress

ConsoleFactory = Callable[[str], Progress]
_console_factory: ConsoleFactory | None = None
_console_lock = threading.Lock()


@contextmanager
def console_progress(factory: ConsoleFactory) -> Iterator[None]:
    """While inside, flows started from this process also draw progress with ``factory(unit)``."""
    global _console_factory
    with _console_lock:
        previous, _console_factory = _console_factory, factory
    try:
        yield
    finally:
        with _console_lock:
            _console_factory = previous


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) made from free text."""
    text = "-".join(parts).lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")[:100] or "svcluster"


def in_flow_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class FlowProgress:
    """Progress shown as a Prefect progress artifact (and a console bar when the CLI asked)."""

    def __init__(self, key: str, unit: str = "it", min_interval: float = 1.0):
        self.key = key
        self.unit = unit
        self.min_interval = min_interval
        self.total = 0
        self.done = 0
        self.description = ""
        self._artifact_id = None
        self._last_sent = 0.0
        factory = _console_factory
        self._console: Progress = factory(unit) if factory is not None else NullProgress()
        self._artifacts = in_flow_run()

    def start(self, total: int, description: str) -> None:
        self.total, self.done, self.description = int(total), 0, description
        self._console.start(total, description)
        if self._artifacts:
            from prefect.artifacts import create_progress_artifact

            self._artifact_id = create_progress_artifact(
                0.0 if total else 100.0, key=self.key, description=f"{description}: 0 of {total} {self.unit}"
            )
            self._last_sent = time.monotonic()

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        self._console.advance(amount)
        if self._artifact_id is not None and time.monotonic() - self._last_sent >= self.min_interval:
            self._send()

    def finish(self) -> None:
        self._console.finish()
        if self._artifact_id is not None:
            self._send()

    @property
    def percent(self) -> float:
        return 100.0 if not self.total else min(100.0, 100.0 * self.done / self.total)

    def _send(self) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(
            self._artifact_id, self.percent, description=f"{self.description}: {self.done} of {self.total} {self.unit}"
        )
        self._last_sent = time.monotonic()


def table_artifact(key: str, rows: Sequence[dict[str, Any]], description: str) -> None:
    """A table artifact (rows of equal keys) on the current flow run; nothing outside a run."""
    if not in_flow_run() or not rows:
        return
    from prefect.artifacts import create_table_artifact

    create_table_artifact([dict(r) for r in rows], key=key, description=description)


def markdown_artifact(key: str, markdown: str, description: str) -> None:
    """A markdown artifact on the current flow run; nothing outside a run."""
    if not in_flow_run():
        return
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown, key=key, description=description)
