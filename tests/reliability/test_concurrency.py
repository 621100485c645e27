"""Concurrency: two ``svcluster`` processes on the same lake at once — two fetches of
overlapping maps, two embeds of them, two cluster runs of one map. Both finish (or one refuses
with a clear message); nothing is duplicated or lost."""

from __future__ import annotations

import json
from pathlib import Path

from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.demo.sample import to_format
from tests.reliability import proc
from tests.reliability.audit import audit_lake
from tests.reliability.conftest import FAKE_KEY, FAKE_SECRET, scene_server
from svcluster.tasks.demo.sample import generate_locations

HEADINGS = "0,180"


def both(args_a: list[str], args_b: list[str], env, tmp: Path, name: str) -> list[proc.Finished]:
    """Start two svcluster processes at the same moment; wait for both."""
    import time

    started = [proc.start(a, env, log=tmp / f"{name}-{i}") for i, a in enumerate((args_a, args_b))]
    out = []
    for i, p in enumerate(started):
        t0 = time.monotonic()
        p.wait(timeout=300)
        log = tmp / f"{name}-{i}"
        out.append(proc.Finished(p.returncode, Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text(),
                                 time.monotonic() - t0))
    for f in out:  # both finish, or one refuses with one clear line
        if f.code != 0:
            f.assert_clear_error()
    assert any(f.code == 0 for f in out), [f.err[-2000:] for f in out]
    return out


def test_two_processes_on_one_lake(tmp_path) -> None:
    locations = generate_locations(60, seed=99)
    maps = {"north": locations[:40], "south": locations[20:]}  # 20 locations in both
    lake_dir = tmp_path / "lake"
    lake = open_lake(str(lake_dir))
    for name, locs in maps.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(to_format(locs, "geoguessr")))
        ingest_map(lake, f, name)
    with scene_server(locations) as server:
        env = proc.base_env(SVCLUSTER_STREETVIEW_URL=server.base_url, GOOGLE_MAPS_API_KEY=FAKE_KEY,
                            GOOGLE_MAPS_SIGNING_SECRET=FAKE_SECRET)
        fetch = lambda m: ["--lake", str(lake_dir), "fetch", "--map", m, "--headings", HEADINGS,  # noqa: E731
                           "--size", "256x256", "--concurrency", "4", "--qps", "0"]
        fetched = both(fetch("north"), fetch("south"), env, tmp_path, "fetch")
        embed = lambda m: ["--lake", str(lake_dir), "embed", "--map", m, "--model", "baseline"]  # noqa: E731
        embedded = both(embed("north"), embed("south"), env, tmp_path, "embed")
        cluster = ["--lake", str(lake_dir), "--json", "cluster", "--map", "north", "--k", "3", "--seed", "1"]
        clustered = both(cluster, cluster, env, tmp_path, "cluster")
        # a refusal is fine; the work must then be doable by running again
        for step, results, args in (("fetch", fetched, fetch), ("embed", embedded, embed)):
            for m, r in zip(maps, results):
                if r.code != 0:
                    assert proc.run(args(m), env).code == 0

    audit = audit_lake(lake)
    audit.assert_clean()
    views = lake.query(
        "SELECT l.map, count(*) n, count(*) FILTER (i.status = 'ok') ok FROM locations l "
        "JOIN images i USING (location_id) GROUP BY ALL ORDER BY l.map"
    ).to_pylist()
    assert views == [{"map": "north", "n": 80, "ok": views[0]["ok"]}, {"map": "south", "n": 80, "ok": views[1]["ok"]}]
    assert audit.rows["images"] == 60 * 2  # each view once, shared by both maps
    with_imagery = lake.query("SELECT count(DISTINCT location_id) n FROM images WHERE status = 'ok'").to_pylist()[0]["n"]
    assert audit.rows["embeddings"] == with_imagery, "a location embedded twice or not at all"
    runs = lake.query("SELECT run_id, name, n_locations FROM cluster_runs WHERE map = 'north' ORDER BY name").to_pylist()
    assert 1 <= len(runs) <= 2 and len({r["name"] for r in runs}) == len(runs), runs
    north = lake.query(
        "SELECT count(DISTINCT e.location_id) n FROM embeddings e JOIN locations l USING (location_id) WHERE l.map = 'north'"
    ).to_pylist()[0]["n"]
    for r in runs:
        n = lake.query("SELECT count(*) n FROM cluster_assignments WHERE run_id = ?", [r["run_id"]]).to_pylist()[0]["n"]
        assert n == north == r["n_locations"], (r, n, north)
    print(f"\nconcurrency: fetch exits {[f.code for f in fetched]}, embed {[f.code for f in embedded]}, "
          f"cluster {[f.code for f in clustered]}; runs {[r['name'] for r in runs]}; "
          f"requests {server.counts['total']} for {60 * 3} distinct requests")
