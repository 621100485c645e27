"""Faults at the Street View API (the local server, real HTTP): 10% HTTP 500, 5% 429 /
OVER_QUERY_LIMIT, 5% stalls past the client's timeout, 2% truncated JPEGs, 2% grey "no
imagery" placeholders, 3% connection resets, and one panorama that always fails. The fetch
finishes; every view ends ``ok`` or with a recorded terminal reason; nothing corrupt is stored
or embedded; the requests stay within a stated budget. A bad key stops the run at once."""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.demo.scenes import SceneImages
from svcluster.tasks.fetch.server import Fault, placeholder_jpeg
from tests.reliability import proc
from tests.reliability.audit import audit_lake
from tests.reliability.conftest import FAKE_KEY, FAKE_SECRET, scene_server, write_small_map

HEADINGS = (0, 180)
SIZE = (256, 256)
TIMEOUT = 1.0
MAX_RETRIES = 3
# fault kind -> share of requests, on each endpoint (the mix, plus resets)
MIX = [("500", 0.10), ("429", 0.025), ("over_query_limit", 0.025), ("stall", 0.05), ("reset", 0.03)]
IMAGE_ONLY = [("truncated", 0.02), ("placeholder", 0.02)]


@dataclass
class FaultPlan:
    """Which request gets which fault, drawn with a seeded RNG; and what that must cost."""

    faults: list[Fault] = field(default_factory=list)
    grey: set[tuple[str, int]] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    dead_pano: str = ""

    def add(self, kind: str, **where) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "placeholder":
            self.grey.add((where["pano"], int(where["heading"])))
        else:
            self.faults.append(Fault(kind, times=1, seconds=TIMEOUT + 1.0, **where))


def draw(kinds, rng: random.Random) -> str | None:
    u, acc = rng.random(), 0.0
    for kind, share in kinds:
        acc += share
        if u < acc:
            return kind
    return None


def plan_faults(panos: list[str], seed: int = 5) -> FaultPlan:
    rng = random.Random(seed)
    plan = FaultPlan()
    for pano in panos:
        if (kind := draw(MIX, rng)) is not None:
            plan.add(kind, endpoint="metadata", pano=pano)
        for h in HEADINGS:
            if (kind := draw(MIX + IMAGE_ONLY, rng)) is not None:
                plan.add(kind, endpoint="image", pano=pano, heading=h)
    for kind, _ in MIX + IMAGE_ONLY:  # at least one of each kind, whatever the draw
        if not plan.counts.get(kind):
            taken = {(f.pano, f.heading) for f in plan.faults} | plan.grey
            free = [(p, h) for p in panos for h in HEADINGS if (p, h) not in taken]
            pano, h = free[rng.randrange(len(free))]
            plan.add(kind, endpoint="image", pano=pano, heading=h)
    plan.dead_pano = panos[rng.randrange(len(panos))]  # 500 on every request: ends `failed`
    plan.faults.append(Fault("500", endpoint="metadata", pano=plan.dead_pano, times=None))
    return plan


class GreyWhere:
    """The scene images, but Google's grey placeholder for the planned views."""

    def __init__(self, scenes: SceneImages, grey: set[tuple[str, int]]):
        self.scenes, self.grey = scenes, grey

    def __call__(self, pano_id, heading, size, fov, pitch) -> bytes:
        if (pano_id, int(heading)) in self.grey:
            return placeholder_jpeg(*size)
        return self.scenes(pano_id, heading, size, fov, pitch)


def fetch_args(lake: Path) -> list[str]:
    return ["--lake", str(lake), "--json", "fetch", "--map", "faulty", "--headings", ",".join(map(str, HEADINGS)),
            "--size", "x".join(map(str, SIZE)), "--timeout", str(TIMEOUT), "--max-retries", str(MAX_RETRIES),
            "--concurrency", "8", "--qps", "0"]


