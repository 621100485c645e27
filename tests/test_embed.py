"""The embed step with a tiny CLIP loaded by path, a real lake and real images.

Pooling is checked against an independent computation (the model's own processor and
``get_image_features`` one view at a time), stitched mode against the processor on the strip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel

from svcluster.flows.cli import main as cli_main
from svcluster.tasks.embed.step import EmbedOptions, embed_batch, embed_map, plan_embed, pool_views
from svcluster.tasks.errors import LakeError, NotFoundError, SvclusterError
from svcluster.tasks.embed.models import model_key, text_features
from tests.fixtures.models import add_views, jpeg_bytes, scene_image

REPO = Path(__file__).resolve().parents[1]


def reference_vectors(folder: Path, images: list[Image.Image]) -> np.ndarray:
    """The model's own processor + get_image_features, one image at a time, L2-normalised."""
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPImageProcessor.from_pretrained(folder)
    out = []
    with torch.inference_mode():
        for img in images:
            pixels = processor(images=img, return_tensors="pt")["pixel_values"]
            v = model.get_image_features(pixel_values=pixels).pooler_output[0].numpy()
            out.append(v / np.linalg.norm(v))
    return np.stack(out)


def embeddings(lake, pooling: str = "mean") -> dict[str, dict]:
    rows = lake.query("SELECT * FROM embeddings WHERE pooling = ?", [pooling]).to_pylist()
    return {r["location_id"]: r for r in rows}


COUNT_SQL = {"embeddings": "SELECT count(*) FROM embeddings", "embedding_views": "SELECT count(*) FROM embedding_views"}
def rows_written(lake, table: str) -> int:
    """Rows every write of ``table`` added or replaced (appends and merges), from its Delta history."""
    return sum((c.rows_added or 0) + (c.rows_updated or 0) for c in lake.history(table) if c.operation in ("WRITE", "MERGE"))


def raw_count(lake, table: str) -> int:
    return lake.query(COUNT_SQL[table]).column(0)[0].as_py()


def options(tiny_clip, **kw) -> EmbedOptions:
    base = dict(model=str(tiny_clip), device="cpu", precision="fp32", batch_size=3, locations_per_batch=2, workers=2)
    base.update(kw)
    return EmbedOptions(**base)


def test_mean_pooling_matches_independent_per_view_computation(small_lake_map, tiny_clip):
    lake, map_name, ids = small_lake_map
    locs = ids[:5]
    status = {(locs[1], 90): "failed", (locs[1], 270): "no_imagery"} | {(locs[4], h): "no_imagery" for h in (0, 90, 180, 270)}
    stored = add_views(lake, locs, status=status)
    result = embed_map(lake, map_name, options(tiny_clip))

    assert result.locations == 20 and result.locations_with_views == 4 and result.locations_embedded == 4
    assert result.locations_without_views == 16 and result.views_embedded == 14 and result.dim == 24
    assert result.model == str(tiny_clip.resolve()) == model_key(str(tiny_clip))
    assert result.model_revision.startswith("folder-") and result.precision == "fp32"
    got = embeddings(lake)
    assert set(got) == set(locs[:4])  # the location without any ok view gets no embedding
    views = {(r["location_id"], r["heading"]): r for r in lake.query("SELECT * FROM embedding_views").to_pylist()}
    assert set(views) == set(stored)
    keys = sorted(stored)
    ref = dict(zip(keys, reference_vectors(tiny_clip, [stored[k] for k in keys])))
    for key in keys:
        np.testing.assert_allclose(views[key]["vector"], ref[key], atol=2e-5)
    for loc in locs[:4]:
        own = np.stack([ref[k] for k in keys if k[0] == loc])
        pooled = own.mean(0)
        pooled /= np.linalg.norm(pooled)
        row = got[loc]
        assert row["view_count"] == len(own) and row["dim"] == 24 and row["model_revision"] == result.model_revision
        np.testing.assert_allclose(row["vector"], pooled, atol=2e-5)
        assert abs(np.linalg.norm(row["vector"]) - 1) < 1e-5
    assert got[locs[1]]["view_count"] == 2


