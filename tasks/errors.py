"""The exceptions svcluster raises on purpose: each carries a one-line message for the user."""

from __future__ import annotations


class SvclusterError(Exception):
    """An error the CLI prints as one readable line (no traceback unless --debug)."""


class MapFormatError(SvclusterError):
    """A map file that cannot be read: the message names the file, the item and the field."""

    def __init__(self, file: str, message: str, item: int | None = None, field: str | None = None):
        self.file, self.item, self.field = file, item, field
        where = [file]
        if item is not None:
            where.append(f"item {item}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}")


class LakeError(SvclusterError):
    """Storage could not be read or written; nothing half-written is visible to readers."""


class NoLakeError(LakeError):
    """A command that only reads was pointed at a place that holds no lake (a mistyped --lake):
    it is not created there."""


class ReadOnlyLakeError(LakeError):
    """A command that must write was given a lake it cannot write."""


class NotFoundError(SvclusterError):
    """A map, run or model the user named does not exist."""
