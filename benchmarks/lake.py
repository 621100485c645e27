"""Benchmark: the lake (Delta tables) at scale, on a local folder and on a moto S3 server.

For N generated locations (default 100,000) it builds a lake as the steps do — the map
ingested, ``images`` rows written batch by batch (each batch one merge commit, 4 views a place),
``embeddings`` batch by batch (D floats), a cluster run with its assignments — and prints, for
the local lake and then the S3 one:

1. a step's per-batch cost at the start and at the end of the build (the keyed write of one
   batch of ``images`` rows, and of ``embeddings`` rows): the median of the first and last 5
   batches, and their mean, which includes the compactions the writes do (a table passing 32
   files is compacted): flat means the cost does not grow with the lake (ratio end / start);
2. ``svcluster sql`` latency for ``count(*)`` over each table, in a new process (the median of
   ``REPEATS``; the lake opened for reading, its views bound, the query run; the interpreter's
   start and imports not counted, but an ``import s3fs`` a reader did would be: how many
   readers imported it is printed, with what the import costs);
   on S3 twice: as the first reader on this machine (an empty machine cache), then as a later
   one (``tasks/lake/snapshots.py``, ``tasks/lake/s3_reads.py``);
3. loading the map's vectors (``load_vectors`` without the matrix cache, then with it) against
   ``np.load`` of the same matrix (the cache's reason to exist: target within 2x);
4. the report's data gathering (``gather_report_data``-like: the run's points and sizes query);
5. files per table at the end.

The S3 server is moto in its own process on 127.0.0.1 (as a real endpoint is not in the
reader's process). S3 against local (target: within 3x) is printed last, then what moto takes
for a 1 MiB ranged GET of a small and of a large object. Usage:
    python benchmarks/lake.py [--n 100000] [--dim 768] [--quick] [--skip-s3]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svcluster.tasks.cluster.runs import commit_run  # noqa: E402
from svcluster.tasks.cluster.vectors import load_vectors  # noqa: E402
from svcluster.tasks.demo.sample import generate_locations, to_format  # noqa: E402
from svcluster.tasks.ingest.step import ingest_map  # noqa: E402
from svcluster.tasks.lake.schemas import TABLES  # noqa: E402
from svcluster.tasks.lake.store import Lake, open_lake  # noqa: E402

BATCH = 2_000  # places per batch, as fetch and embed write them
MODEL = "baseline"
EDGE = 5  # batches at each end of the build whose cost is compared
REPEATS = 3  # new processes per sql figure (the median is printed)


def ends(times: list[float]) -> dict[str, float]:
    """Median and mean cost of the first and the last ``EDGE`` batches."""
    first, last = times[:EDGE], times[-EDGE:]
    return {"first": float(np.median(first)), "last": float(np.median(last)),
            "first_mean": float(np.mean(first)), "last_mean": float(np.mean(last))}


def build(lake: Lake, n: int, work: Path, dim: int) -> dict[str, object]:
    """The lake of ``n`` places; returns the batches' write times per table, and the run."""
    import json

    map_file = work / "bench.json"
    map_file.write_text(json.dumps(to_format(generate_locations(n, seed=5), "geoguessr")))
    ingest_map(lake, map_file, "bench")
    ids = lake.query("SELECT location_id FROM places WHERE map = 'bench' ORDER BY position").column(0).to_pylist()
    times = []
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        rows = pa.table({
            "location_id": [i for i in chunk for _ in range(4)], "heading": pa.array([h for _ in chunk for h in (0, 90, 180, 270)], pa.int32()),
            "status": ["ok"] * (4 * len(chunk)), "path": [f"blobs/00/{i}-{h}.jpg" for i in chunk for h in (0, 90, 180, 270)],
            "source": ["api"] * (4 * len(chunk)),
        })
        t0 = time.perf_counter()
        lake.append("images", rows)
        times.append(time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    vector_times = []
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        vec = rng.standard_normal((len(chunk), dim), dtype=np.float32)
        rows = pa.table({
            "location_id": chunk, "model": [MODEL] * len(chunk), "pooling": ["mean"] * len(chunk), "precision": ["fp32"] * len(chunk),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim), "dim": pa.array([dim] * len(chunk), pa.int32()),
            "view_count": pa.array([4] * len(chunk), pa.int32()),
        })
        t0 = time.perf_counter()
        lake.append("embeddings", rows)
        vector_times.append(time.perf_counter() - t0)
    run_id = uuid.uuid4().hex[:16]
    commit_run(lake, {"run_id": run_id, "map": "bench", "model": MODEL, "k": 10},
               pa.table({"location_id": ids, "cluster": pa.array(rng.integers(0, 10, len(ids)), pa.int32()),
                         "distance": pa.array(rng.random(len(ids)), pa.float32())}))
    return {"images": ends(times), "embeddings": ends(vector_times), "run": run_id}


