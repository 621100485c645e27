"""StreetCLIP-sized embedding on a CPU: fp32 eager against every precision path, with quality.

Model: a CLIP with ViT-L/14-336 vision dimensions (24 layers, width 1024, patch 14, 336 px,
projection 768 — StreetCLIP's image tower), random weights, saved locally and loaded by path.
Data: ``--views`` 640x640 JPEG views, preprocessed once (the model's 336 px processor).
For each path the model alone is timed on the same prepared batch (``--batch-size``) with
``--threads`` torch/ONNX Runtime threads, and its vectors are compared with fp32 eager (the
reference, exactly ``get_image_features``): per-view cosine (min / median) and the ARI between
K-means (k=10, seeded) on both sets — the numbers ``svcluster embed --check-precision`` prints.
Paths: fp32 eager (torch), fp32 ONNX Runtime, bf16 (torch, the whole tower in bf16), int8 dynamic (ONNX
Runtime), and ``auto`` (what this machine resolves it to). One-off ONNX export / quantisation
times are printed separately (they are cached on disk for later runs).

Run: ``python benchmarks/embed_large.py [--quick] [--views 64] [--threads 2]``.
Target: auto >= 2.5x fp32 eager with median cosine >= 0.995 and ARI >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.embed import VIT_B32, VIT_L14_336, build_clip, street_jpeg  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ViT-B/32 dimensions, 32 views (a smoke run)")
    ap.add_argument("--views", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="", help="ONNX export cache (default: a temp folder, so the export is timed)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SVCLUSTER_CACHE"] = args.cache or str(Path(tmp) / "cache")
        from svcluster.tasks.embed.models import load_embedder
        from svcluster.tasks.embed.precision import bf16_speedup, cpu_flags, cpu_has_native_bf16, resolve_precision
        from svcluster.tasks.embed.precision_check import compare_vectors, timed_embed
        from svcluster.tasks.embed.preprocess import decode_image

        vision, proj, views = (VIT_B32, 512, 32) if args.quick else (VIT_L14_336, 768, args.views)
        folder = build_clip(Path(tmp) / "clip", vision, proj)
        ref = load_embedder(str(folder), "cpu", "fp32", "torch")
        pixels = np.stack([ref.prepare(decode_image(street_jpeg(i))) for i in range(views)])
        flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni", "avx_vnni"})
        auto = resolve_precision("auto", "cpu")
        print(f"machine: {os.cpu_count()} cores, {args.threads} threads; flags {', '.join(flags) or '-'}; "
              f"native bf16 {cpu_has_native_bf16()}, bf16/fp32 matmul speed {bf16_speedup():.2f}x -> auto = {auto}")
        print(f"model: vision {vision['num_hidden_layers']}x{vision['hidden_size']} @ {vision['image_size']} px; "
              f"{views} views, batch {args.batch_size}", flush=True)
        # The load from other processes varies: the reference is timed on half the views first
        # and the other half last, and the rates are averaged.
        half = views // 2
        ref_a, rate_a = timed_embed(ref, pixels[:half], args.batch_size)
        print(f"{'fp32 eager (torch)':28s} {rate_a:6.3f} img/s  (first half of the reference)", flush=True)
        paths = [("fp32 ONNX Runtime", "fp32", "auto"), ("bf16 (torch)", "bf16", "torch"),
                 ("int8 dynamic (ONNX Runtime)", "int8", "auto")]
        results, vectors, setups = {}, {}, {}
        for label, prec, runtime in paths:
            t = time.perf_counter()
            emb = load_embedder(str(folder), "cpu", prec, runtime)
            setup = time.perf_counter() - t
            vectors[prec], results[prec] = timed_embed(emb, pixels, args.batch_size)
            setups[prec] = setup
            print(f"{label:28s} {results[prec]:6.3f} img/s  (load/export/quantise once: {setup:.0f} s)", flush=True)
        ref_b, rate_b = timed_embed(ref, pixels[half:], args.batch_size)
        ref_vecs, ref_rate = np.concatenate([ref_a, ref_b]), (rate_a + rate_b) / 2
        from svcluster.tasks.embed.precision_check import pairwise_spread

        print(f"\n{'fp32 eager (torch)':28s} {ref_rate:6.3f} img/s  1.00x  (reference; {rate_a:.3f} first, {rate_b:.3f} last); "
              f"spread between views (median cosine distance) {pairwise_spread(ref_vecs):.5f}")
        for label, prec, _ in paths:
            g = compare_vectors(ref_vecs, vectors[prec], k=10)
            print(f"{label:28s} {results[prec]:6.3f} img/s  {results[prec] / ref_rate:4.2f}x  cosine min {g.cosine_min:.4f} "
                  f"median {g.cosine_median:.4f}  neighbours@{g.neighbours} {g.neighbour_agreement:.3f}  "
                  f"ARI(k={g.k}) {g.ari:.3f} vs fp32 seed noise {g.ari_seed_noise:.3f}  {'pass' if g.passed else 'FAIL'}")
        auto_rate = results.get(auto, ref_rate)
        print(f"auto = {auto}: {auto_rate / ref_rate:.2f}x fp32 eager (target >= 2.5x); "
              f"fastest path here: {max(results, key=results.get)} {max(results.values()) / ref_rate:.2f}x")


if __name__ == "__main__":
    main()
