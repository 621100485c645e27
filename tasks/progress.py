"""Progress of long steps, reported the same way to a rich bar (CLI) or a Prefect artifact.

A step takes a ``Progress`` and calls ``start`` once with the amount of work, ``advance`` as
work completes, and ``finish`` at the end. ``NullProgress`` is the default: nobody watching.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, description: str) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that nobody watches."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass
