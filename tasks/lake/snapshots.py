"""A table's latest version and files, remembered on this machine for S3 lakes.

Opening a Delta table reads its log: on S3 a listing, the last checkpoint (a ranged read per
column it holds) and every commit since, some 15 requests a table. A process that only reads (a
``svcluster sql``, a report) then asks again what an earlier process already knew. Commits are
numbered files created once each (delta-rs commits with a conditional PUT), so a remembered
version ``v`` is still the latest exactly when ``_delta_log/<v+1>.json`` does not exist; and
``<v>.json`` holding what it held (its SHA-256 as remembered) shows it is still the same table
(not one deleted and made again at that path: a commit names its time and the files it added).
Two small GETs (``s3_objects.py``) instead of the log; anything else (a newer commit, a missing
or unreadable entry, any error) opens the table as before.

Entries live in ``<machine cache>/delta-snapshots/``, one JSON file per table URI and endpoint,
holding the version, its commit's SHA-256, the data file URIs and their sizes and times (as the
log records them): nothing that is not in the lake already, no credential.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from svcluster.tasks.files import atomic_write
from svcluster.tasks.files import cache_dir
from svcluster.tasks.lake.s3_objects import S3Objects
from svcluster.tasks.lake.storage_errors import STORAGE_ERRORS

FileDetails = Mapping[str, tuple[int, int]]  # a data file's URI: (its size in bytes, its time in ms)


COMMIT_BYTES = 16 * 1024 * 1024  # what is read of a commit to know it again (the start of a longer one)


def _commit_path(table_uri: str, version: int) -> str:
    """The ``bucket/key`` of one commit file of an ``s3://bucket/...`` table."""
    return f"{table_uri.split('://', 1)[1].rstrip('/')}/_delta_log/{version:020d}.json"


class Snapshots:
    """The remembered latest state of each table of one S3 lake (see the module docstring)."""

    def __init__(self, objects: S3Objects, scope: str, folder: Path | None = None):
        self.objects = objects
        self.scope = scope  # the endpoint: one bucket name on two servers are two lakes
        self.folder = folder or cache_dir() / "delta-snapshots"

    def _entry_path(self, table_uri: str) -> Path:
        digest = hashlib.sha256(f"{self.scope}\n{table_uri}".encode("utf-8")).hexdigest()[:32]
        return self.folder / f"{digest}.json"

    def _digest(self, table_uri: str, version: int) -> str | None:
        """The SHA-256 of commit ``version``, or None when there is no such commit (one GET)."""
        data = self.objects.read(_commit_path(table_uri, version), COMMIT_BYTES)
        return None if data is None else hashlib.sha256(data).hexdigest()

    def load(self, table_uri: str) -> tuple[int, tuple[str, ...], FileDetails] | None:
        """(version, data file URIs, their details) of the table if what is remembered is still
        its latest."""
        try:
            entry = json.loads(self._entry_path(table_uri).read_text())
            if entry.get("table") != table_uri:
                return None
            version, digest, files = int(entry["version"]), entry["sha256"], tuple(entry["files"])
            details = {f: (int(size), int(modified)) for f, (size, modified) in zip(files, entry["details"], strict=True)}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            if self._digest(table_uri, version) != digest or self.objects.exists(_commit_path(table_uri, version + 1)):
                return None
        except STORAGE_ERRORS:  # an unreachable store: the full open reports it
            return None
        return version, files, details

    def save(self, table_uri: str, version: int, files: tuple[str, ...], details: FileDetails) -> None:
        """Remember the table at ``version`` (best effort: the cache only saves requests)."""
        try:
            digest = self._digest(table_uri, version)
            if digest is None:
                return
            with atomic_write(self._entry_path(table_uri), text=True) as fh:
                json.dump({"table": table_uri, "version": version, "sha256": digest, "files": list(files),
                           "details": [list(details[f]) for f in files]}, fh)
        except (STORAGE_ERRORS, KeyError):  # (KeyError: a file whose details the log lacked)
            return
