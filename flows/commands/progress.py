"""The CLI's progress bar: a rich bar with rate and ETA on stderr (hidden with --json)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress as RichProgress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from svcluster.flows.cli import stderr


class RichBar:
    """``svcluster.tasks.progress.Progress`` drawn as a rich bar on stderr; ``unit`` labels the rate."""

    def __init__(self, unit: str = "it", enabled: bool = True):
        self.unit = unit
        self.enabled = enabled and stderr.is_terminal
        self._bar: RichProgress | None = None
        self._task = None

    def start(self, total: int, description: str) -> None:
        if not self.enabled:
            return
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=stderr,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, rate="")

    def advance(self, amount: int = 1) -> None:
        if self._bar is None:
            return
        self._bar.advance(self._task, amount)
        speed = self._bar.tasks[0].speed
        self._bar.update(self._task, rate=f"{speed:,.1f} {self.unit}/s" if speed else "")

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
