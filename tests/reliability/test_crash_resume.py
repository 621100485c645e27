"""Crash and resume: ``svcluster run`` killed with SIGKILL at 10 seeded points spread over
fetch, embed, cluster and export, then run again. After every kill the lake holds no
duplicate rows, no torn file and nothing a reader could trip on; after the runs complete,
no blob is orphaned, no location is lost and the tagged export is byte-identical to the one an
uninterrupted run wrote.

The 10 kills are made in two chains of five (kill, resume and kill later, ... then run to the
end), so every resume starts from a killed lake and the test stays within its time budget."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from svcluster.tasks.lake.store import open_lake
from tests.reliability import proc
from tests.reliability.audit import audit_lake
from tests.reliability.conftest import RUN_OPTIONS, SMALL_MAP_LOCATIONS

HEADINGS = 2
SEED = 8


def files(lake: Path, table: str, pattern: str = "part-*.parquet") -> int:
    return sum(1 for _ in (lake / "tables" / table).glob(pattern))


def blobs(lake: Path) -> int:
    folder = lake / "blobs"
    return sum(1 for _ in folder.rglob("*.*")) if folder.exists() else 0


@dataclass
class KillPoint:
    """Where to kill: a state of the lake (or the output folder) to wait for, then a delay."""

    stage: str
    what: str
    ready: Callable[[Path, Path], bool]
    delay: float


def kill_points(rng: random.Random) -> tuple[list[KillPoint], list[KillPoint]]:
    """Two chains of five kill points, each in pipeline order, with seeded thresholds/delays."""
    views = SMALL_MAP_LOCATIONS * HEADINGS
    start: dict[Path, int] = {}

    def grown(lake: Path, more: int) -> int:
        """``more`` blobs past the count seen the first time this is asked (the run's start)."""
        return start.setdefault(lake, blobs(lake)) + more

    few, many = rng.randint(2, views // 6), rng.randint(views // 3, (2 * views) // 3)
    d = lambda lo, hi: round(rng.uniform(lo, hi), 3)  # noqa: E731
    chain_a = [
        KillPoint("fetch", f"{few} blobs stored", lambda lk, out: blobs(lk) >= few, d(0, 0.05)),
        KillPoint("fetch", "first images rows appended", lambda lk, out: files(lk, "images") >= 1, d(0, 0.2)),
        KillPoint("embed", "first embedding file", lambda lk, out: files(lk, "embedding_views") + files(lk, "embeddings") >= 1, d(0, 0.1)),
        KillPoint("cluster", "run's data file written, its commit maybe not yet", lambda lk, out: files(lk, "cluster_runs") >= 1, 0.0),
        KillPoint("export", "run committed, export under way", lambda lk, out: files(lk, "cluster_runs") >= 1, d(0.5, 1.5)),
    ]
    chain_b = [
        KillPoint("fetch", f"{many} blobs stored", lambda lk, out: blobs(lk) >= many, d(0, 0.05)),
        KillPoint("fetch", "fetch resumed: 8 more blobs, seeded delay", lambda lk, out: blobs(lk) >= grown(lk, 8), d(0, 0.3)),
        KillPoint("embed", "embedding under way, seeded delay", lambda lk, out: files(lk, "embedding_views") + files(lk, "embeddings") >= 1, d(0.05, 0.4)),
        KillPoint("cluster", "run row written", lambda lk, out: files(lk, "cluster_runs") >= 1, d(0, 0.1)),
        KillPoint("export", "tagged export written, summary not yet", lambda lk, out: (out / "tagged.json").exists(), 0.0),
    ]
    return chain_a, chain_b


def run_args(world, lake: Path, out: Path) -> list[str]:
    return ["--lake", str(lake), "run", str(world.map_file), *RUN_OPTIONS,
            "--out", str(out / "tagged.json"), "--summary", str(out / "summary.md")]


def check_complete(world, lake_dir: Path, out: Path, expected_export: bytes) -> dict:
    """Everything an uninterrupted run leaves: returns the audit's row counts."""
    lake = open_lake(str(lake_dir))
    audit = audit_lake(lake)
    audit.assert_clean()
    n = SMALL_MAP_LOCATIONS
    views = lake.query(
        "SELECT count(*) n, count(*) FILTER (status = 'ok') ok, "
        "count(*) FILTER (status NOT IN ('ok') AND reason IS NULL) unexplained FROM images"
    ).to_pylist()[0]
    assert views["n"] == n * HEADINGS and views["unexplained"] == 0, views
    lost = lake.query(
        "SELECT count(*) n FROM locations l WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.location_id = l.location_id) "
        "AND EXISTS (SELECT 1 FROM images i WHERE i.location_id = l.location_id AND i.status = 'ok')"
    ).to_pylist()[0]["n"]
    assert lost == 0, f"{lost} locations with imagery but no embedding"
    unassigned = lake.query(
        "SELECT count(*) n FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM cluster_assignments a "
        "JOIN cluster_runs r USING (run_id) WHERE a.location_id = e.location_id)"
    ).to_pylist()[0]["n"]
    assert unassigned == 0
    assert (out / "tagged.json").read_bytes() == expected_export, "export differs from the uninterrupted run's"
    stray = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert stray == [], f"temp files left next to the outputs: {stray}"
    return audit.rows


def run_chain(world, work: Path, chain: list[KillPoint]) -> list[tuple]:
    """Kill, resume-and-kill-later, ... along the chain, then run to the end."""
    work.mkdir()
    lake_dir = work / "lake"
    report = []
    for i, point in enumerate(chain):
        outcome = proc.run_and_kill(run_args(world, lake_dir, work), world.env,
                                    lambda: point.ready(lake_dir, work), point.delay, log=work / f"kill{i}")
        report.append((point.stage, point.what, outcome.killed, round(outcome.seconds, 1)))
        if lake_dir.exists():  # after every kill: nothing torn, duplicated or half-visible
            audit = audit_lake(open_lake(str(lake_dir)))
            problems = [p for p in audit.problems if not p.startswith("orphaned blob")]
            assert not problems, f"after kill {i} ({point.what}): {problems}"
    done = proc.run(run_args(world, lake_dir, work), world.env, log=work / "final")
    assert done.code == 0, done.err[-3000:]
    return report


def uninterrupted(world, work: Path) -> bytes:
    work.mkdir()
    done = proc.run(run_args(world, work / "lake", work), world.env, log=work / "run")
    assert done.code == 0, done.err[-3000:]
    return (work / "tagged.json").read_bytes()


def test_kill_9_at_ten_points_then_resume(world, tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    chains = kill_points(random.Random(SEED))
    # The uninterrupted run and the two chains use separate lakes: run them side by side.
    with ThreadPoolExecutor(3) as pool:
        base = pool.submit(uninterrupted, world, tmp_path / "uninterrupted")
        runs = [pool.submit(run_chain, world, tmp_path / f"chain{c}", chain) for c, chain in enumerate(chains)]
        expected = base.result()
        reports = [r.result() for r in runs]
    rows = check_complete(world, tmp_path / "uninterrupted" / "lake", tmp_path / "uninterrupted", expected)
    for c in range(len(chains)):
        work = tmp_path / f"chain{c}"
        assert check_complete(world, work / "lake", work, expected) == rows
    report = [r for chain in reports for r in chain]
    print("\nkill points (stage, state, killed mid-run, seconds):", *report, sep="\n  ")
    killed = sum(1 for r in report if r[2])
    assert killed >= 9, f"only {killed} of 10 runs were killed mid-way: {report}"