def test_fetch_survives_api_faults_and_stays_in_budget(tmp_path) -> None:
    map_file = tmp_path / "faulty.json"
    locations = write_small_map(map_file, n=60, seed=77)
    lake_dir = tmp_path / "lake"
    lake = open_lake(str(lake_dir))
    ingest_map(lake, map_file, "faulty")
    panos = [str(loc["panoId"]) for loc in locations]
    plan = plan_faults(panos)
    server = scene_server(locations, image_provider=GreyWhere(SceneImages.for_locations(locations), plan.grey))
    for f in plan.faults:
        server.add_fault(f)
    with server:
        env = proc.base_env(SVCLUSTER_STREETVIEW_URL=server.base_url, GOOGLE_MAPS_API_KEY=FAKE_KEY,
                            GOOGLE_MAPS_SIGNING_SECRET=FAKE_SECRET)
        done = proc.run(fetch_args(lake_dir), env, timeout=240)
        assert done.code == 0, done.err[-3000:]
        result = json.loads(done.out)
        requests = dict(server.counts)

        # Budget: one metadata request per location and one image request per view, one free
        # location lookup per deleted panorama (the demo world's ~1 %), plus one retry per
        # injected transient fault, plus the dead panorama's retries. No storms.
        deleted = sum(1 for p in panos if p not in server.world)
        clean = len(locations) * (1 + len(HEADINGS)) + deleted
        transient = sum(plan.counts.values()) - plan.counts.get("placeholder", 0)
        budget = clean + transient + MAX_RETRIES
        assert requests["total"] <= budget, (requests, budget, plan.counts)
        assert result["requests"] == requests["total"]

        views = lake.query("SELECT l.pano_id, i.* FROM images i JOIN locations l USING (location_id)").to_pylist()
        assert len(views) == len(locations) * len(HEADINGS)
        for v in views:  # every view ends ok or with a terminal reason
            assert v["status"] in ("ok", "no_imagery", "failed"), v
            assert v["status"] == "ok" or v["reason"], v
            if (v["pano_id"], v["heading"]) in plan.grey:
                assert v["status"] == "no_imagery" and "placeholder" in v["reason"], v
            if v["pano_id"] == plan.dead_pano:
                assert v["status"] == "failed" and "500" in v["reason"], v
        assert_nothing_corrupt(lake, views)

        # The next run retries what failed (the dead panorama recovered) and completes the map.
        server.clear_faults()
        again = proc.run(fetch_args(lake_dir), env, timeout=240)
        assert again.code == 0, again.err[-3000:]
        final = lake.query("SELECT status, count(*) n FROM images GROUP BY ALL").to_pylist()
        by_status = {r["status"]: r["n"] for r in final}
        assert by_status.get("failed", 0) == 0, final
        assert by_status.get("no_imagery", 0) >= len(plan.grey), final

        embed = proc.run(["--lake", str(lake_dir), "embed", "--map", "faulty", "--model", "baseline"], env, timeout=240)
        assert embed.code == 0, embed.err[-3000:]
        ok_sha = {r["sha256"] for r in lake.query("SELECT sha256 FROM images WHERE status = 'ok'").to_pylist()}
        embedded = lake.query("SELECT image_sha256 FROM embedding_views").column(0).to_pylist()
        assert embedded and set(embedded) <= ok_sha, "an image that is not ok was embedded"
        grey_sha = hashlib.sha256(placeholder_jpeg(*SIZE)).hexdigest()
        assert grey_sha not in embedded and grey_sha not in ok_sha
        audit_lake(lake).assert_clean()
    print(f"\nfaults injected: {plan.counts} + dead pano; requests {requests['total']} (budget {budget}, clean {clean})")


def assert_nothing_corrupt(lake, views) -> None:
    """Every ok view's blob is a whole JPEG whose bytes match the row (decoded fully)."""
    for v in views:
        if v["status"] != "ok":
            continue
        data = lake.read_bytes(v["path"])
        assert hashlib.sha256(data).hexdigest() == v["sha256"] and len(data) == v["size_bytes"]
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # raises on a truncated body
            assert img.size == SIZE
        assert len(set(img.convert("L").getdata())) > 16, "a flat (placeholder-like) image stored as ok"


def test_bad_key_stops_in_the_first_requests(tmp_path) -> None:
    map_file = tmp_path / "badkey.json"
    locations = write_small_map(map_file, n=60, seed=78)
    lake = open_lake(str(tmp_path / "lake"))
    ingest_map(lake, map_file, "faulty")
    wrong = "AIzaWRONG-svcluster-0000000000000000000"
    with scene_server(locations) as server:
        env = proc.base_env(SVCLUSTER_STREETVIEW_URL=server.base_url, GOOGLE_MAPS_API_KEY=wrong)
        done = proc.run(fetch_args(tmp_path / "lake")[:2] + fetch_args(tmp_path / "lake")[3:], env, timeout=120)
        line = done.assert_clear_error()
        assert "refused" in line.lower() and "GOOGLE_MAPS_API_KEY" in line, line
        assert wrong not in done.err + done.out
        assert server.counts["total"] <= 8 + 2, f"{server.counts['total']} requests after the key was refused"
    rows = lake.query("SELECT count(*) FILTER (status = 'ok') ok FROM images").to_pylist()[0]
    assert rows["ok"] == 0
    print(f"\nbad key: stopped after {server.counts['total']} requests: {line}")
