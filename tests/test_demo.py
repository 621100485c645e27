"""The offline demo: ``svcluster demo`` as a user runs it (a fresh process, no Prefect server, no
key, no network), and the synthetic scenes it is built on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from svcluster.flows.demo import DemoPanoramas, write_demo_map
from svcluster.tasks.demo.sample import BANDS, generate_locations
from svcluster.tasks.demo.scenes import PALETTES, SceneImages, draw_scene, scene_jpeg

ROOT = Path(__file__).resolve().parents[1]


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment: no Prefect server, no key, a fresh Prefect home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GOOGLE_MAPS", "GSV_", "SVCLUSTER_", "AWS_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)  # the command must turn it off itself
    return env


def test_svcluster_demo_runs_offline_and_ends_with_where_everything_is(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-c", "from svcluster.flows.cli import main; main()", "demo", "--out", str(out), "--locations", "100"],
        cwd=tmp_path, env={**clean_env(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout, stderr = proc.stdout, proc.stderr
    # The ending tells where the outputs are and how to go on with a real map.
    for line in ("Tagged map (import into map-making.app):", "Run summary", "SQL lake", "GOOGLE_MAPS_API_KEY", "StreetCLIP"):
        assert line in stdout
    assert str(out / "chile-demo.tagged.json") in stdout
    report_line = next(line for line in stdout.splitlines() if "Report (map, clusters, look-alikes):" in line)
    report_page = Path(report_line.split(":", 1)[1].strip())
    assert report_page.is_file() and "<canvas" in report_page.read_text()
    # The temporary Prefect server's start/stop lines and tracebacks do not reach the user.
    assert "temporary server" not in stdout + stderr and "Traceback" not in stderr
    # The outputs are real: a tagged map-making.app file, a lake DuckDB can open, a summary.
    doc = json.loads((out / "chile-demo.tagged.json").read_text())
    assert doc["name"] == "Chile demo" and len(doc["customCoordinates"]) == 100
    tagged = [c for c in doc["customCoordinates"] if any(t.startswith("k5-c") for t in c["extra"].get("tags", []))]
    assert len(tagged) >= 95
    assert (out / "lake" / "svcluster.sql").is_file()
    summary = (out / "chile-demo.summary.md").read_text()
    assert "## Cluster sizes" in summary and "Compared with the map's own tags" in summary
    # The five landscapes come out as five clusters: each cluster is mostly one band.
    rows = [line for line in summary.splitlines() if line.startswith("| ") and line.endswith("% |") and "dominant" not in line]
    purities = [int(r.split("|")[-2].strip().rstrip("%")) for r in rows[-5:]]
    assert len(purities) == 5 and min(purities) >= 70, summary


def test_scenes_are_deterministic_and_differ_per_view():
    a = scene_jpeg("forest", "PANO_A", 90, 96, 96)
    assert a == scene_jpeg("forest", "PANO_A", 90, 96, 96)
    assert a != scene_jpeg("forest", "PANO_A", 180, 96, 96)
    assert a != scene_jpeg("forest", "PANO_B", 90, 96, 96)
    img = Image.open(io.BytesIO(scene_jpeg("ice", "P", 0, 200, 120)))
    assert img.format == "JPEG" and img.size == (200, 120)


def test_each_band_has_its_own_look():
    """Mean colours of many views: within a band they agree more than across bands."""
    def mean_colour(band: str, i: int) -> np.ndarray:
        return draw_scene(band, f"pano{i}", (i % 4) * 90, 64, 64).reshape(-1, 3).mean(0)

    assert set(PALETTES) == {b.name for b in BANDS}
    centres = {b: np.mean([mean_colour(b, i) for i in range(12)], axis=0) for b in PALETTES}
    for band in PALETTES:
        own = np.mean([np.linalg.norm(mean_colour(band, i) - centres[band]) for i in range(12, 20)])
        nearest_other = min(np.linalg.norm(centres[band] - centres[o]) for o in PALETTES if o != band)
        assert own < nearest_other, band


def test_scene_provider_follows_the_location_latitude_and_requested_size():
    locs = generate_locations(50, seed=2)
    provider = SceneImages.for_locations(locs)
    atacama = min(locs, key=lambda loc: -loc["lat"])  # the northernmost
    assert provider.band(atacama["panoId"]) == "desert"
    assert provider.band(min(locs, key=lambda loc: loc["lat"])["panoId"]) in ("steppe", "ice")
    assert Image.open(io.BytesIO(provider(atacama["panoId"], 270, (160, 100), 90, 0))).size == (160, 100)


def test_demo_map_and_panoramas(tmp_path):
    locs = write_demo_map(tmp_path / "m.json", 300)
    doc = json.loads((tmp_path / "m.json").read_text())
    assert len(doc["customCoordinates"]) == 300 and doc["name"] == "Chile demo"
    panos = DemoPanoramas(locs)
    found = [panos(loc["panoId"], None) for loc in locs]
    missing = sum(p is None for p in found)
    assert 0 < missing < 15  # about 1 % have no imagery, deterministically
    hit = next(p for p in found if p is not None)
    assert hit.lat < -17 and hit.date and panos(None, (-33.4, -70.6)) is None


def test_svcluster_demo_takes_a_clip_model_instead_of_the_baseline(tmp_path, tiny_clip):
    out = tmp_path / "demo"
    env = {**clean_env(tmp_path), "PYTHONPATH": str(ROOT), "SVCLUSTER_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", "from svcluster.flows.cli import main; main()", "--json", "demo", "--out", str(out),
         "--locations", "40", "--k", "3", "--model", str(tiny_clip)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    pipeline = json.loads(proc.stdout)["pipeline"]
    assert pipeline["embed"]["model"] == str(tiny_clip) and pipeline["embed"]["locations_planned"] > 0
    assert pipeline["cluster"]["run"]["k"] == 3 and pipeline["cluster"]["result"]["model"] == str(tiny_clip)
    tagged = json.loads((out / "chile-demo.tagged.json").read_text())["customCoordinates"]
    assert sum(any(t.startswith("k3-c") for t in c["extra"].get("tags", [])) for c in tagged) >= 36
