"""Ingest: a validated map file into the lake's ``maps`` and ``locations`` tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.ingest.locations import ParsedMap, read_map_file


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did: how many locations the map holds now and what was skipped."""

    map: str
    source_file: str
    format: str
    dialect: str
    locations: int  # objects, every one kept
    places: int  # what is fetched, embedded and clustered: one per panorama or coordinates
    duplicates: int  # exact copies of an earlier object (kept)
    duplicate_examples: list[tuple[int, int]]
    shared_place: int  # other objects on an earlier object's place (kept)
    shared_place_examples: list[tuple[int, int]]
    unchanged: bool


def ingest_map(lake: Lake, path: str | Path, name: str | None = None) -> IngestResult:
    """Parse ``path`` (nothing is written if it is invalid) and make it the map's locations.

    Re-ingesting the same file changes nothing; a changed file under the same map name
    replaces the map's locations in one atomic file write.
    """
    parsed = read_map_file(path, name)
    previous = lake.query(load_sql("ingest/map_checksum"), {"map": parsed.name})
    unchanged = previous.num_rows == 1 and previous.to_pylist()[0] == {"file_sha256": parsed.file_sha256, "complete": True}
    if not unchanged:
        write_map(lake, parsed)
    return IngestResult(
        map=parsed.name,
        source_file=parsed.source_file,
        format=parsed.format,
        dialect=parsed.dialect,
        locations=parsed.rows.num_rows,
        places=parsed.places,
        duplicates=len(parsed.duplicates),
        duplicate_examples=parsed.duplicates[:5],
        shared_place=len(parsed.shared),
        shared_place_examples=parsed.shared[:5],
        unchanged=unchanged,
    )


def write_map(lake: Lake, parsed: ParsedMap) -> None:
    """Locations first, then the map's record: a crash between leaves the new locations in place
    and the old record, so the next ingest (seeing a different checksum) writes it again."""
    lake.replace("locations", parsed.name, parsed.rows)
    record = {
        "map": [parsed.name],
        "source_file": [Path(parsed.source_file).name],
        "format": [parsed.format],
        "dialect": [parsed.dialect],
        "envelope": [json.dumps(parsed.envelope, ensure_ascii=False) if parsed.envelope is not None else None],
        "location_count": [parsed.rows.num_rows],
        "duplicates": [len(parsed.duplicates)],
        "place_count": [parsed.places],
        "shared_place_objects": [len(parsed.shared)],
        "file_sha256": [parsed.file_sha256],
    }
    lake.replace("maps", parsed.name, pa.table(record))
