#!/usr/bin/env bash
# The GPU checks in one run, for a lent NVIDIA machine (no network there): unpacks the packages
# carried in .gpu-wheels/ (what its image lacks: deltalake, duckdb, pydantic, ...) into a folder
# of their own, then runs benchmarks/gpu_check.py (ViT-L/14-336 CLIP on CUDA at fp16 and bf16).
#   here, once:   bash benchmarks/gpu_check.sh --download      (fills .gpu-wheels/)
#   there:        bash benchmarks/gpu_check.sh [gpu_check.py options]
# Within 8 minutes on one H200 (4000 views). Results: $OUT/gpu_check.json and the printed lines.
# The wheels are installed here for the lent machine's platform and packed as one xz tarball:
# deltalake's wheel alone is 52 MB (its library compresses to 29 MB with xz), over what the
# device tool carries beside the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
PACKAGES=(deltalake arro3-core deprecated duckdb orjson pydantic pydantic-core pydantic-settings annotated-types
          typing-inspection python-dotenv)
if [ "${1:-}" = "--download" ]; then
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  STAGE=$(mktemp -d)
  # The versions installed here (tested together: pydantic pins its pydantic-core exactly).
  mapfile -t PINNED < <(python -c 'import sys, importlib.metadata as m; print("\n".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' "${PACKAGES[@]}")
  # The lent machine's python is 3.12 on x86_64: binary wheels only, no dependencies resolved here.
  pip install -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --target "$STAGE/site" "${PINNED[@]}"
  tar -C "$STAGE/site" -cf - . | xz -9 -T0 > "$WHEELS/site-packages.tar.xz"
  rm -rf "$STAGE"
  du -sh "$WHEELS"
  exit 0
fi
PY=${PYTHON:-python3}
SITE=$(mktemp -d)
if [ -f "$WHEELS/site-packages.tar.xz" ]; then
  tar -C "$SITE" -xJf "$WHEELS/site-packages.tar.xz"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PY" benchmarks/gpu_check.py "$@"
