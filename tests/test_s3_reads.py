"""A process that reads an S3 lake asks few requests when an earlier process on this machine read
it already (the tables' latest versions and the immutable files remembered in the machine
cache), and never answers from what is stale: a new commit, or a lake deleted and made again at
the same place. Real processes against a moto server on 127.0.0.1; the requests are counted
as the server logs them."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import s3fs

from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.s3_reads import SMALL_FILE_BYTES
from svcluster.tasks.lake.store import open_lake
from tests.fixtures.maps import map_making_doc, write_map
from tests.fixtures.s3_requests import Requests

ROOT = Path(__file__).resolve().parents[1]
QUERY = "SELECT map, count(*) AS n FROM locations GROUP BY map ORDER BY map"
READER = "import json, sys; from svcluster.tasks.lake.store import open_lake; " \
         "print(json.dumps(open_lake(sys.argv[1], mode='read').query(sys.argv[2]).to_pylist()))"


def read_in_a_new_process(uri: str, cache: Path, query: str = QUERY) -> tuple[list[dict], list[str]]:
    env = {**os.environ, "SVCLUSTER_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    with Requests() as seen:
        proc = subprocess.run([sys.executable, "-c", READER, uri, query], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), [line for line in seen.lines if '"' in line]


def random_image_rows(rng: random.Random, n: int, heading: int) -> pa.Table:
    """``images`` rows of ``n`` places with random ids, paths and hashes (incompressible, so the
    file's size follows ``n``)."""
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(n)]
    return pa.table({
        "location_id": ids, "heading": pa.array([heading] * n, pa.int32()), "status": ["ok"] * n,
        "path": [f"blobs/{i[:2]}/{i}-{rng.getrandbits(128):032x}.jpg" for i in ids],
        "sha256": [f"{rng.getrandbits(256):064x}" for _ in ids], "source": ["api"] * n,
    })


def test_a_second_reader_asks_a_few_heads_and_still_sees_every_commit(s3_lake, tmp_path, chile_map) -> None:
    cache = tmp_path / "machine-cache"
    ingest_map(s3_lake, chile_map)
    first, cold = read_in_a_new_process(s3_lake.uri, cache)
    again, warm = read_in_a_new_process(s3_lake.uri, cache)
    assert again == first == [{"map": "chile", "n": 1000}]
    # the cold reader opened the tables' logs and read their data files; the warm one asked if
    # the remembered versions are still the latest (HEADs) and read nothing else
    assert any("part-" in line for line in cold) and any("_delta_log/?" in line or "list-type" in line for line in cold)
    assert not any("part-" in line for line in warm), warm
    assert len(warm) <= 8 and len(warm) < len(cold) / 2, warm
    assert list((cache / "delta-snapshots").iterdir()) and any((cache / "s3-files").rglob("*.tail"))

    ingest_map(s3_lake, write_map(tmp_path / "mma.json", map_making_doc()))  # a new commit
    after, _ = read_in_a_new_process(s3_lake.uri, cache)
    assert after == [{"map": "chile", "n": 1000}, {"map": "mma", "n": len(map_making_doc()["customCoordinates"])}]


def test_a_reader_never_imports_s3fs(s3_lake, tmp_path, chile_map) -> None:
    """Importing s3fs costs a new process about half a second (docs/lake.md): a reader learns its
    data files' sizes from the tables' logs and reads them through delta-rs, the first on this
    machine as a later one (which reads most from the machine cache), so neither imports s3fs."""
    cache = tmp_path / "machine-cache"
    ingest_map(s3_lake, chile_map)
    probe = "import sys; " + READER + "; print('s3fs' in sys.modules)"
    runs = []
    for _ in range(2):
        env = {**os.environ, "SVCLUSTER_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", probe, s3_lake.uri, QUERY], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows, imported = proc.stdout.strip().splitlines()[-2:]
        runs.append((json.loads(rows), imported))
    assert runs == [([{"map": "chile", "n": 1000}], "False"), ([{"map": "chile", "n": 1000}], "False")]


