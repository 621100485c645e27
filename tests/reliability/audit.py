"""What a healthy lake looks like, checked from the outside (the tests' own definition).

``audit_lake`` reads the lake's files and views the way a user would and lists every broken
promise: a table file that is not readable Parquet (half-written), a stray non-Parquet file
where readers glob, duplicate rows in a view, two rows with the same key *and* the same
``written_at`` in the raw files (a real duplicate, not a superseded row), a blob that no image
row references (orphan), an ``ok`` image whose blob is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.parquet as pq

from svcluster.tasks.lake.store import Lake
from svcluster.tasks.lake.schemas import TABLES

# The view each table is read through, and the key the view promises to keep unique.
VIEW_KEYS: dict[str, tuple[str, ...]] = {
    "maps": ("map",),
    "locations": ("map", "location_id"),
    "images": ("location_id", "heading"),
    "embeddings": ("location_id", "model", "pooling", "precision"),
    "embedding_views": ("location_id", "heading", "model", "precision"),
    "cluster_runs": ("run_id",),
    "cluster_assignments": ("run_id", "location_id"),  # the lists of cluster_runs' rows
}


@dataclass
class Audit:
    """The outcome of one audit: counts of what was looked at, and every problem found."""

    table_files: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    raw_rows: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.problems, "lake audit failed:\n  " + "\n  ".join(self.problems)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def audit_lake(lake: Lake) -> Audit:
    """Check every promise of the lake's layout; never raises for a broken lake, reports it."""
    audit = Audit()
    for table in TABLES:
        for rel in lake.list(f"tables/{table}"):
            if "/_delta_log/" in rel:  # the Delta table's commit log (JSON, checkpoints)
                continue
            if not rel.endswith(".parquet"):
                audit.problems.append(f"stray file where readers glob: {rel}")
                continue
            audit.table_files += 1
            try:
                with lake.fs.open(lake.path(rel), "rb") as fh:
                    pq.read_metadata(fh)
            except Exception as exc:  # a torn file is exactly what we look for
                audit.problems.append(f"unreadable table file {rel}: {exc}")
    if audit.problems:
        return audit
    with lake.connect() as con:
        for table, key in VIEW_KEYS.items():
            keys = ", ".join(_quote(k) for k in key)
            audit.rows[table] = con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            dup = con.sql(f"SELECT {keys}, count(*) n FROM {table} GROUP BY ALL HAVING n > 1 LIMIT 3").fetchall()
            if dup:
                audit.problems.append(f"duplicate rows in view {table}: {dup}")
            if table not in TABLES:  # a view over another table's lists (cluster_assignments)
                continue
            # the raw rows: the Parquet files of the table's current Delta version
            glob = [lake.url(p) for p in lake.table_files(table)] or [lake.url(f"tables/{table}/_svcluster_schema-*.parquet")]
            raw = con.sql(
                f"SELECT {keys}, written_at, count(*) n FROM read_parquet(?, union_by_name=true) GROUP BY ALL HAVING n > 1 LIMIT 3",
                params=[glob],
            ).fetchall()
            audit.raw_rows[table] = con.sql("SELECT count(*) FROM read_parquet(?, union_by_name=true)", params=[glob]).fetchall()[0][0]
            if raw:
                audit.problems.append(f"duplicate keys with the same written_at in raw {table}: {raw}")
        referenced = {r[0] for r in con.sql("SELECT path FROM images WHERE path IS NOT NULL").fetchall()}
        ok_paths = {r[0] for r in con.sql("SELECT path FROM images WHERE status = 'ok'").fetchall()}
    blobs = set(lake.list("blobs"))
    audit.blobs = len(blobs)
    for orphan in sorted(blobs - referenced)[:5]:
        audit.problems.append(f"orphaned blob (no image row references it): {orphan}")
    for missing in sorted(str(p) for p in ok_paths if p is None or p not in blobs)[:5]:
        audit.problems.append(f"image row 'ok' without its blob: {missing}")
    return audit


def files_outside(root, allowed) -> list[str]:
    """Files under ``root`` that are not under one of the ``allowed`` folders/files."""
    from pathlib import Path

    allowed = [Path(a).resolve() for a in allowed]
    out = []
    for p in Path(root).rglob("*"):
        if p.is_dir():
            continue
        rp = p.resolve()
        if not any(rp == a or a in rp.parents for a in allowed):
            out.append(str(p))
    return out