def test_stitched_reproduces_the_notebook_strip(small_lake_map, tiny_clip):
    lake, map_name, ids = small_lake_map
    locs = ids[:3]
    stored = add_views(lake, locs, status={(locs[2], 180): "failed"})
    result = embed_map(lake, map_name, options(tiny_clip, pooling="stitched"))
    assert result.locations_embedded == 3 and result.views_embedded == 11
    strips = []
    for loc in locs:
        views = [stored[(loc, h)] for h in (0, 90, 180, 270) if (loc, h) in stored]
        strip = Image.new("RGB", (sum(v.width for v in views), views[0].height))
        for i, v in enumerate(views):
            strip.paste(v, (i * v.width, 0))
        strips.append(strip)
    ref = reference_vectors(tiny_clip, strips)
    got = embeddings(lake, "stitched")
    for loc, vec in zip(locs, ref):
        np.testing.assert_allclose(got[loc]["vector"], vec, atol=2e-5)
    assert [got[loc]["view_count"] for loc in locs] == [4, 4, 3]
    assert raw_count(lake, "embedding_views") == 0  # stitched keeps no per-view vectors
    # Mean and stitched are different vector sets side by side.
    embed_map(lake, map_name, options(tiny_clip))
    assert len(embeddings(lake, "mean")) == 3 and len(embeddings(lake, "stitched")) == 3


def test_incremental_rerun_new_views_and_no_duplicates(small_lake_map, tiny_clip):
    lake, map_name, ids = small_lake_map
    opts = options(tiny_clip)
    add_views(lake, ids[:4], headings=(0, 90))
    first = embed_map(lake, map_name, opts)
    assert first.locations_embedded == 4 and first.views_embedded == 8
    files = lake.table_files("embeddings") + lake.table_files("embedding_views")

    again = embed_map(lake, map_name, opts)
    assert again.locations_embedded == 0 and again.locations_up_to_date == 4 and again.model_revision is None
    assert plan_embed(lake, map_name, opts) == []
    assert lake.table_files("embeddings") + lake.table_files("embedding_views") == files

    # A resumed fetch adds two views to one location and a new location: only those are redone,
    # and the location's existing view vectors are re-pooled, not recomputed.
    add_views(lake, [ids[0]], headings=(180, 270))
    add_views(lake, [ids[5]], headings=(0,))
    assert plan_embed(lake, map_name, opts) == [[ids[0], ids[5]]]
    third = embed_map(lake, map_name, opts)
    assert third.locations_embedded == 2 and third.views_embedded == 3 and third.views_reused == 2
    got = embeddings(lake)
    assert got[ids[0]]["view_count"] == 4 and len(got) == 5
    views = lake.query("SELECT * FROM embedding_views WHERE location_id = ? ORDER BY heading", [ids[0]]).to_pylist()
    np.testing.assert_allclose(got[ids[0]]["vector"], pool_views(np.array([v["vector"] for v in views])), atol=1e-6)
    # Rows written in all: 4 + 2 locations, 8 + 3 views (re-pooled views are not written again).
    assert rows_written(lake, "embeddings") == 6
    assert rows_written(lake, "embedding_views") == 11
    assert raw_count(lake, "embeddings") == 5 and raw_count(lake, "embedding_views") == 11


def test_new_weights_in_a_model_folder_are_embedded_again(small_lake_map, tmp_path):
    from svcluster.tasks.embed.models import load_embedder
    from tests.fixtures.models import build_tiny_clip

    lake, map_name, ids = small_lake_map
    folder = build_tiny_clip(tmp_path / "clip", seed=0)
    opts = options(folder)
    add_views(lake, ids[:3], headings=(0, 90))
    first = embed_map(lake, map_name, opts)
    assert first.locations_embedded == 3 and plan_embed(lake, map_name, opts) == []
    build_tiny_clip(folder, seed=1)  # the same folder, retrained: another revision
    load_embedder.cache_clear()
    assert [loc for batch in plan_embed(lake, map_name, opts) for loc in batch] == ids[:3]
    second = embed_map(lake, map_name, opts)
    assert second.model_revision != first.model_revision
    assert second.locations_embedded == 3 and second.views_embedded == 6 and second.views_reused == 0
    assert {r["model_revision"] for r in embeddings(lake).values()} == {second.model_revision}
    assert plan_embed(lake, map_name, opts) == []
    load_embedder.cache_clear()


