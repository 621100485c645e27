"""Cluster names: mechanics with a tiny CLIP (text tower) saved to disk, determinism, storage,
the baseline's explicit "no names", the export's {name} placeholder and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.export.step import export_map
from svcluster.tasks.cluster.naming import (
    DESCRIPTIONS,
    NO_TEXT_TOWER,
    cluster_names,
    name_clusters,
    prompts_for,
)
from tests.report_helpers import run_ref, synthetic_map, write_embeddings, write_run

DIM = 24  # the tiny CLIP's projection size


def reference_text_features(model_dir: str, prompts: list[str]) -> np.ndarray:
    """The projected text embeddings, straight from transformers (independent of tasks/)."""
    import torch
    from transformers import AutoTokenizer, CLIPModel

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = CLIPModel.from_pretrained(model_dir).eval()
    max_len = model.config.text_config.max_position_embeddings
    enc = tok(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    t = getattr(out, "pooler_output", out).numpy()
    return t / np.linalg.norm(t, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model_dir(tiny_clip) -> str:
    """The tiny CLIP of tests/fixtures/models.py (text tower, processor, tokenizer), by path."""
    return str(tiny_clip)


@pytest.fixture(scope="module")
def text(model_dir) -> np.ndarray:
    return reference_text_features(model_dir, prompts_for(DESCRIPTIONS))


def named_lake(lake, tmp_path, model_dir, text, n=300):
    """A map whose 3 clusters' embeddings sit around 3 mutually distinct descriptions' text vectors."""
    m = synthetic_map(lake, tmp_path, n, dim=DIM, model=model_dir)
    sims = text @ text.T
    # three descriptions whose text vectors are as far apart as this tiny model allows
    a, b = np.unravel_index(np.argmin(sims), sims.shape)
    c = int(np.argmin(sims[a] + sims[b]))
    chosen = [int(a), int(b), c]
    assert len(set(chosen)) == 3
    labels = np.arange(n) % 3
    rng = np.random.default_rng(1)
    vectors = text[chosen][labels] + 0.05 * rng.normal(size=(n, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    write_embeddings(lake, m.location_ids, vectors, model_dir)  # supersedes the band vectors
    run_id = write_run(lake, m.name, m.location_ids, vectors, labels, model_dir)
    return m, run_id, chosen, vectors, labels


def test_names_match_the_descriptions_the_clusters_look_like(lake, tmp_path, model_dir, text):
    _, run_id, chosen, vectors, labels = named_lake(lake, tmp_path, model_dir, text)
    result = name_clusters(lake, run_id, top=3)
    assert result.reason is None and result.stored and result.model == model_dir
    assert sorted(result.names) == [0, 1, 2]
    # the top name of each cluster is the description its embeddings were built around
    assert [result.names[c][0].name for c in range(3)] == [DESCRIPTIONS[j] for j in chosen]
    # scores are the cosine between centroid and text vector; ranks by lift (score minus the
    # description's mean over clusters), computed here independently of tasks/naming
    centroids = np.stack([vectors[labels == c].mean(axis=0) for c in range(3)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    scores = centroids.astype(np.float64) @ text.T
    lift = scores - scores.mean(axis=0)
    for c in range(3):
        expected = list(np.argsort(-lift[c], kind="stable")[:3])
        got = result.names[c]
        assert [n.name for n in got] == [DESCRIPTIONS[j] for j in expected]
        assert [n.rank for n in got] == [1, 2, 3]
        assert got[0].score == pytest.approx(scores[c, expected[0]], abs=1e-4)
        assert got[0].lift == pytest.approx(lift[c, expected[0]], abs=1e-4)
    # stored in the lake, best first
    assert cluster_names(lake, run_id) == {c: [n.name for n in result.names[c]] for c in range(3)}


def test_naming_is_deterministic_and_idempotent(lake, tmp_path, model_dir, text):
    _, run_id, *_ = named_lake(lake, tmp_path, model_dir, text, n=120)
    first = name_clusters(lake, run_id)
    second = name_clusters(lake, run_id)
    assert first.names == second.names
    rows = lake.query("SELECT count(*) AS n FROM cluster_names WHERE run_id = $r", {"r": run_id}).column("n")[0].as_py()
    assert rows == 3 * 3  # naming twice adds rows that supersede, never duplicates in the view


def test_baseline_runs_get_no_names_and_say_so(lake, tmp_path):
    m = synthetic_map(lake, tmp_path, 60, dim=8, model="baseline")
    run_id = write_run(lake, m.name, m.location_ids, m.vectors, m.band, "baseline")
    result = name_clusters(lake, run_id)
    assert result.names == {} and result.reason == NO_TEXT_TOWER and not result.stored
    assert cluster_names(lake, run_id) == {}
    with pytest.raises(SvclusterError, match="baseline embedder has no text tower"):
        export_map(lake, tmp_path / "out.json", run=run_id, tag_format="k{k}-{name}-c{cluster}")


def test_export_tag_with_name_placeholder(lake, tmp_path, model_dir, text):
    _, run_id, chosen, *_ = named_lake(lake, tmp_path, model_dir, text, n=90)
    ref = run_ref(lake, run_id)
    with pytest.raises(SvclusterError, match="no cluster names yet"):
        export_map(lake, tmp_path / "x.json", run=run_id, tag_format="{name}-c{cluster}")
    name_clusters(lake, run_id)
    out = export_map(lake, tmp_path / "named.json", run=ref.name, tag_format="{name}-c{cluster}")
    assert out.tagged == 90
    doc = json.loads((tmp_path / "named.json").read_text())
    tags = [loc["extra"]["tags"][-1] for loc in doc["customCoordinates"]]
    expected = {f"{DESCRIPTIONS[chosen[c]]}-c{c}" for c in range(3)}
    assert set(tags) == expected
    # exporting again with the same template replaces the tag instead of piling it up
    export_map(lake, tmp_path / "named.json", run=ref.name, tag_format="{name}-c{cluster}")
    again = json.loads((tmp_path / "named.json").read_text())
    assert [loc["extra"]["tags"] for loc in again["customCoordinates"]] == [loc["extra"]["tags"] for loc in doc["customCoordinates"]]


def test_names_command_prints_json(lake, tmp_path, model_dir, text, capsys):
    _, run_id, chosen, *_ = named_lake(lake, tmp_path, model_dir, text, n=60)
    code = main(["--lake", lake.uri, "names", run_id, "--top", "2", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["reason"] is None
    assert [doc["names"][str(c)][0]["name"] for c in range(3)] == [DESCRIPTIONS[j] for j in chosen]
    assert all(len(v) == 2 for v in doc["names"].values())


def test_report_names_unnamed_clusters_and_shows_them(lake, tmp_path, model_dir, text):
    from svcluster.tasks.report.page import build_report
    from tests.test_report import page_json

    _, run_id, chosen, *_ = named_lake(lake, tmp_path, model_dir, text, n=90)
    assert cluster_names(lake, run_id) == {}
    result = build_report(lake, run_id, tmp_path / "named-report")
    assert result.names.startswith("names: ")
    data = page_json((tmp_path / "named-report" / "report.html").read_text(encoding="utf-8"))
    assert [c["names"][0] for c in data["clusters"]] == [DESCRIPTIONS[j] for j in chosen]
    assert cluster_names(lake, run_id)[0][0] == DESCRIPTIONS[chosen[0]]
