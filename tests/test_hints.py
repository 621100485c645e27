"""Hints that help (issue 15.13): embed says why places have no embedding and only sends users
to fetch when a fetch can help; an uncached model offline fails at once; ``--from-folder``
errors name the bad files and what to do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svcluster.flows.cli import main as cli_main
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import FetchOptions
from svcluster.tasks.fetch.folder_import import import_folder
from tests.cluster_data import ingest_sample
from tests.fixtures.models import add_views

REPO = Path(__file__).resolve().parents[1]


def test_embed_hints_say_why_places_have_no_embedding(small_lake_map, capsys):
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:12], headings=(0, 90), status={
        **{(i, h): "no_imagery" for i in ids[2:6] for h in (0, 90)},  # Street View has nothing there
        **{(ids[6], h): "failed" for h in (0, 90)},  # a fetch failed
        (ids[7], 0): "failed", (ids[7], 90): "no_imagery",
    })  # fmt: skip
    # ids[12:] were never fetched
    assert cli_main(["--lake", lake.uri, "embed", "--map", map_name, "--model", "baseline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    none = [line for line in lines if "no Street View imagery" in line]
    assert none == [
        "4 places have no Street View imagery (Google has no panorama there): nothing to embed, "
        "fetching again will not change it; they stay untagged on export"
    ]
    assert "fetch" not in none[0].replace("fetching again will not", "")
    assert f"2 places have views that failed to fetch: `svcluster fetch --map {map_name}` retries them" in lines
    assert f"8 places have not been fetched yet: run `svcluster fetch --map {map_name}`" in lines
    assert cli_main(["--lake", lake.uri, "--json", "embed", "--map", map_name, "--model", "baseline"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert (doc["locations_no_imagery"], doc["locations_fetch_failed"], doc["locations_not_fetched"]) == (4, 2, 8)
    assert doc["locations_without_views"] == 14


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_uncached_model_fails_at_once_when_the_hub_cannot_be_reached(small_lake_map, tmp_path):
    """No HF_HUB_OFFLINE, no network to the hub (a closed port), nothing cached: embed fails in
    one request instead of the hub client's ~30 s of retries, and says why and what to do."""
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:1], headings=(0,))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", PYTHONPATH=str(REPO))
    def embed(model: str) -> tuple[subprocess.CompletedProcess, float]:
        cmd = [sys.executable, "-c", "from svcluster.flows.cli import main; main()", "--lake", lake.uri, "embed", "--map", map_name,
               "--model", model, "--precision", "fp32", "--device", "cpu"]
        started = time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
        return done, time.monotonic() - started

    # what a command that fails before any model loads costs here (imports, planning)
    reference, start_up = embed("./missing/clip")
    assert reference.returncode != 0 and "does not exist" in reference.stderr
    done, wall = embed("no-org/no-clip")
    assert done.returncode != 0
    assert "model 'no-org/no-clip' could not be loaded: no connection to the Hugging Face hub at http://127.0.0.1:" in done.stderr
    assert "hf download no-org/no-clip" in done.stderr and "Retrying" not in done.stderr
    # the hub client's retries on a refused port take 1+2+4+8+8 = 23 s
    assert wall - start_up < 12, f"failed {wall - start_up:.1f} s after a command that loads no model"


def test_hf_offline_mode_with_an_uncached_model_asks_no_hub(monkeypatch):
    from svcluster.tasks.embed import models
    from svcluster.tasks.errors import NotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    called = []
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: called.append(1))
    with pytest.raises(NotFoundError, match="HF_HUB_OFFLINE is set"):
        models.load_clip_parts("no-org/no-clip")
    assert called == []


# ---- --from-folder -------------------------------------------------------------------------
OPTIONS = FetchOptions(qps=0, concurrency=2, backoff_base=0.001)


def test_a_bad_folder_file_is_named_with_what_to_do(lake, tmp_path):
    from svcluster.tasks.fetch.server import synthetic_jpeg

    ingest_sample(lake, tmp_path, n=3, name="nb")
    root = tmp_path / "notebook" / "panoramas"
    for i in range(3):
        (root / f"location_{i}").mkdir(parents=True)
        for h in (0, 90, 180, 270):
            (root / f"location_{i}" / f"heading_{h}.jpg").write_bytes(synthetic_jpeg(f"nb{i}", h, (64, 48), 90, 0))
    (root / "location_1" / "heading_90.jpg").write_bytes(b"<html>quota exceeded</html>" * 10)
    r = import_folder(lake, "nb", tmp_path / "notebook", OPTIONS)
    assert (r.ok, r.failed) == (11, 1)
    (reason,) = r.failure_reasons
    assert reason.startswith("folder file panoramas/location_1/heading_90.jpg: image body not a JPEG (270 bytes)")
    assert reason.endswith("replace it and import again, or fetch that view from the API (svcluster fetch --map nb)")
    stored = lake.query("SELECT reason FROM images WHERE status = 'failed'").column(0).to_pylist()
    assert stored == [reason]


def test_a_folder_without_the_layout_says_what_it_holds_and_what_is_expected(lake, tmp_path):
    ingest_sample(lake, tmp_path, n=3, name="nb")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "IMG_0001.jpg").write_bytes(b"x")
    (photos / "trip").mkdir()
    with pytest.raises(SvclusterError) as err:
        import_folder(lake, "nb", photos, OPTIONS)
    text = str(err.value)
    assert "no panoramas/location_<i>/heading_<h>.jpg files found in it (it holds IMG_0001.jpg, trip/)" in text
    assert "panoramas/location_0/heading_0.jpg" in text and "position in the map file" in text
    with pytest.raises(SvclusterError, match=r"not a folder \(does not exist\); give the folder that holds"):
        import_folder(lake, "nb", tmp_path / "nowhere", OPTIONS)
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(SvclusterError, match=r"not a folder \(is a file\)"):
        import_folder(lake, "nb", tmp_path / "file.json", OPTIONS)
