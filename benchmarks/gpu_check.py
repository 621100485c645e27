"""The GPU path, end to end: blobs in a lake -> embeddings in the lake, on CUDA, with quality.

Model: a CLIP with ViT-L/14-336 vision dimensions (StreetCLIP's image tower: 24 layers, width
1024, patch 14, 336 px, projection 768), random weights, saved and loaded by path through the
code that loads StreetCLIP. Data: ``--views`` 640x640 JPEG views stored in a lake (4 per place).

For each precision (``--precisions``, default fp16,bf16) it prints:
- views/s end to end: ``embed_map`` over the whole lake (read blobs, decode, preprocess, forward,
  pool, write embeddings), as ``svcluster embed --device cuda`` runs it;
- the forward alone on prepared batches, as a share of a bf16 ``torch.mm`` at the shape of the
  model's MLP layers measured right beside it (FLOPs counted by torch's FlopCounterMode);
- the precision gate against CPU fp32 on ``--gate-sample`` views (``svcluster.tasks.embed.precision_check``:
  cosine, neighbour agreement, K-means ARI against K-means' own seed noise).
Goals (issue 20): forward >= 50 % of the matmul rate; >= 800 views/s end to end.

Also runs on a CPU (``--device cpu --quick``: ViT-B/32 dimensions, few views) so its parts are
tested where there is no GPU. Writes ``gpu_check.json`` under ``$OUT`` (or ``--out``).

Run: ``bash benchmarks/gpu_check.sh`` on the lent machine (installs the carried wheels first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.embed import VIT_B32, VIT_L14_336, build_clip, make_lake  # noqa: E402

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def mlp_matmul_tflops(rows: int, width: int, device: str, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """TFLOP/s of ``(rows x width) @ (width x 4 width)`` in ``dtype`` on ``device``, now."""
    a = torch.randn(rows, width, device=device, dtype=dtype)
    b = torch.randn(width, 4 * width, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    synchronize(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            torch.mm(a, b)
        synchronize(device)
        runs += 10
    return 2 * rows * width * 4 * width * runs / (time.perf_counter() - start) / 1e12


def forward_flops(folder: Path, size: int) -> float:
    """FLOPs of one image through the image tower (counted, not estimated)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.get_image_features(pixel_values=torch.randn(1, 3, size, size))
    return float(counter.get_total_flops())


def time_forward(embedder, pixels: np.ndarray, batch_size: int, device: str, rounds: int) -> float:
    """Images/s of the model alone on prepared inputs (after a warm-up batch)."""
    embedder.embed(pixels[:batch_size])
    synchronize(device)
    start, done = time.perf_counter(), 0
    for _ in range(rounds):
        for i in range(0, len(pixels), batch_size):
            embedder.embed(pixels[i : i + batch_size])
            done += len(pixels[i : i + batch_size])
    synchronize(device)
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=4000)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precisions", default="fp16,bf16")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=0, help="decode workers (0: svcluster's default)")
    ap.add_argument("--gate-sample", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="ViT-B/32 dimensions (a smoke run, e.g. on a CPU)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model (the test suite's run of this script)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    from svcluster.tasks.embed.step import EmbedOptions, default_workers, embed_map
    from svcluster.tasks.embed.models import load_embedder
    from svcluster.tasks.embed.precision_check import TARGETS, compare_vectors
    from svcluster.tasks.embed.preprocess import decode_image

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --quick for a smoke run")
    vision, proj = (TINY, 32) if args.tiny else (VIT_B32, 512) if args.quick else (VIT_L14_336, 768)
    report: dict = {"device": args.device, "views": args.views, "vision": vision, "results": {}}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    workers = args.workers or default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["SVCLUSTER_CACHE"] = str(root / "cache")
        folder = build_clip(root / "clip", vision, proj)
        size = vision["image_size"]
        tokens = (size // vision["patch_size"]) ** 2 + 1
        flops = forward_flops(folder, size)
        print(f"model: vision {vision['num_hidden_layers']}x{vision['hidden_size']} @ {size} px, "
              f"{flops / 1e9:.0f} GFLOP per view; device {report.get('gpu', args.device)}; {workers} decode workers", flush=True)
        t = time.perf_counter()
        make_lake(root, args.views, name="lake")
        print(f"lake: {args.views} views stored in {time.perf_counter() - t:.0f} s", flush=True)
        reference = load_embedder(str(folder), "cpu", "fp32", "torch")
        from svcluster.tasks.lake.store import open_lake

        lake = open_lake(str(root / "lake"))
        paths = lake.query("SELECT path FROM images ORDER BY location_id, heading LIMIT ?", [args.gate_sample]).column(0).to_pylist()
        sample = np.stack([reference.prepare(decode_image(lake.read_bytes(p))) for p in paths])
        ref_vecs = reference.embed(sample)
        for precision in args.precisions.split(","):
            options = EmbedOptions(model=str(folder), device=args.device, precision=precision,
                                   batch_size=args.batch_size, workers=workers)
            t = time.perf_counter()
            result = embed_map(lake, "bench", options)
            wall = time.perf_counter() - t
            embedder = load_embedder(str(folder), args.device, precision)
            batch = np.concatenate([sample] * max(1, args.batch_size // len(sample) + 1))[: args.batch_size]
            forward = time_forward(embedder, batch, args.batch_size, args.device, rounds=5 if args.device == "cuda" else 1)
            # On CUDA the reference is always a bf16 matmul (the measure); on a CPU, one in
            # the precision's own type (fp16 matmuls are not what a CPU runs).
            dtype = torch.bfloat16 if args.device == "cuda" else DTYPES.get(precision, torch.float32)
            matmul = mlp_matmul_tflops(args.batch_size * tokens, vision["hidden_size"], args.device, dtype)
            share = forward * flops / 1e12 / matmul
            gate = compare_vectors(ref_vecs, embedder.embed(sample), k=min(10, len(sample) // 4))
            row = {
                "precision": result.precision, "runtime": result.runtime,
                "views_embedded": result.views_embedded, "views_per_second_end_to_end": round(result.views_embedded / wall, 1),
                "forward_views_per_second": round(forward, 1), "forward_tflops": float(f"{forward * flops / 1e12:.4g}"),
                "matmul_dtype": str(dtype).removeprefix("torch."), "matmul_tflops": float(f"{matmul:.4g}"),
                "forward_share_of_matmul": round(share, 3),
                "gate": {**gate.__dict__, "passed": gate.passed},
            }
            report["results"][precision] = row
            print(f"{precision:5s} end to end {row['views_per_second_end_to_end']:8.1f} views/s ({result.views_embedded} views, {wall:.1f} s; goal >= 800)\n"
                  f"      forward {forward:8.1f} views/s = {row['forward_tflops']} TFLOP/s, {share:.0%} of a {row['matmul_dtype']} "
                  f"torch.mm at the MLP shape ({matmul:.3g} TFLOP/s; goal >= 50 %)\n"
                  f"      gate vs CPU fp32 on {len(sample)} views: cosine min {gate.cosine_min:.4f} median {gate.cosine_median:.4f}, "
                  f"neighbours@{gate.neighbours} {gate.neighbour_agreement:.3f}, ARI {gate.ari:.3f} vs seed noise "
                  f"{gate.ari_seed_noise:.3f}: {'PASS' if gate.passed else 'FAIL'} ({TARGETS})", flush=True)
    out = Path(args.out) / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