def test_a_later_reader_of_a_file_over_a_mebibyte_reads_only_its_end_from_the_machine_cache(s3_lake, tmp_path) -> None:
    """A table file larger than what is kept whole (SMALL_FILE_BYTES) but under 2 MiB (a
    compacted ``images`` of a 100,000-place lake is 1.9 MB): DuckDB's own remote-file cache would
    read it whole to plan a count, where the machine cache keeps only its end."""
    rng = random.Random(7)
    n = 12_000
    s3_lake.append("images", random_image_rows(rng, n, heading=0))
    (file,) = s3_lake.table_files("images")
    size = s3fs.S3FileSystem(use_listings_cache=False).info(s3_lake.url(file))["size"]
    assert SMALL_FILE_BYTES < size < 2 * 1024 * 1024, size
    cache, count = tmp_path / "machine-cache", "SELECT count(*) AS n FROM images"
    first, _ = read_in_a_new_process(s3_lake.uri, cache, count)
    again, warm = read_in_a_new_process(s3_lake.uri, cache, count)
    assert first == again == [{"n": n}]
    assert not any("part-" in line for line in warm), warm
    kept = [f.stat().st_size for f in (cache / "s3-files").rglob("*.tail")]
    assert kept and max(kept) < size / 4, kept  # the end of the large file, not all of it


def test_a_lake_deleted_and_made_again_at_the_same_place_is_read_anew(s3_lake, tmp_path, chile_map) -> None:
    cache = tmp_path / "machine-cache"
    ingest_map(s3_lake, chile_map)
    ingest_map(s3_lake, write_map(tmp_path / "mma.json", map_making_doc()))
    before, _ = read_in_a_new_process(s3_lake.uri, cache)
    assert [r["map"] for r in before] == ["chile", "mma"]
    s3fs.S3FileSystem(use_listings_cache=False).rm(s3_lake.uri, recursive=True)
    remade = open_lake(s3_lake.uri)  # the same table versions again, other commits
    ingest_map(remade, write_map(tmp_path / "other.json", map_making_doc()), "other")
    ingest_map(remade, write_map(tmp_path / "other.json", map_making_doc()), "other2")
    now, _ = read_in_a_new_process(s3_lake.uri, cache)
    assert [r["map"] for r in now] == ["other", "other2"]


def test_a_damaged_machine_cache_is_read_around(s3_lake, tmp_path, chile_map) -> None:
    cache = tmp_path / "machine-cache"
    ingest_map(s3_lake, chile_map)
    first, _ = read_in_a_new_process(s3_lake.uri, cache)
    for f in cache.rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00not what was kept")
    again, _ = read_in_a_new_process(s3_lake.uri, cache)
    assert again == first


def test_a_count_over_large_files_reads_their_footers_only(s3_lake, tmp_path) -> None:
    """A file over ``SMALL_FILE_BYTES`` is not kept whole: a later reader's ``count(*)`` is
    answered from the footers in the machine cache, with no GET of a data file (over a union
    with a typed empty select DuckDB read a column of every file)."""
    import numpy as np
    import pyarrow as pa

    from svcluster.tasks.lake.s3_reads import SMALL_FILE_BYTES

    n, dim = 700, 768
    vectors = np.random.default_rng(0).random((n, dim), dtype=np.float32)
    s3_lake.append("embeddings", pa.table({
        "location_id": [f"l{i}" for i in range(n)], "model": ["m"] * n, "pooling": ["mean"] * n,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)}))
    assert [s3_lake.fs.size(s3_lake.path(f)) for f in s3_lake.table_files("embeddings")][0] > SMALL_FILE_BYTES
    cache, count = tmp_path / "machine-cache", "SELECT count(*) AS n FROM embeddings"
    first, _ = read_in_a_new_process(s3_lake.uri, cache, count)
    again, warm = read_in_a_new_process(s3_lake.uri, cache, count)
    assert first == again == [{"n": n}]
    assert not any("part-" in line for line in warm), warm
    # its other bytes are read in ranges (ahead of DuckDB's reads), each value where it was written
    (sums,), _ = read_in_a_new_process(s3_lake.uri, cache, "SELECT sum(vector[1]) AS a, sum(vector[768]) AS z FROM embeddings")
    assert np.allclose([sums["a"], sums["z"]], vectors[:, [0, -1]].sum(axis=0, dtype=np.float64), rtol=1e-5)


FILE_COUNT = "import sys, duckdb; from svcluster.tasks.lake.s3_reads import table_reader_fs; " \
             "from svcluster.tasks.lake.s3_objects import S3Objects; " \
             "from svcluster.tasks.lake.store import delta_storage_options; db = duckdb.connect(); " \
             "db.register_filesystem(table_reader_fs({'use_listings_cache': False}, {}, " \
             "S3Objects(delta_storage_options(sys.argv[1], {})))); " \
             "print(db.sql(f\"SELECT count(*) FROM read_parquet('{sys.argv[1]}')\").fetchall()[0][0])"


