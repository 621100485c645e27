# svcluster: the pipeline, its CLI and a Prefect worker in one image.
#
#   docker build -t svcluster .                                   # CPU torch (default)
#   docker build -t svcluster:cuda \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # CUDA torch
#   docker run --rm -v svcluster-data:/data svcluster demo --out /data/demo
#   docker run --rm --gpus all -v svcluster-data:/data svcluster:cuda run ... --device cuda
#
# CUDA: keep the slim base and pick the CUDA wheels with TORCH_INDEX_URL (they bundle the CUDA
# runtime and cuDNN, no CUDA base image needed); the host needs the NVIDIA driver and the
# NVIDIA container toolkit, and the container `--gpus all`. BASE_IMAGE may be another base,
# but it must provide python3.11 and pip as `python` and `pip` (nvidia/cuda:*-ubuntu24.04 has
# no python3.11 and no pip: it is not a drop-in base).
#
# The entry point (deployments/entrypoint.sh) runs svcluster's commands (`docker run IMAGE demo`,
# `docker run IMAGE --help`) and passes any other program through as it is: Prefect's docker
# worker sets only the container command (`prefect flow-run execute`), which must run as given.
#
# Layers go from the least to the most often changed: OS user, torch (GBs, pinned), the other
# dependencies (change with pyproject.toml), then the code (changes every commit).

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
# Empty = the default index (PyPI / pip.conf); the CPU build keeps the image small.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/data/hf-cache \
    SVCLUSTER_LAKE=/data/lake \
    PREFECT_HOME=/data/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin svcluster \
 && mkdir -p /data/lake /data/hf-cache /data/prefect /app \
 && chown -R svcluster:svcluster /data /app

WORKDIR /app

# 1. torch alone: the largest layer, rebuilt only when TORCH_VERSION or the index changes.
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"

# 2. the other dependencies, from pyproject.toml only (code changes do not invalidate this layer).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 3. the code.
COPY svcluster ./svcluster
COPY sql ./sql
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
# Editable: the code stays in /app (its non-Python files included) and is importable as installed.
RUN pip install --no-deps -e . \
 && sh deployments/entrypoint.sh --help > /dev/null \
 && sh deployments/entrypoint.sh python -c "import svcluster.flows.cli"

USER svcluster
VOLUME ["/data/lake", "/data/hf-cache"]
ENTRYPOINT ["/bin/sh", "/app/deployments/entrypoint.sh"]
CMD ["--help"]
