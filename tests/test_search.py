"""Search by words and by example on a real lake with the tiny CLIP (text and image towers):
planted nearest places come first, the study set is in the input's shape and ingests back,
the baseline refuses text search, and every request is a row of ``searches``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.sql import load_sql
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.embed.models import load_embedder
from svcluster.tasks.search.step import SearchOptions, search_text, similar, street_view_link
from tests.cluster_data import append_embeddings, ingest_objects, write_labels
from tests.fixtures.models import jpeg_bytes, scene_image
from tests.test_naming import reference_text_features

DIM = 24  # the tiny CLIP's projection size
QUERY = "a photo of a red dirt road"
PANO = "Xq3pT0v9aBcDeFgHiJkLmN"  # 22 characters, like Google's ids


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def objects() -> list[dict]:
    """12 places; place 0 has a pano id and two objects (a duplicate), objects carry user tags."""
    out = [{"lat": -30.0 - i * 0.5, "lng": -70.0 - i * 0.1, "heading": 0, "extra": {"tags": ["mine"]}} for i in range(12)]
    out[0]["panoId"] = PANO
    out.insert(3, dict(out[0], heading=90))  # a second object on place 0
    return out


@pytest.fixture
def study(lake, tmp_path, tiny_clip):
    """A map 'study' with random unit embeddings of the tiny CLIP, place 0 planted on the query's
    text embedding and place 5 planted right next to place 7; a run 'r1' over every place."""
    model = str(tiny_clip.resolve())
    ids = ingest_objects(lake, tmp_path, objects(), "study", envelope={"name": "Study map", "extra": 1})
    places = list(dict.fromkeys(ids))
    rng = np.random.default_rng(3)
    matrix = unit(rng.standard_normal((len(places), DIM))).astype(np.float32)
    matrix[0] = reference_text_features(model, [QUERY])[0]
    matrix[5] = unit(matrix[7] + 0.05 * rng.standard_normal(DIM))
    append_embeddings(lake, places, matrix, model=model)
    write_labels(lake, "study", "r1", places, [i % 3 for i in range(len(places))])
    return model, places, matrix


def test_search_ranks_the_planted_place_first_with_cluster_and_link(lake, study):
    model, places, _ = study
    r = search_text(lake, "study", QUERY, SearchOptions(top=5))
    assert r.model == model and len(r.hits) == 5
    first = r.hits[0]
    assert first.location_id == places[0] and first.rank == 1
    assert first.score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in r.hits] == sorted((h.score for h in r.hits), reverse=True)
    assert first.cluster == 0 and first.run == "study@v1"
    assert first.lat == pytest.approx(-30.0) and first.lng == pytest.approx(-70.0)
    assert first.link == f"https://www.google.com/maps/@?api=1&map_action=pano&pano={PANO}"
    other = next(h for h in r.hits if h.location_id != places[0])
    assert other.link == street_view_link(None, other.lat, other.lng) and "viewpoint=" in other.link


def test_search_writes_a_searches_row(lake, study):
    _, places, _ = study
    r = search_text(lake, "study", QUERY, SearchOptions(top=3))
    rows = lake.query("SELECT * FROM searches").to_pylist()
    assert len(rows) == 1
    row = rows[0]
    assert row["search_id"] == r.search_id and row["kind"] == "text" and row["query"] == QUERY
    assert row["maps"] == ["study"] and row["pooling"] == "mean" and row["precision"] == "fp32"
    assert row["location_ids"][0] == places[0] and len(row["location_ids"]) == 3
    assert row["scores"][0] == pytest.approx(1.0, abs=1e-4)


def test_study_set_is_in_the_input_shape_and_ingests_back(lake, study, tmp_path):
    _, places, _ = study
    out = tmp_path / "set.json"
    r = search_text(lake, "study", QUERY, SearchOptions(top=2, out=out, tag="dirt"))
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["name"] == "Study map" and doc["extra"] == 1
    objs = doc["customCoordinates"]
    # place 0 has two objects (headings 0 and 90), the second hit one
    assert r.exported_objects == len(objs) == 3
    assert [o["heading"] for o in objs[:2]] == [0, 90] and objs[0]["panoId"] == PANO
    assert all(o["extra"]["tags"] == ["mine", "dirt"] for o in objs)
    ingest_map(lake, out, "again")
    back = lake.query("SELECT DISTINCT location_id FROM locations WHERE map = 'again'").column(0).to_pylist()
    assert sorted(back) == sorted(h.location_id for h in r.hits)


def test_default_tag_is_the_query(lake, study, tmp_path):
    out = tmp_path / "set.json"
    search_text(lake, "study", QUERY, SearchOptions(top=1, out=out))
    objs = json.loads(out.read_text(encoding="utf-8"))["customCoordinates"]
    assert objs and all(o["extra"]["tags"][-1] == QUERY for o in objs)


def test_baseline_refuses_text_search(lake, tmp_path):
    ids = ingest_objects(lake, tmp_path, objects(), "plain")
    places = list(dict.fromkeys(ids))
    append_embeddings(lake, places, unit(np.random.default_rng(0).standard_normal((len(places), 8))), model="baseline")
    with pytest.raises(SvclusterError, match="text tower"):
        search_text(lake, "plain", QUERY)


def test_cli_baseline_error_is_one_line(lake, tmp_path, capsys):
    ids = ingest_objects(lake, tmp_path, objects(), "plain")
    places = list(dict.fromkeys(ids))
    append_embeddings(lake, places, unit(np.random.default_rng(0).standard_normal((len(places), 8))), model="baseline")
    assert main(["--lake", lake.uri, "search", "--map", "plain", QUERY]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "baseline" in err and "text tower" in err


def test_similar_by_location_id(lake, study):
    _, places, _ = study
    r = similar(lake, places[7], options=SearchOptions(top=4))
    assert r.kind == "location" and r.maps == ["study"]
    assert r.hits[0].location_id == places[5]
    assert places[7] not in [h.location_id for h in r.hits]


def test_similar_by_coordinate_uses_the_nearest_place(lake, study):
    _, places, _ = study
    # place 7 stands at (-33.5, -70.7); this point is a few hundred metres away
    r = similar(lake, "-33.502,-70.701", map_name="study", options=SearchOptions(top=3))
    assert r.kind == "coordinate" and r.source_location_id == places[7]
    assert r.hits[0].location_id == places[5]


def test_similar_by_images_pools_like_views(lake, tmp_path, study):
    model, places, matrix = study
    files = []
    for seed, kind in ((1, "desert"), (2, "forest")):
        path = tmp_path / f"shot{seed}.jpg"
        path.write_bytes(jpeg_bytes(scene_image(kind, seed)))
        files.append(path)
    embedder = load_embedder(model, "cpu", "fp32")
    from PIL import Image

    single = [embedder.embed(embedder.prepare(Image.open(f).convert("RGB"))[None])[0] for f in files]
    # place 2: the first picture's embedding; place 9: the two pictures pooled (by hand)
    matrix = matrix.copy()
    matrix[2] = unit(single[0])
    matrix[9] = unit(unit(single[0]) + unit(single[1]))
    append_embeddings(lake, places, matrix, model=model)
    one = similar(lake, images=[files[0]], map_name="study", options=SearchOptions(top=3, device="cpu"))
    assert one.kind == "image" and one.hits[0].location_id == places[2]
    assert one.hits[0].score == pytest.approx(1.0, abs=1e-3)
    both = similar(lake, images=files, map_name="study", options=SearchOptions(top=3, device="cpu"))
    assert both.hits[0].location_id == places[9]
    assert both.hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_similar_all_maps_and_argument_errors(lake, tmp_path, study):
    model, places, matrix = study
    other = [{"lat": 10.0 + i, "lng": 20.0, "heading": 0} for i in range(3)]
    other_ids = ingest_objects(lake, tmp_path, other, "other")
    near = unit(matrix[7] + 0.01 * np.random.default_rng(9).standard_normal(DIM))
    append_embeddings(lake, other_ids, np.stack([near, unit(-matrix[7]), unit(-matrix[5])]), model=model)
    r = similar(lake, places[7], all_maps=True, options=SearchOptions(top=3))
    assert set(r.maps) == {"study", "other"}
    assert r.hits[0].location_id == other_ids[0] and r.hits[0].map == "other"
    with pytest.raises(SvclusterError, match="not both"):
        similar(lake, places[7], images=[tmp_path / "x.jpg"], map_name="study")
    with pytest.raises(SvclusterError, match="no place"):
        similar(lake, "no-such-place")
    with pytest.raises(SvclusterError, match="--top"):
        similar(lake, places[7], options=SearchOptions(top=0))
    with pytest.raises(SvclusterError, match="--top"):
        search_text(lake, "study", QUERY, SearchOptions(top=0))


def test_baseline_searches_by_example(lake, tmp_path):
    ids = ingest_objects(lake, tmp_path, objects(), "plain")
    places = list(dict.fromkeys(ids))
    matrix = unit(np.random.default_rng(0).standard_normal((len(places), 8)))
    matrix[4] = unit(matrix[1] + 0.01)
    append_embeddings(lake, places, matrix, model="baseline")
    r = similar(lake, places[1], options=SearchOptions(top=2))
    assert r.model == "baseline" and r.hits[0].location_id == places[4]
    assert r.hits[0].cluster is None and r.hits[0].run is None  # the map has no run


def test_cli_search_json_and_similar_summary(lake, study, tmp_path, capsys):
    _, places, _ = study
    assert main(["--lake", lake.uri, "--json", "search", "--map", "study", QUERY, "--top", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hits"][0]["location_id"] == places[0] and len(doc["hits"]) == 2
    out = tmp_path / "similar.json"
    assert main(["--lake", lake.uri, "similar", places[7], "--top", "2", "--out", str(out), "--tag", "twins"]) == 0
    text = capsys.readouterr().out
    assert places[5] in text and "viewpoint=" in text and "study@v1" in text
    assert json.loads(out.read_text())["customCoordinates"][0]["extra"]["tags"] == ["mine", "twins"]
    # a coordinate south of the equator starts with "-" and is still the TARGET, not an option
    assert main(["--lake", lake.uri, "--json", "similar", "-33.502,-70.701", "--map", "study", "--top", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source_location_id"] == places[7] and doc["hits"][0]["location_id"] == places[5]
    assert lake.query("SELECT count(*) FROM searches").column(0)[0].as_py() == 3


def test_documented_sql_ranks_by_cosine(lake, study):
    model, places, matrix = study
    rows = lake.query(
        load_sql("search/rank_by_vector"),
        {"map": "study", "model": model, "pooling": "mean", "precision": "fp32", "vector": matrix[0].tolist(), "top": 3},
    ).to_pylist()
    assert rows[0]["location_id"] == places[0] and rows[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(rows) == 3


def test_searches_row_re_exports_the_study_set(lake, study):
    _, places, _ = study
    r = search_text(lake, "study", QUERY, SearchOptions(top=2))
    rows = lake.query(load_sql("search/study_set"), {"search_id": r.search_id}).to_pylist()
    # place 0's two objects, then the second hit's one, as written in the file
    assert [row["location_id"] for row in rows] == [places[0], places[0], r.hits[1].location_id]
    assert json.loads(rows[1]["raw"])["heading"] == 90
    assert lake.query(load_sql("search/study_set"), {"search_id": "nope"}).num_rows == 0


def test_a_lake_that_cannot_record_still_answers(lake, study, monkeypatch, caplog):
    from svcluster.tasks.errors import LakeError

    _, places, _ = study

    def refuse(*args, **kwargs):
        raise LakeError("read-only lake")

    monkeypatch.setattr(lake, "append", refuse)
    r = search_text(lake, "study", QUERY, SearchOptions(top=1))
    assert r.hits[0].location_id == places[0]
    assert "could not record the search" in caplog.text
