"""Precision paths with the tiny CLIP: every one that runs here, recorded in the lake's key;
auto's choice from the CPU flags and the cached speed probe; ONNX exports cached on disk;
the quality gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svcluster.flows.cli import main as cli_main
from svcluster.tasks.embed import precision
from svcluster.tasks.embed.step import EmbedOptions, embed_map, plan_embed
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.embed.models import load_embedder
from svcluster.tasks.embed.precision_check import check_precision, compare_vectors, neighbour_agreement
from tests.fixtures.models import add_views


def opts(tiny_clip, prec: str, **kw) -> EmbedOptions:
    return EmbedOptions(model=str(tiny_clip), device="cpu", precision=prec, batch_size=4, workers=2, **kw)


def test_every_cpu_precision_is_its_own_vector_set(small_lake_map, tiny_clip):
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:4], kinds={ids[0]: "desert", ids[1]: "forest"})
    results = {p: embed_map(lake, map_name, opts(tiny_clip, p)) for p in ("fp32", "bf16", "int8", "int8-static")}
    assert {p: (r.precision, r.runtime) for p, r in results.items()} == {
        "fp32": ("fp32", "onnxruntime"), "bf16": ("bf16", "torch"), "int8": ("int8", "onnxruntime"),
        "int8-static": ("int8-static", "onnxruntime"),
    }
    assert all(r.locations_embedded == 4 for r in results.values())
    rows = lake.query("SELECT location_id, precision, vector FROM embeddings").to_pylist()
    vec = {(r["location_id"], r["precision"]): np.array(r["vector"]) for r in rows}
    assert len(vec) == 16
    views = lake.query("SELECT precision, count(*) AS n FROM embedding_views GROUP BY precision ORDER BY precision").to_pylist()
    assert views == [{"precision": p, "n": 16} for p in ("bf16", "fp32", "int8", "int8-static")]
    for loc in ids[:4]:
        for p in ("bf16", "int8", "int8-static"):
            assert abs(np.linalg.norm(vec[(loc, p)]) - 1) < 1e-5
            assert vec[(loc, p)] @ vec[(loc, "fp32")] > 0.99
    # Each precision is incremental on its own; a new precision starts from nothing.
    assert plan_embed(lake, map_name, opts(tiny_clip, "int8")) == []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVCLUSTER_ONNX", "0")
        load_embedder.cache_clear()
        eager = embed_map(lake, map_name, opts(tiny_clip, "fp32"))
        assert eager.locations_embedded == 0  # fp32 is fp32, whichever runtime made it
        for p in ("int8", "int8-static"):
            with pytest.raises(SvclusterError, match="pip install onnxruntime"):
                embed_map(lake, map_name, opts(tiny_clip, p, locations_per_batch=1))
    load_embedder.cache_clear()


def test_onnx_exports_are_cached_by_revision_and_precision(tiny_clip, svcluster_cache):
    load_embedder.cache_clear()
    e = load_embedder(str(tiny_clip), "cpu", "int8")
    folder = svcluster_cache / "onnx" / e.revision / "32x32"
    files = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    assert {"vision-fp32.onnx", "vision-int8.onnx"} <= set(files)
    load_embedder.cache_clear()
    again = load_embedder(str(tiny_clip), "cpu", "int8")
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == files  # not exported again
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    ref = load_embedder(str(tiny_clip), "cpu", "fp32", "torch").embed(x)
    assert ((again.embed(x) * ref).sum(1) > 0.99).all()
    assert ((load_embedder(str(tiny_clip), "cpu", "fp32").embed(x) * ref).sum(1) > 0.99999).all()
    load_embedder.cache_clear()


def test_auto_follows_cpu_flags_and_the_cached_probe(svcluster_cache, monkeypatch):
    probe = svcluster_cache / "cpu-probe.json"
    native = precision.cpu_has_native_bf16()
    assert native == bool(precision.cpu_flags() & {"avx512_bf16", "amx_bf16"}) or "AMX" in str(
        __import__("torch").backends.cpu.get_cpu_capability()
    )
    try:
        for speedup, expect_bf16 in ((2.0, native), (0.6, False)):
            probe.write_text(json.dumps({"machine": precision._machine_key(), "bf16_speedup": speedup}))
            precision.bf16_speedup.cache_clear()
            assert precision.resolve_precision("auto", "cpu") == ("bf16" if expect_bf16 else "fp32")
        # No native bf16: auto never picks it, whatever a probe said.
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
        probe.write_text(json.dumps({"machine": precision._machine_key(), "bf16_speedup": 5.0}))
        precision.bf16_speedup.cache_clear()
        assert precision.resolve_precision("auto", "cpu") == "fp32"
    finally:
        probe.unlink(missing_ok=True)
        precision.bf16_speedup.cache_clear()
    assert precision.resolve_precision("auto", "mps") == "fp32"
    assert precision.resolve_precision("auto", "cpu", baseline=True) == "fp32"
    for args, message in (
        (("fp16", "cpu"), "fp16 is for GPUs"),
        (("int8", "cuda"), "int8 runs on the CPU only"),
        (("int8-static", "mps"), "int8-static runs on the CPU only"),
        (("bf16", "mps"), "not supported"),
        (("fp64", "cpu"), "--precision must be one of"),
    ):
        with pytest.raises(SvclusterError, match=message):
            precision.resolve_precision(*args)
    with pytest.raises(SvclusterError, match="baseline computes its descriptor in fp32 only"):
        precision.resolve_precision("int8", "cpu", baseline=True)


def planted(seed: int = 1, clusters: int = 10, per: int = 20, dim: int = 32, spread: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * spread
    return np.concatenate([c + rng.normal(size=(per, dim)) for c in centres])


def test_the_gate_passes_identical_vectors_and_fails_noisy_ones():
    ref = planted()
    same = compare_vectors(ref, ref.copy())
    assert same.cosine_min > 0.99999 and same.neighbour_agreement == 1.0 and same.ari == 1.0 and same.passed
    noisy = compare_vectors(ref, ref + np.random.default_rng(2).normal(size=ref.shape) * 8)
    assert noisy.cosine_median < 0.95 and noisy.neighbour_agreement < 0.5 and noisy.ari < noisy.ari_seed_noise
    assert not noisy.passed


def test_neighbour_agreement_counts_shared_nearest_neighbours():
    # Points on a line: each one's nearest neighbours are its index neighbours. Swapping two
    # far-apart points changes the neighbour sets of exactly those two and their neighbours.
    angles = np.linspace(0, np.pi / 2, 40)
    ref = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert neighbour_agreement(ref, ref, 2) == 1.0
    swapped = ref.copy()
    swapped[[0, 39]] = swapped[[39, 0]]
    # by hand, with 2 neighbours: rows 0 and 39 keep neither; rows 1 and 38 keep one of two
    assert neighbour_agreement(ref, swapped, 2) == pytest.approx((40 - 2 - 2 / 2) / 40)


def test_kmeans_agreement_is_judged_against_kmeans_own_seed_noise():
    # Overlapping clusters: K-means with one init lands differently from seed to seed, so the
    # ARI between fp32 seeds is well below 1; a tiny precision error moves labels no more than
    # that and passes, where a fixed "ARI >= 0.95" would have failed it.
    ref = planted(seed=3, clusters=12, per=15, dim=16, spread=0.9)
    tiny = ref + np.random.default_rng(4).normal(size=ref.shape) * 1e-4
    g = compare_vectors(ref, tiny, k=12)
    assert g.ari_seed_noise < 0.9
    assert g.ari >= g.ari_seed_noise and g.cosine_median > 0.9999 and g.passed


def test_check_precision_gate_and_cli(small_lake_map, tiny_clip, capsys):
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:8], kinds={loc: ("desert" if i % 2 else "forest") for i, loc in enumerate(ids[:8])})
    c = check_precision(lake, map_name, opts(tiny_clip, "int8"), sample=24, k=4)
    assert c.views == 24 and c.precision == "int8" and c.runtime == "onnxruntime" and c.k == 4
    assert 0.99 < c.cosine_min <= c.cosine_median <= 1.0
    assert 0 <= c.neighbour_agreement <= 1 and 0 <= c.ari_seed_noise <= 1
    assert c.passed == (c.cosine_median >= 0.995 and c.neighbour_agreement >= 0.9 and c.ari >= c.ari_seed_noise)
    assert 0 < c.reference_spread < 2
    assert c.images_per_second > 0 and c.reference_images_per_second > 0
    code = cli_main(["--lake", lake.uri, "--json", "embed", "--map", map_name, "--model", str(tiny_clip),
                     "--precision", "bf16", "--check-precision", "--check-sample", "16", "--device", "cpu"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["precision"] == "bf16" and doc["views"] == 16 and code == (0 if doc["passed"] else 1)
    assert lake.query("SELECT count(*) FROM embeddings").column(0)[0].as_py() == 0  # the check writes nothing



def test_bf16_on_cpu_runs_the_whole_tower_in_bf16_close_to_fp32(tiny_clip):
    import torch
    from transformers import CLIPModel

    from svcluster.tasks.embed.models import l2_normalise

    load_embedder.cache_clear()
    x = np.random.default_rng(2).normal(size=(5, 3, 32, 32)).astype(np.float32)
    ours = load_embedder(str(tiny_clip), "cpu", "bf16", "torch").embed(x)
    load_embedder.cache_clear()
    reference = CLIPModel.from_pretrained(tiny_clip).eval()
    with torch.inference_mode():
        fp32 = l2_normalise(reference.get_image_features(pixel_values=torch.from_numpy(x)).pooler_output.numpy())
        reference.to(torch.bfloat16)  # every weight, norm and activation in bf16, no autocast
        bf16 = reference.get_image_features(pixel_values=torch.from_numpy(x).to(torch.bfloat16)).pooler_output
    bf16 = l2_normalise(bf16.float().numpy())
    assert not np.array_equal(ours, fp32)  # it did run in bf16
    assert (ours * fp32).sum(axis=1).min() > 0.999
    assert (ours * bf16).sum(axis=1).min() > 0.9999  # as close to a plain bf16 tower as bf16 allows


def test_folding_quick_gelu_into_the_linear_layers_keeps_the_function(tiny_clip):
    import torch
    from transformers import CLIPModel

    reference = CLIPModel.from_pretrained(tiny_clip).eval()
    folded = CLIPModel.from_pretrained(tiny_clip).eval()
    assert folded.config.vision_config.hidden_act == "quick_gelu"
    layers = folded.config.vision_config.num_hidden_layers + folded.config.text_config.num_hidden_layers
    assert precision.fold_quick_gelu(folded) == layers
    assert precision.fold_quick_gelu(folded) == 0  # already folded: nothing left to rewrite
    assert all(type(m.activation_fn) is torch.nn.SiLU for m in folded.vision_model.encoder.layers.modules() if hasattr(m, "fc1"))
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(4, 3, 32, 32)).astype(np.float32))
    with torch.inference_mode():
        want = reference.get_image_features(pixel_values=x).pooler_output
        got = folded.get_image_features(pixel_values=x).pooler_output
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(folded.vision_model.encoder.layers[0].mlp.fc1.weight, reference.vision_model.encoder.layers[0].mlp.fc1.weight)


def test_cast_matmul_weights_casts_linear_and_conv_layers_only(tiny_clip):
    """What the CUDA path does before autocast: weights cast once instead of on every call."""
    import torch
    from transformers import CLIPModel

    reference = CLIPModel.from_pretrained(tiny_clip).eval()
    precision.cast_matmul_weights(reference, torch.bfloat16)
    kinds = {type(m).__name__: {p.dtype for p in m.parameters(recurse=False)} for m in reference.vision_model.modules()}
    assert kinds["Linear"] == kinds["Conv2d"] == {torch.bfloat16}
    assert kinds["LayerNorm"] == kinds["Embedding"] == {torch.float32}
