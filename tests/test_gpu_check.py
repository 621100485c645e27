"""benchmarks/gpu_check.py, the script a lent GPU machine runs, runs here on the CPU with a tiny
CLIP: its lake, end-to-end embed, forward timing, matmul reference and gate all work, so the
script is ready when a device is lent (the CUDA run itself is recorded in docs/embed.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_end_to_end_on_a_cpu(tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny", "--views", "32",
         "--precisions", "fp32,bf16", "--batch-size", "8", "--gate-sample", "16", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for precision in ("fp32", "bf16"):
        row = report["results"][precision]
        assert row["views_embedded"] == 32 and row["views_per_second_end_to_end"] > 0
        assert row["forward_views_per_second"] > 0 and row["matmul_tflops"] > 0
        assert set(row["gate"]) >= {"cosine_median", "neighbour_agreement", "ari", "ari_seed_noise", "passed"}
    assert report["results"]["fp32"]["gate"]["cosine_min"] > 0.9999  # fp32 against itself
    assert "end to end" in proc.stdout and "gate vs CPU fp32" in proc.stdout
