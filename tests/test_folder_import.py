"""``--from-folder``: the original notebook's panoramas/location_<i>/heading_<h>.jpg into the lake."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from svcluster.flows.cli import main as cli_main
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import FetchOptions, fetch_map
from svcluster.tasks.fetch.folder_import import import_folder
from svcluster.tasks.fetch.server import synthetic_jpeg
from tests.fixtures.streetview import ingest_locations, sample_locations

OPTIONS = FetchOptions(qps=0, concurrency=4, backoff_base=0.001)


def notebook_folder(root: Path, n: int, skip: set[tuple[int, int]] = frozenset()) -> dict[tuple[int, int], bytes]:
    """Write the notebook's layout for positions 0..n-1 and headings 0/90/180/270."""
    written = {}
    for i in range(n):
        d = root / "panoramas" / f"location_{i}"
        d.mkdir(parents=True, exist_ok=True)
        for h in (0, 90, 180, 270):
            if (i, h) in skip:
                continue
            data = synthetic_jpeg(f"nb{i}", h, (64, 48), 90, 0)
            (d / f"heading_{h}.jpg").write_bytes(data)
            written[(i, h)] = data
    return written


@pytest.fixture
def nb_map(lake, tmp_path, streetview_server) -> str:
    return ingest_locations(lake, tmp_path / "nb.json", sample_locations(6, seed=21), "nb", streetview_server)


def rows_by_position(lake, name: str) -> dict[tuple[int, int], dict]:
    rows = lake.query(
        "SELECT l.position, i.* FROM images i JOIN locations l USING (location_id) WHERE l.map = ?", [name]
    ).to_pylist()
    return {(r["position"], r["heading"]): r for r in rows}


@pytest.mark.parametrize("point_at", ["parent", "panoramas"])
def test_import_the_notebook_layout(lake, nb_map, tmp_path, point_at):
    root = tmp_path / "notebook"
    written = notebook_folder(root, 6, skip={(2, 90), (3, 0)})
    (root / "panoramas" / "location_1" / "heading_180.jpg").write_bytes(b"<html>quota exceeded</html>" * 10)
    (root / "panoramas" / "location_4" / "heading_45.jpg").write_bytes(written[(4, 0)])  # not a wanted heading
    (root / "panoramas" / "location_99").mkdir()  # beyond the map
    (root / "panoramas" / "location_99" / "heading_0.jpg").write_bytes(written[(0, 0)])
    (root / "panoramas" / "notes.txt").write_text("not a location")

    folder = root if point_at == "parent" else root / "panoramas"
    r = import_folder(lake, nb_map, folder, OPTIONS)

    assert (r.source, r.views, r.ok, r.failed, r.skipped) == ("folder", 24, 21, 1, 0)
    assert (r.missing_files, r.unmatched_files, r.requests) == (2, 2, 0)
    rows = rows_by_position(lake, nb_map)
    assert set(rows) == set(written)  # one row per file present, none for the missing ones
    located = lake.query("SELECT position, pano_id FROM locations WHERE map = ?", [nb_map]).to_pylist()
    pano_of = {x["position"]: x["pano_id"] for x in located}
    for key, row in rows.items():
        assert row["source"] == "folder" and row["pano_id"] == pano_of[key[0]]
        if key == (1, 180):
            assert row["status"] == "failed" and row["path"] is None and "not a JPEG" in row["reason"]
            continue
        assert row["status"] == "ok" and (row["width"], row["height"]) == (64, 48)
        assert lake.read_bytes(row["path"]) == written[key]  # stored exactly as on disk
        assert row["sha256"] == hashlib.sha256(written[key]).hexdigest()

    again = import_folder(lake, nb_map, folder, OPTIONS)
    assert (again.ok, again.failed, again.skipped) == (0, 1, 21)  # only the broken file is retried


def test_fetch_completes_an_import_without_refetching(lake, nb_map, tmp_path, streetview_server, streetview_settings):
    notebook_folder(tmp_path / "nb", 6, skip={(0, 270), (5, 90)})
    import_folder(lake, nb_map, tmp_path / "nb", OPTIONS)
    r = fetch_map(lake, nb_map, streetview_settings, OPTIONS)
    assert (r.ok, r.skipped, r.image_requests, r.metadata_requests) == (2, 22, 2, 2)
    rows = rows_by_position(lake, nb_map)
    assert rows[(0, 270)]["source"] == "api" and rows[(0, 0)]["source"] == "folder"
    assert all(row["status"] == "ok" for row in rows.values()) and len(rows) == 24


def test_a_folder_without_the_layout_is_a_clear_error(lake, nb_map, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SvclusterError, match="no panoramas/location_<i>/heading_<h>.jpg"):
        import_folder(lake, nb_map, tmp_path / "empty", OPTIONS)
    with pytest.raises(SvclusterError, match="not a folder"):
        import_folder(lake, nb_map, tmp_path / "nowhere", OPTIONS)


def test_cli_from_folder(lake, nb_map, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GOOGLE_MAPS_API_KEY", raising=False)  # no key needed to import
    notebook_folder(tmp_path / "nb", 6)
    assert cli_main(["--lake", lake.uri, "fetch", "--map", nb_map, "--from-folder", str(tmp_path / "nb"), "--headings", "0,90"]) == 0
    out = capsys.readouterr().out
    assert "12 views of 6 locations — 12 ok, 0 no imagery, 0 failed, 0 already in the lake" in out
    assert cli_main(["--lake", lake.uri, "fetch", "--map", nb_map, "--from-folder", str(tmp_path / "nb"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["source"], doc["ok"], doc["skipped"]) == ("folder", 12, 12)
