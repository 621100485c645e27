"""Work in batches: a list cut into consecutive pieces (the fetch and embed flows' batches, the
embed step's location batches)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive batches of ``size`` (the last may be shorter), order kept; a size
    below 1 counts as 1."""
    size = max(1, size)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