FRESH_QUERY = """
import sys, time
from svcluster.tasks.lake.store import open_lake
t0 = time.perf_counter()
lake = open_lake(sys.argv[1], mode="read")
lake.query_script(sys.argv[2])
print(time.perf_counter() - t0, "s3fs" in sys.modules)
"""


IMPORTED_S3FS: list[str] = []  # the queries after which a reader's process had imported s3fs


def fresh_process_query(uri: str, sql: str, cache: Path) -> float:
    """Seconds ``svcluster sql`` takes for ``sql`` in a new process (the lake opened, its views
    bound, the query run; the interpreter's start and imports not counted)."""
    env = {**os.environ, "SVCLUSTER_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", FRESH_QUERY, uri, sql], env=env, capture_output=True, text=True, check=True)
    seconds, imported = out.stdout.strip().splitlines()[-1].split()
    if imported == "True":
        IMPORTED_S3FS.append(sql)
    return float(seconds)


IMPORT_S3FS = """
import time
t0 = time.perf_counter()
import s3fs
print(time.perf_counter() - t0)
"""


def s3fs_import_s() -> float:
    """Seconds ``import s3fs`` takes in a new process (median of 3): what an S3 reader would pay
    if it needed s3fs (a reader of the views does not: the count of those that did is printed)."""
    runs = [float(subprocess.run([sys.executable, "-c", IMPORT_S3FS], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)]
    return float(np.median(runs))


def measure(lake: Lake, n: int, work: Path, dim: int) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    built = build(lake, n, work, dim)
    out["build_s"] = time.perf_counter() - t0
    for table in ("images", "embeddings"):
        for end, value in built[table].items():
            out[f"batch_{table}_{end}_s"] = value
    out["batch_last_s"] = built["images"]["last"]
    for table in TABLES:
        first, later = [], []
        for _ in range(REPEATS):
            cache = work / f"machine-cache-{uuid.uuid4().hex[:8]}"  # empty: the first reader on this machine
            first.append(fresh_process_query(lake.uri, f"SELECT count(*) FROM {table}", cache))
            if not lake.is_local:  # again, with what the first reader left in the machine cache
                later.append(fresh_process_query(lake.uri, f"SELECT count(*) FROM {table}", cache))
        out[f"sql_{table}_s"] = float(np.median(first))
        if later:
            out[f"sql_warm_{table}_s"] = float(np.median(later))
    t0 = time.perf_counter()
    v = load_vectors(lake, "bench", MODEL, "mean", "fp32", cache=False)
    out["load_vectors_s"] = time.perf_counter() - t0
    buf = io.BytesIO()
    np.save(buf, v.matrix)
    path = work / "m.npy"
    path.write_bytes(buf.getvalue())
    t0 = time.perf_counter()
    np.load(path)
    out["np_load_s"] = time.perf_counter() - t0
    load_vectors(lake, "bench", MODEL, "mean", "fp32")  # writes the cache
    t0 = time.perf_counter()
    load_vectors(lake, "bench", MODEL, "mean", "fp32")
    out["load_vectors_cached_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lake.query("SELECT a.cluster, count(*) n, avg(l.lat) lat FROM cluster_assignments a JOIN places l USING (location_id) "
               "WHERE a.run_id = ? AND l.map = 'bench' GROUP BY ALL", [built["run"]])
    out["report_data_s"] = time.perf_counter() - t0
    for table in ("images", "embeddings", "cluster_runs"):
        out[f"files_{table}"] = len(lake.table_files(table))
    if not lake.is_local:
        out["s3fs_import_s"] = s3fs_import_s()
        out["readers_imported_s3fs"] = float(len(IMPORTED_S3FS))
    return out


def show(name: str, r: dict[str, float]) -> None:
    print(f"\n== {name}")
    print(f"build {r['build_s']:.1f} s; a batch's keyed write, first {EDGE} batches -> last {EDGE}:")
    for table in ("images", "embeddings"):
        b = lambda end: r[f"batch_{table}_{end}_s"] * 1000  # noqa: E731
        print(f"  {table:<11} median {b('first'):5.0f} -> {b('last'):5.0f} ms ({b('last') / b('first'):.2f}x); "
              f"mean with compactions {b('first_mean'):5.0f} -> {b('last_mean'):5.0f} ms ({b('last_mean') / b('first_mean'):.2f}x)")
    for table in TABLES:
        warm = r.get(f"sql_warm_{table}_s")
        again = "" if warm is None else f", {warm * 1000:6.0f} ms with the machine cache"
        print(f"  svcluster sql count(*) {table:<20} {r[f'sql_{table}_s'] * 1000:8.0f} ms{again}")
    print(f"load vectors: {r['load_vectors_s']:.2f} s from the table ({r['load_vectors_s'] / r['np_load_s']:.1f}x np.load), "
          f"{r['load_vectors_cached_s']:.3f} s from the cache ({r['load_vectors_cached_s'] / r['np_load_s']:.1f}x)")
    print(f"report data: {r['report_data_s'] * 1000:.0f} ms; files: " +
          ", ".join(f"{t} {int(r[f'files_{t}'])}" for t in ("images", "embeddings", "cluster_runs")))
    if "s3fs_import_s" in r:
        print(f"import s3fs in a new process: {r['s3fs_import_s'] * 1000:.0f} ms; "
              f"sql readers that imported it: {int(r['readers_imported_s3fs'])}")


def moto_server() -> tuple[subprocess.Popen, str]:
    """A moto S3 server in its own process on a free port of 127.0.0.1, as a real endpoint is
    outside the reader's process (in this one it would compete for the interpreter lock with the
    benchmark's own reads), once it answers; and its URL."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the moto server did not start on {url}") from None
            time.sleep(0.2)


def moto_range_cost() -> dict[int, float]:
    """Seconds moto takes to answer a 1 MiB ranged GET of an object of 2, 32 and 128 MiB
    (median of 5, through the same store the readers use): what a ranged read of a large table
    file costs on this server (a real S3 endpoint is not measured here)."""
    from svcluster.tasks.lake.s3_objects import S3Objects
    from svcluster.tasks.lake.store import delta_storage_options
    import s3fs

    fs = s3fs.S3FileSystem(use_listings_cache=False)
    fs.mkdir("bench-ranges")
    objects = S3Objects(delta_storage_options("s3://bench-ranges", {}))
    out = {}
    for mib in (2, 32, 128):
        size = mib << 20
        fs.pipe_file(f"bench-ranges/o{mib}", os.urandom(size))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            objects.read_range(f"bench-ranges/o{mib}", 0, 1 << 20, size)
            times.append(time.perf_counter() - t0)
        out[mib] = float(np.median(times))
    fs.rm("bench-ranges", recursive=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768, help="floats per vector (StreetCLIP: 768)")
    ap.add_argument("--quick", action="store_true", help="5,000 locations")
    ap.add_argument("--skip-s3", action="store_true")
    args = ap.parse_args()
    n = 5_000 if args.quick else args.n
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        local = measure(open_lake(str(work / "lake")), n, work, args.dim)
        show(f"local, {n:,} locations", local)
        if args.skip_s3:
            return
        import s3fs

        server, endpoint = moto_server()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL=endpoint)
        try:
            s3fs.S3FileSystem(use_listings_cache=False).mkdir("bench-lake")
            s3 = measure(open_lake("s3://bench-lake/lake"), n, work, args.dim)
            show(f"moto S3, {n:,} locations", s3)
            print("\nS3 / local:", ", ".join(f"{k} {s3[k] / local[k]:.1f}x" for k in
                                               ("batch_last_s", "sql_images_s", "sql_embeddings_s", "load_vectors_s", "report_data_s")))
            print("S3 with the machine cache / local, sql count(*):", ", ".join(
                f"{t} {s3[f'sql_warm_{t}_s'] / local[f'sql_{t}_s']:.1f}x" for t in TABLES))
            print("moto, a 1 MiB ranged GET of an object of " + ", ".join(
                f"{mib} MiB: {seconds * 1000:.0f} ms" for mib, seconds in moto_range_cost().items()))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
