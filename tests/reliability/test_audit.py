"""The lake audit the other reliability tests rely on finds each kind of damage (so a clean
audit means something)."""

from __future__ import annotations

import pyarrow as pa

from svcluster.tasks.lake.schemas import TABLES
from svcluster.tasks.lake.store import conform, open_lake
from tests.reliability.audit import audit_lake


def test_audit_finds_torn_files_duplicates_strays_and_orphans(tmp_path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    assert audit_lake(lake).problems == []
    rows = pa.table({"location_id": ["a", "b"], "heading": [0, 0], "status": ["ok", "ok"],
                     "path": ["blobs/aa/x.jpg", "blobs/bb/missing.jpg"]})
    lake.append("images", rows)
    lake.write_bytes("blobs/aa/x.jpg", b"jpeg")
    lake.write_bytes("blobs/cc/orphan.jpg", b"jpeg")
    found = "\n".join(audit_lake(lake).problems)
    assert "orphaned blob" in found and "blobs/cc/orphan.jpg" in found
    assert "without its blob" in found and "missing.jpg" in found

    dup = pa.table({"location_id": ["a", "a"], "heading": [90, 90], "status": ["ok", "failed"]})
    # the same key twice with the same written_at, appended with no merge (lake.append cannot do it)
    lake.delta.insert(TABLES["images"], conform(TABLES["images"], dup))
    found = "\n".join(audit_lake(lake).problems)
    assert "same written_at" in found

    lake.write_bytes("tables/maps/part-torn.parquet", b"PAR1 half a file")
    lake.write_bytes("tables/maps/.part.tmp", b"")
    found = "\n".join(audit_lake(lake).problems)
    assert "unreadable table file tables/maps/part-torn.parquet" in found
    assert "stray file where readers glob: tables/maps/.part.tmp" in found