def test_what_duckdb_reads_of_a_large_files_end_is_kept_whole(s3_lake, tmp_path) -> None:
    """DuckDB 2.0.1 opens a Parquet file by reading about 1/512 of it from its end (16 KiB at
    least; the footer is inside), so of a file over 32 MiB more than ``TAIL_GUESS``: the machine
    cache keeps all it read there, so a later process counts the file's rows with no GET of it
    (a compacted 100,000-place ``embeddings`` table has such files)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from svcluster.tasks.lake.s3_reads import TAIL_GUESS, footer_length

    n = 6_000_000
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": np.random.default_rng(1).integers(0, 2**62, n)}), sink, compression="none", use_dictionary=False)
    data = sink.getvalue().to_pybytes()
    key = s3_lake.path("tables/images/part-00000-large.parquet")
    s3_lake.fs.pipe(key, data)
    assert len(data) // 512 > TAIL_GUESS > footer_length(data)
    env = {**os.environ, "SVCLUSTER_CACHE": str(tmp_path / "machine-cache"), "PYTHONPATH": str(ROOT)}
    counts, seen_after = [], []
    for _ in range(2):
        with Requests() as seen:
            proc = subprocess.run([sys.executable, "-c", FILE_COUNT, f"s3://{key}"], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts.append(int(proc.stdout))
        seen_after.append([line for line in seen.lines if "part-00000-large" in line])
    assert counts == [n, n]
    assert seen_after[0] and not seen_after[1], seen_after


COLUMN_SUM = "import sys, duckdb; from svcluster.tasks.lake.s3_reads import table_reader_fs; " \
             "from svcluster.tasks.lake.s3_objects import S3Objects; " \
             "from svcluster.tasks.lake.store import delta_storage_options; db = duckdb.connect(); " \
             "fs = table_reader_fs({'use_listings_cache': False}, {}, S3Objects(delta_storage_options(sys.argv[1], {}))); " \
             "db.register_filesystem(fs); " \
             "print(db.sql(f\"SELECT sum(x) FROM read_parquet('{sys.argv[1]}')\").fetchall()[0][0], fs.blocks_total)"


def test_a_read_ahead_stops_at_the_end_of_the_column_chunk_read(s3_lake, tmp_path) -> None:
    """A query of a file's small column reads that column's chunk, not the large column written
    after it: a read of a large file reads ahead of DuckDB (up to ``READ_AHEAD``), but not into
    another column chunk (the footer says where each ends)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 400_000
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2**40, n)
    v = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(4 * n)), 4)  # 4x the bytes of x
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": x, "v": v}), sink, compression="none", use_dictionary=False)
    data = sink.getvalue().to_pybytes()
    x_chunk = pq.read_metadata(pa.BufferReader(data)).row_group(0).column(0).total_compressed_size
    key = s3_lake.path("tables/embeddings/part-00000-two-columns.parquet")
    s3_lake.fs.pipe(key, data)
    env = {**os.environ, "SVCLUSTER_CACHE": str(tmp_path / "machine-cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", COLUMN_SUM, f"s3://{key}"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    total, read_ahead = map(int, proc.stdout.split())
    assert total == int(x.sum())
    # x's chunk (3.2 MB; DuckDB's two threads may each ask a part, with a few KiB past its end)
    assert x_chunk <= read_ahead < 1.5 * x_chunk < len(data) / 3, (read_ahead, x_chunk, len(data))


def test_threads_reading_the_same_bytes_of_a_file_at_once_read_them_once(s3_lake) -> None:
    """DuckDB opens a file once per thread, and its threads may ask the same bytes at once: a
    read under way serves every thread that wants bytes inside it (one GET), while a read of
    other bytes of the file goes on beside it (here the first read waits until the other has
    begun, and the other begins once the first is under way); each thread gets the file's own
    bytes."""
    import threading

    from svcluster.tasks.lake.s3_objects import S3Objects
    from svcluster.tasks.lake.s3_reads import table_reader_fs
    from svcluster.tasks.lake.store import delta_storage_options

    data = random.Random(3).randbytes(8 << 20)
    key = s3_lake.path("tables/embeddings/part-00000-shared-reads.parquet")
    s3_lake.fs.pipe(key, data)
    first_begun, other_begun = threading.Event(), threading.Event()

    class FirstWaitsForOther(S3Objects):
        def read_range(self, key: str, start: int, end: int, size: int) -> bytes:
            if start == 1 << 20:
                first_begun.set()
                assert other_begun.wait(30), "a read of other bytes of the file waited for this one"
            else:
                other_begun.set()
            return super().read_range(key, start, end, size)

    fs = table_reader_fs({"use_listings_cache": False}, {}, FirstWaitsForOther(delta_storage_options(s3_lake.uri, {})))
    asks = [(1 << 20, (1 << 20) + 4096, 3 << 20)] * 6 + [(5 << 20, 6 << 20, 6 << 20)] * 2
    got: list[bytes | None] = [None] * len(asks)
    start_together = threading.Barrier(6)

    def read(i: int) -> None:
        start, end, stop = asks[i]
        if start == 1 << 20:
            start_together.wait()
        else:  # once the first read is under way
            assert first_begun.wait(30)
        block_start, block = fs.block(key, start, end, stop, len(data))
        got[i] = block[start - block_start : end - block_start]

    with Requests() as seen:
        threads = [threading.Thread(target=read, args=(i,)) for i in range(len(asks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert got == [data[start:end] for start, end, _ in asks]
    gets = [line for line in seen.lines if "part-00000-shared-reads" in line and "GET /" in line]
    assert len(gets) == 2, gets  # one for the six threads asking the same bytes, one for the other two
    assert not fs.reading


ENDS_AT_ONCE = """
import json, sys, threading, time
from collections import Counter
from svcluster.tasks.lake.s3_objects import S3Objects
from svcluster.tasks.lake.store import open_lake

class Watched(S3Objects):  # the real ranged GETs, watched: how many at once, of which files
    now = most = 0
    files = Counter()
    lock = threading.Lock()

    def read_range(self, key, start, end, size):
        with self.lock:
            if sys.argv[2:] == ["fail-first"] and not Watched.files:
                Watched.files["failed"] += 1
                raise OSError("the first read fails")
            Watched.now += 1
            Watched.most = max(Watched.most, Watched.now)
            Watched.files[key.rsplit("/", 1)[-1]] += 1
        try:
            time.sleep(0.05)  # (so reads asked at once overlap)
            return super().read_range(key, start, end, size)
        finally:
            with self.lock:
                Watched.now -= 1

lake = open_lake(sys.argv[1], mode="read")
lake.delta.objects = Watched(lake.delta.options)
n = lake.query("SELECT count(*) AS n FROM images").to_pylist()[0]["n"]
print(json.dumps({"n": n, "most": Watched.most, "files": Watched.files}))
"""


def test_the_first_reader_reads_the_ends_of_a_tables_files_at_once(s3_lake, tmp_path) -> None:
    """DuckDB reads the footers of a view's files one after another as it binds the view (and
    two at a time as it counts, one per thread); the first reader on a machine reads the ends of
    a table's files all at once instead (``learn_ends``), and each file's end once."""
    rng = random.Random(11)
    parts = 4
    for _ in range(parts):
        s3_lake.append("images", random_image_rows(rng, 3_000, heading=90))
    files = {f.rsplit("/", 1)[-1] for f in s3_lake.table_files("images")}
    assert len(files) == parts
    env = {**os.environ, "SVCLUSTER_CACHE": str(tmp_path / "machine-cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", ENDS_AT_ONCE, s3_lake.uri], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    assert seen["n"] == parts * 3_000
    assert {f: seen["files"].get(f) for f in files} == {f: 1 for f in files}, seen["files"]
    assert seen["most"] == parts, seen  # all at once (DuckDB alone asks 2 at a time: its threads)

    # a read that fails there is read again by DuckDB, and the answer is the same
    proc = subprocess.run([sys.executable, "-c", ENDS_AT_ONCE, s3_lake.uri, "fail-first"],
                          env={**env, "SVCLUSTER_CACHE": str(tmp_path / "another-cache")}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    assert seen["n"] == parts * 3_000 and seen["files"]["failed"] == 1, seen
    assert {f: seen["files"].get(f) for f in files} == {f: 1 for f in files}, seen  # the failed one's by DuckDB
