"""``--precision auto`` decides by measurement, once per model and machine (issue 20.2): the
first auto embed times the CPU paths on the map's views and caches the decision; later runs
read it; a new model revision or a corrupt file measures again; a forced precision and the
baseline never measure. The timing is real (the tiny CLIP); only its calls are counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from svcluster.flows.cli import main as cli_main
from svcluster.tasks.embed import precision_auto
from svcluster.tasks.embed.models import load_embedder
from svcluster.tasks.embed.precision import cpu_paths
from svcluster.tasks.embed.precision_auto import decisions_dir, pick_path
from svcluster.tasks.embed.precision_check import compare_vectors
from svcluster.tasks.embed.step import EmbedOptions, embed_map
from tests.fixtures.models import add_views
from tests.test_precision import planted


@pytest.fixture
def timings(monkeypatch, svcluster_cache) -> list[str]:
    """Each call of our timing function, by path (the real function runs); no decision cached."""
    shutil.rmtree(decisions_dir(), ignore_errors=True)
    load_embedder.cache_clear()
    calls: list[str] = []
    real = precision_auto.time_path

    def counted(embedder, pixels, batch_size):
        calls.append(f"{embedder.precision}/{embedder.runtime}")
        return real(embedder, pixels, batch_size)

    monkeypatch.setattr(precision_auto, "time_path", counted)
    yield calls
    shutil.rmtree(decisions_dir(), ignore_errors=True)
    load_embedder.cache_clear()


def auto(model, **kw) -> EmbedOptions:
    return EmbedOptions(model=str(model), device="cpu", precision="auto", batch_size=8, workers=2, **kw)


@pytest.fixture
def viewed_map(small_lake_map):
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:10], kinds={loc: ("desert" if i % 2 else "forest") for i, loc in enumerate(ids[:10])})
    return lake, map_name, ids


def test_first_auto_embed_measures_and_caches_then_later_runs_reuse_it(viewed_map, tiny_clip, timings):
    lake, map_name, _ = viewed_map
    first = embed_map(lake, map_name, auto(tiny_clip))
    d = first.precision_decision
    assert d.how == "measured" and d.views == 32 and d.map == map_name
    # Every CPU path was timed once, the reference (fp32 in torch) on two halves.
    assert sorted(timings) == sorted(["fp32/torch", "fp32/torch"] + [f"{p}/{r}" for p, r in cpu_paths()[1:]])
    assert {(p.precision, p.runtime) for p in d.paths} == set(cpu_paths())
    assert all(p.images_per_second > 0 for p in d.paths)
    chosen = next(p for p in d.paths if (p.precision, p.runtime) == (d.precision, d.runtime))
    assert chosen.note in ("reference", "gate passed")
    assert chosen.note == "reference" or chosen.gate["passed"] and chosen.speedup > 1
    # Nothing faster than the choice passed the gate.
    assert not any(p.gate and p.gate["passed"] and p.images_per_second > chosen.images_per_second for p in d.paths)
    # The run's record: the chosen precision (and what ran it); the rows: only the precision.
    assert first.precision == d.precision and first.locations_embedded == 10
    assert first.runtime == d.runtime
    assert lake.query("SELECT DISTINCT precision FROM embeddings").column(0).to_pylist() == [d.precision]
    files = list(decisions_dir().glob("*.json"))
    assert len(files) == 1 and str(files[0]) == d.cache_file
    saved = json.loads(files[0].read_text())
    assert saved["key"]["model_revision"] == first.model_revision and saved["key"]["device"] == "cpu"
    assert saved["decision"]["precision"] == d.precision

    timings.clear()
    load_embedder.cache_clear()
    again = embed_map(lake, map_name, auto(tiny_clip))
    assert timings == []  # read from the cache: nothing timed
    assert again.precision_decision.how == "cached" and again.precision == d.precision
    assert again.precision_decision.paths == d.paths and again.locations_up_to_date == 10


def test_a_new_model_revision_measures_again(viewed_map, tiny_clip, timings, tmp_path):
    lake, map_name, _ = viewed_map
    embed_map(lake, map_name, auto(tiny_clip))
    assert timings
    timings.clear()
    other = shutil.copytree(tiny_clip, tmp_path / "tiny-clip-v2")
    (other / "README.md").write_text("the same weights, another revision\n")
    r = embed_map(lake, map_name, auto(other))
    assert r.precision_decision.how == "measured" and timings
    assert len(list(decisions_dir().glob("*.json"))) == 2


def test_a_corrupt_cached_decision_is_ignored_and_rewritten(viewed_map, tiny_clip, timings):
    lake, map_name, _ = viewed_map
    first = embed_map(lake, map_name, auto(tiny_clip)).precision_decision
    path = Path(first.cache_file)
    assert path.parent == decisions_dir()
    for garbage in ("{not json", json.dumps({"key": json.loads(path.read_text())["key"], "decision": {"precision": 1}})):
        path.write_text(garbage)
        timings.clear()
        load_embedder.cache_clear()
        r = embed_map(lake, map_name, auto(tiny_clip))
        assert r.precision_decision.how == "measured" and timings
        assert json.loads(path.read_text())["decision"]["how"] == "measured"  # written again, whole


def test_a_forced_precision_and_the_baseline_never_measure(viewed_map, tiny_clip, timings):
    lake, map_name, _ = viewed_map
    r = embed_map(lake, map_name, EmbedOptions(model=str(tiny_clip), device="cpu", precision="fp32", batch_size=8, workers=2))
    assert r.precision == "fp32" and r.precision_decision is None
    b = embed_map(lake, map_name, EmbedOptions(model="baseline", precision="auto"))
    assert b.precision == "fp32" and b.precision_decision is None
    assert timings == [] and not decisions_dir().exists()


def test_too_few_views_keep_the_rule_and_cache_nothing(small_lake_map, tiny_clip, timings):
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:2])  # 8 views, fewer than MIN_VIEWS
    r = embed_map(lake, map_name, auto(tiny_clip))
    assert r.precision_decision.how == "rule" and "too few" in r.precision_decision.reason
    assert timings == [] and not decisions_dir().exists()


def test_the_summary_shows_the_decision_and_json_records_it(viewed_map, tiny_clip, timings, capsys):
    lake, map_name, _ = viewed_map
    args = ["--lake", lake.uri, "embed", "--map", map_name, "--model", str(tiny_clip), "--device", "cpu", "--batch-size", "8"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "precision auto -> " in out and "measured now on 32 views" in out and "fp32 torch:" in out
    assert "decision cached in" in out
    assert cli_main(["--json", *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    d = doc["precision_decision"]
    assert d["how"] == "cached" and d["precision"] == doc["precision"]
    assert {(p["precision"], p["runtime"]) for p in d["paths"]} == set(cpu_paths())
    # --check-precision with auto checks the path auto decided on, from the cache.
    timings.clear()
    code = cli_main(["--json", "--lake", lake.uri, "embed", "--map", map_name, "--model", str(tiny_clip), "--device", "cpu",
                     "--check-precision", "--check-sample", "16"])  # fmt: skip
    check = json.loads(capsys.readouterr().out)
    assert timings == [] and check["precision"] == d["precision"] and check["runtime"] == d["runtime"]
    assert code == (0 if check["passed"] else 1)


def test_pick_path_takes_the_fastest_path_that_passes_the_gate():
    """The rule on planted vectors and speeds: the real gate, no model."""
    ref = planted()
    rng = np.random.default_rng(5)
    vectors = {
        ("int8", "onnxruntime"): ref + rng.normal(size=ref.shape) * 8,  # fastest, bent: fails
        ("bf16", "torch"): ref + rng.normal(size=ref.shape) * 1e-3,  # passes
        ("fp32", "onnxruntime"): ref.copy(),  # passes, but slower than bf16: never gated
    }
    gated: list[tuple[str, str]] = []

    def gate(path):
        gated.append(path)
        return compare_vectors(ref, vectors[path])

    rates = {("fp32", "torch"): 1.0, ("fp32", "onnxruntime"): 1.2, ("bf16", "torch"): 1.9, ("int8", "onnxruntime"): 3.3}
    chosen, figures = pick_path(rates, gate)
    assert chosen == ("bf16", "torch") and gated == [("int8", "onnxruntime"), ("bf16", "torch")]
    assert [(f.precision, f.note) for f in figures] == [
        ("int8", "gate failed"), ("bf16", "gate passed"), ("fp32", "not gated (a faster path passed)"), ("fp32", "reference")
    ]
    assert figures[0].gate["passed"] is False and figures[0].speedup == 3.3
    # None passes: fp32 in torch; a path slower than the reference is never gated.
    gated.clear()
    vectors[("bf16", "torch")] = vectors[("int8", "onnxruntime")]
    slow = {**rates, ("fp32", "onnxruntime"): 0.8}
    chosen, figures = pick_path(slow, gate)
    assert chosen == ("fp32", "torch") and gated == [("int8", "onnxruntime"), ("bf16", "torch")]
    assert figures[-1].note == "slower than fp32 eager"
    # At most `gated` paths go through the gate.
    gated.clear()
    assert pick_path(rates, gate, gated=1)[0] == ("fp32", "torch") and gated == [("int8", "onnxruntime")]
