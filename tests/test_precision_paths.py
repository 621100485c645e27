"""Every CPU precision path on the tiny CLIP gives vectors close to fp32 eager, and the one-off
work behind the ONNX paths (export, int8 quantisation, int8-static's calibration on the first
views) is done once and reused from the cache: seen by the files' modification times and by
``onnx_export.made`` (what this process wrote), not by replacing our code."""

from __future__ import annotations

import numpy as np
import pytest

from svcluster.tasks.embed import onnx_export
from svcluster.tasks.embed.models import load_embedder
from svcluster.tasks.embed.precision import cpu_paths


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch, svcluster_cache):
    """An empty cache folder for this test alone (nothing exported yet)."""
    monkeypatch.setenv("SVCLUSTER_CACHE", str(tmp_path / "cache"))
    load_embedder.cache_clear()
    yield tmp_path / "cache"
    load_embedder.cache_clear()


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("path", cpu_paths(), ids="/".join)
def test_every_cpu_path_gives_vectors_close_to_fp32_eager(path, tiny_clip, fresh_cache):
    x = pixels(6)
    reference = load_embedder(str(tiny_clip), "cpu", "fp32", "torch").embed(x)
    emb = load_embedder(str(tiny_clip), "cpu", *path)
    assert (emb.precision, emb.runtime) == path
    got = emb.embed(x)
    assert got.shape == reference.shape and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cosine = (got * reference).sum(axis=1)
    assert cosine.min() > (0.99999 if path[0] == "fp32" else 0.99)


def test_int8_static_is_calibrated_once_on_its_first_views_then_reused(tiny_clip, fresh_cache):
    x = pixels(8)
    emb = load_embedder(str(tiny_clip), "cpu", "int8-static")
    folder = emb._run.path.parent
    assert folder.is_relative_to(fresh_cache) and folder.name == "32x32"
    # Loading exported fp32; the calibration waits for views.
    assert sorted(f.name for f in folder.glob("*.onnx")) == ["vision-fp32.onnx"]
    made = onnx_export.made.copy()
    first = emb.embed(x)
    assert onnx_export.made - made == {"int8-static": 1}
    assert sorted(f.name for f in folder.glob("*.onnx")) == ["vision-fp32.onnx", "vision-int8-static.onnx"]
    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}

    load_embedder.cache_clear()
    again = load_embedder(str(tiny_clip), "cpu", "int8-static")
    assert again._run.session is not None  # opened from the cache at load, not calibrated anew
    second = again.embed(pixels(3, seed=5))  # other views: the ranges are those of the first ones
    assert onnx_export.made - made == {"int8-static": 1}
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamps
    np.testing.assert_allclose(again.embed(x), first, atol=1e-6)
    assert second.shape == (3, first.shape[1])
    # Fixed ranges: a view's vector does not depend on the other views in its batch.
    np.testing.assert_allclose(again.embed(x[:3]), first[:3], atol=1e-6)


def test_the_export_and_the_dynamic_int8_are_made_once(tiny_clip, fresh_cache):
    made = onnx_export.made.copy()
    load_embedder(str(tiny_clip), "cpu", "int8")
    assert onnx_export.made - made == {"fp32": 1, "int8": 1}
    load_embedder.cache_clear()
    load_embedder(str(tiny_clip), "cpu", "int8")
    load_embedder(str(tiny_clip), "cpu", "fp32")
    assert onnx_export.made - made == {"fp32": 1, "int8": 1}


def test_int8_static_needs_views_to_calibrate(tiny_clip, fresh_cache):
    from transformers import CLIPModel

    from svcluster.tasks.errors import SvclusterError

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    with pytest.raises(SvclusterError, match="calibrated on views"):
        onnx_export.exported_model(model, "rev-a", "int8-static", (32, 32))
    with pytest.raises(SvclusterError, match="no ONNX path"):
        onnx_export.exported_model(model, "rev-a", "bf16", (32, 32))


def test_check_precision_calibrates_int8_static_on_the_maps_own_views(small_lake_map, tiny_clip, fresh_cache):
    from svcluster.tasks.embed.precision_check import check_precision
    from svcluster.tasks.embed.step import EmbedOptions
    from tests.fixtures.models import add_views

    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:6], kinds={loc: ("desert" if i % 2 else "forest") for i, loc in enumerate(ids[:6])})
    made = onnx_export.made.copy()
    options = EmbedOptions(model=str(tiny_clip), device="cpu", precision="int8-static", batch_size=8, workers=2)
    c = check_precision(lake, map_name, options, sample=16, k=3)
    assert onnx_export.made - made == {"fp32": 1, "int8-static": 1}  # calibrated here, on the map's views
    assert c.precision == "int8-static" and c.runtime == "onnxruntime" and c.views == 16
    assert c.cosine_median > 0.99 and c.passed == (c.cosine_median >= 0.995 and c.neighbour_agreement >= 0.9 and c.ari >= c.ari_seed_noise)
    assert list(fresh_cache.rglob("vision-int8-static.onnx"))
