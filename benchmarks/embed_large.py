"""StreetCLIP-sized embedding on a CPU: fp32 eager against every precision path, and what auto picks.

Model: a CLIP with ViT-L/14-336 vision dimensions (24 layers, width 1024, patch 14, 336 px,
projection 768 — StreetCLIP's image tower), random weights, saved locally and loaded by path.
Data: ``--views`` 640x640 JPEG views, preprocessed once (the model's 336 px processor).
Paths: every one this CPU offers (``precision.cpu_paths``: fp32 eager in torch — the
reference, exactly ``get_image_features`` — fp32 ONNX Runtime, bf16 in torch with native bf16,
int8 dynamic and int8-static through ONNX Runtime). All are loaded side by side and warmed up on
one batch (int8-static is calibrated on that batch, as in the embed step; the one-off
load/export/calibration is printed separately, cached on disk afterwards); then the model
alone is timed on the same prepared views (``--batch-size``, ``--threads``), every path on each
batch in turn, so that a burst of load from other processes hits them all; a path's speed-up is
the median over batches of the reference's time on the batch over its own. Each path's vectors go through the quality gate against
fp32 eager (``precision_check.compare_vectors``: cosine min/median, neighbour agreement, K-means
ARI beside the seed-vs-seed ARI). Then ``auto`` is decided by the rule the embed step uses
(``precision_auto.pick_path``: the fastest path faster than fp32 eager that passes the gate)
and its speed-up printed against the target.

Run: ``python benchmarks/embed_large.py [--quick] [--views 32] [--threads 2] [--paths ...] [--cache DIR]``.
Target: auto >= 2.5x fp32 eager with the gate passing.
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

TARGET = 2.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ViT-B/32 dimensions (a smoke run)")
    ap.add_argument("--views", type=int, default=32, help="views timed per path (ViT-L fp32 eager: ~3 s each on 2 cores)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", nargs="*", default=None, metavar="PRECISION/RUNTIME",
                    help="only these paths besides the reference, e.g. int8/onnxruntime int8-static/onnxruntime")
    ap.add_argument("--cache", default="", help="export/calibration cache (default: a temp folder, so the one-off costs are timed)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SVCLUSTER_CACHE"] = args.cache or str(Path(tmp) / "cache")
        from svcluster.tasks.embed.models import load_embedder
        from svcluster.tasks.embed.precision import cpu_flags, cpu_paths
        from svcluster.tasks.embed.precision_auto import REFERENCE, pick_path
        from svcluster.tasks.embed.precision_check import compare_vectors, pairwise_spread
        from svcluster.tasks.embed.preprocess import decode_image

        vision, proj = (VIT_B32, 512) if args.quick else (VIT_L14_336, 768)
        folder = build_clip(Path(tmp) / "clip", vision, proj)
        ref = load_embedder(str(folder), "cpu", *REFERENCE)
        pixels = np.stack([ref.prepare(decode_image(street_jpeg(i))) for i in range(args.views)])
        flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni", "avx_vnni"})
        print(f"machine: {os.cpu_count()} cores, {args.threads} threads; flags {', '.join(flags) or '-'}; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"model: vision {vision['num_hidden_layers']}x{vision['hidden_size']} @ {vision['image_size']} px; "
              f"{args.views} views, batch {args.batch_size}", flush=True)
        paths = [p for p in cpu_paths() if p != REFERENCE]
        if args.paths is not None:
            paths = [p for p in paths if "/".join(p) in args.paths]
        embedders, setups = {REFERENCE: ref}, {}
        for path in paths:
            start = time.perf_counter()
            embedders[path] = load_embedder(str(folder), "cpu", *path)
            embedders[path].embed(pixels[: args.batch_size])  # warm-up; int8-static's calibration when not cached
            setups[path] = time.perf_counter() - start
            print(f"{' '.join(path):24s} ready: load/export/calibrate + warm-up once {setups[path]:.0f} s", flush=True)
        ref.embed(pixels[: args.batch_size])
        # Other processes' load varies within seconds: every path runs each batch in turn (the
        # same moments), and a path's speed-up is the median over batches of its time beside
        # the reference's on the same batch.
        order = [REFERENCE, *paths]
        seconds = {p: [] for p in order}
        out = {p: [] for p in order}
        for i in range(0, args.views, args.batch_size):
            batch = pixels[i : i + args.batch_size]
            for path in order if (i // args.batch_size) % 2 == 0 else reversed(order):
                start = time.perf_counter()
                out[path].append(embedders[path].embed(batch))
                seconds[path].append(time.perf_counter() - start)
        vectors = {p: np.concatenate(v) for p, v in out.items()}
        rates = {p: args.views / sum(s) for p, s in seconds.items()}
        speedups = {p: float(np.median(np.array(seconds[REFERENCE]) / np.array(s))) for p, s in seconds.items()}
        ref_vecs, ref_rate = vectors[REFERENCE], rates[REFERENCE]
        print(f"\n{'fp32 torch (eager)':24s} {ref_rate:6.3f} img/s  1.00x  (reference); "
              f"spread between views (median cosine distance) {pairwise_spread(ref_vecs):.5f}; load average {os.getloadavg()[0]:.1f}")
        gates = {p: compare_vectors(ref_vecs, vectors[p], k=min(10, max(2, args.views // 4))) for p in paths}
        for path in sorted(paths, key=lambda p: -speedups[p]):
            g = gates[path]
            print(f"{' '.join(path):24s} {rates[path]:6.3f} img/s  {speedups[path]:4.2f}x  cosine min {g.cosine_min:.4f} "
                  f"median {g.cosine_median:.4f}  neighbours@{g.neighbours} {g.neighbour_agreement:.3f}  "
                  f"ARI(k={g.k}) {g.ari:.3f} vs fp32 seeds {g.ari_seed_noise:.3f}  {'pass' if g.passed else 'FAIL'}")
        chosen, _ = pick_path(speedups, gates.__getitem__)
        speedup = speedups[chosen]
        print(f"auto -> {' '.join(chosen)} (the fastest path passing the gate): {speedup:.2f}x fp32 eager; "
              f"target >= {TARGET}x: {'met' if speedup >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