def test_a_crash_loses_at_most_one_batch_and_a_rerun_resumes(small_lake_map, tiny_clip, monkeypatch):
    lake, map_name, ids = small_lake_map
    opts = options(tiny_clip, locations_per_batch=2)
    add_views(lake, ids[:4], headings=(0, 90))
    # The lake stops answering for the third location's blob (a storage error, not a bad image):
    # the first batch is written, the error stops the run.
    path = lake.query("SELECT path FROM images WHERE location_id = ? AND heading = 90", [ids[2]]).column(0)[0].as_py()
    real = lake.read_bytes

    def flaky(relpath):
        if relpath == path:
            raise LakeError(f"cannot read {relpath} in the lake at {lake.uri}: connection reset")
        return real(relpath)

    monkeypatch.setattr(lake, "read_bytes", flaky)
    with pytest.raises(LakeError, match="connection reset"):
        embed_map(lake, map_name, opts)
    assert set(embeddings(lake)) == set(ids[:2])
    monkeypatch.undo()
    rerun = embed_map(lake, map_name, opts)
    assert rerun.locations_embedded == 2 and rerun.locations_up_to_date == 2 and rerun.views_failed == 0
    assert set(embeddings(lake)) == set(ids[:4])


@pytest.mark.parametrize("pooling", ["mean", "stitched"])
def test_a_broken_blob_is_left_out_marked_failed_and_the_rest_embedded(small_lake_map, tiny_clip, pooling):
    lake, map_name, ids = small_lake_map
    opts = options(tiny_clip, locations_per_batch=2, pooling=pooling)
    add_views(lake, ids[:4], headings=(0, 90))
    path, sha = lake.put_blob(b"definitely not a jpeg", "jpg")
    lake.append("images", pa.table({"location_id": [ids[2]], "heading": [90], "status": ["ok"], "path": [path], "sha256": [sha]}))
    result = embed_map(lake, map_name, opts)
    assert result.locations_embedded == 4 and result.views_failed == 1
    assert result.failure_reasons == {"blob unreadable": 1}
    row = lake.query("SELECT status, reason, path FROM images WHERE location_id = ? AND heading = 90", [ids[2]]).to_pylist()[0]
    assert row["status"] == "failed" and row["path"] == path
    assert row["reason"].startswith("blob unreadable: not a JPEG") and " at 0x" not in row["reason"]
    assert embeddings(lake, pooling)[ids[2]]["view_count"] == 1
    # The view is fetched again (fixed); the rerun does only that location.
    data = jpeg_bytes(scene_image("forest", 5))
    good, good_sha = lake.put_blob(data, "jpg")
    lake.append("images", pa.table({"location_id": [ids[2]], "heading": [90], "status": ["ok"], "path": [good], "sha256": [good_sha]}))
    rerun = embed_map(lake, map_name, opts)
    assert rerun.locations_embedded == 1 and rerun.locations_up_to_date == 3
    assert embeddings(lake, pooling)[ids[2]]["view_count"] == 2


def test_embed_batch_on_an_s3_lake_with_the_baseline(s3_lake, small_map):
    from svcluster.tasks.ingest.step import ingest_map
    from tests.fixtures.models import map_location_ids

    ingest_map(s3_lake, small_map, "small")
    ids = map_location_ids(s3_lake, "small")
    add_views(s3_lake, ids[:3], headings=(0, 90), kinds={ids[0]: "desert", ids[1]: "desert", ids[2]: "forest"})
    opts = EmbedOptions(model="baseline", batch_size=4)
    batches = plan_embed(s3_lake, "small", opts)
    assert batches == [ids[:3]]
    stats = embed_batch(s3_lake.uri, batches[0], opts)
    assert stats.locations == 3 and stats.views_embedded == 6
    got = embeddings(s3_lake)
    vec = {k: np.array(v["vector"]) for k, v in got.items()}
    assert all(v["model"] == "baseline" and v["precision"] == "fp32" and v["dim"] == 376 for v in got.values())
    assert vec[ids[0]] @ vec[ids[1]] > vec[ids[0]] @ vec[ids[2]]


