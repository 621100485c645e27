#!/usr/bin/env bash
# The GPU checks in one run, for a lent NVIDIA machine (no network there): installs the wheels
# carried in .gpu-wheels/ (what its image lacks: duckdb, pydantic, ...) into a folder of their
# own, then runs benchmarks/gpu_check.py (ViT-L/14-336 CLIP on CUDA at fp16 and bf16).
#   here, once:   bash benchmarks/gpu_check.sh --download      (fills .gpu-wheels/, ~25 MB)
#   there:        bash benchmarks/gpu_check.sh [gpu_check.py options]
# Within 8 minutes on one H200 (4000 views). Results: $OUT/gpu_check.json and the printed lines.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
PACKAGES=(duckdb orjson pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv)
if [ "${1:-}" = "--download" ]; then
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  # The versions installed here (tested together: pydantic pins its pydantic-core exactly).
  mapfile -t PINNED < <(python -c 'import sys, importlib.metadata as m; print("\n".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' "${PACKAGES[@]}")
  # The lent machine's python is 3.12 on x86_64: binary wheels only, no dependencies resolved here.
  pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${PINNED[@]}"
  du -sh "$WHEELS"
  exit 0
fi
PY=${PYTHON:-python3}
SITE=$(mktemp -d)
if [ -d "$WHEELS" ]; then
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PY" benchmarks/gpu_check.py "$@"