def test_missing_models_say_how_to_get_them(tmp_path, monkeypatch, small_lake_map):
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:1], headings=(0,))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotFoundError, match=r"no-such-org/no-such-clip.*hf download no-such-org/no-such-clip.*--model /path/to/folder"):
        embed_map(lake, map_name, EmbedOptions(model="no-such-org/no-such-clip", device="cpu", precision="fp32"))
    with pytest.raises(NotFoundError, match="model folder './missing/clip' does not exist"):
        embed_map(lake, map_name, EmbedOptions(model="./missing/clip", device="cpu", precision="fp32"))
    with pytest.raises(NotFoundError, match="map 'nope' is not in the lake"):
        embed_map(lake, "nope", EmbedOptions(model="baseline"))
    with pytest.raises(SvclusterError, match="--pooling must be mean or stitched"):
        embed_map(lake, map_name, EmbedOptions(model="baseline", pooling="max"))
    assert raw_count(lake, "embeddings") == 0


def test_text_features_for_cluster_naming(tiny_clip):
    prompts = ["a photo of a desert road", "a photo of a forest", "a city street"]
    feats = text_features(str(tiny_clip), prompts)
    assert feats.shape == (3, 24) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(tiny_clip)(prompts[:1], return_tensors="pt")
    with torch.inference_mode():
        ref = model.get_text_features(**tokens).pooler_output[0].numpy()
    np.testing.assert_allclose(feats[0], ref / np.linalg.norm(ref), atol=1e-5)
    assert text_features("baseline", prompts) is None


def test_cli_embeds_a_hub_model_from_the_cache_offline(small_lake_map, tiny_clip, tmp_path):
    """`svcluster embed --model org/name` resolves through HF_HOME's hub cache, offline, and
    records the snapshot's commit hash as the revision; --json prints the result."""
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:2], headings=(0, 180))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-clip"
    shutil.copytree(tiny_clip, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SVCLUSTER_ONNX": "0"}
    cmd = [sys.executable, "-c", "from svcluster.flows.cli import main; main()", "--lake", lake.uri, "embed", "--map", map_name,
           "--model", "tiny-org/tiny-clip", "--precision", "fp32", "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["model"] == "tiny-org/tiny-clip" and doc["model_revision"] == commit
    assert doc["locations_embedded"] == 2 and doc["views_embedded"] == 4
    rows = lake.query("SELECT DISTINCT model, model_revision FROM embeddings").to_pylist()
    assert rows == [{"model": "tiny-org/tiny-clip", "model_revision": commit}]


def test_cli_summary_and_errors(small_lake_map, capsys):
    lake, map_name, ids = small_lake_map
    add_views(lake, ids[:2], headings=(0,))
    assert cli_main(["--lake", lake.uri, "embed", "--map", map_name, "--model", "baseline"]) == 0
    out = capsys.readouterr().out
    assert "2 locations embedded with baseline (mean, fp32, cpu, numpy)" in out and "18 places have not been fetched yet: run `svcluster fetch --map" in out
    assert cli_main(["--lake", lake.uri, "embed", "--map", map_name, "--model", "baseline", "--device", "tpu"]) == 1
    assert "--device must be one of" in capsys.readouterr().err


def test_decoding_waits_while_the_model_runs_on_the_cpu():
    import threading

    from svcluster.tasks.embed.step import ModelTurns

    turns = ModelTurns(enabled=True)
    model_started, model_may_finish, decoder_started = threading.Event(), threading.Event(), threading.Event()

    def model():
        model_started.set()
        assert model_may_finish.wait(5)
        return "vectors"

    def decoder():
        model_started.wait(5)
        turns.wait_for_cpu()
        decoder_started.set()

    thread = threading.Thread(target=decoder)
    thread.start()
    runner = threading.Thread(target=lambda: turns.run(model))
    runner.start()
    assert model_started.wait(5)
    assert not decoder_started.wait(0.3)  # held while the model runs
    model_may_finish.set()
    assert decoder_started.wait(5)  # and let go when it returns
    thread.join(5), runner.join(5)

    def failing():
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError):
        turns.run(failing)
    done = threading.Event()
    threading.Thread(target=lambda: (turns.wait_for_cpu(), done.set())).start()
    assert done.wait(5)  # a failed model run does not leave decoding blocked

    off = ModelTurns(enabled=False)  # on a GPU: no turns
    assert off.run(lambda: (off.wait_for_cpu(), "ran")[1]) == "ran"
