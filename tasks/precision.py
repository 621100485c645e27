"""Numeric precision of the image model: which one ``auto`` means here, and how each runs.

A precision is part of what makes a vector set distinct (the ``embeddings`` key), so the
concrete name (``fp32``, ``bf16``, ``fp16``, ``int8``) is resolved before anything is written
and never ``auto``:

| requested | cuda                     | cpu                                   | mps  |
|-----------|--------------------------|---------------------------------------|------|
| auto      | bf16 if supported, fp16  | fp32 (see ``cpu_prefers_bf16``)       | fp32 |
| fp32      | fp32                     | fp32                                  | fp32 |
| bf16/fp16 | autocast                 | bf16 autocast (fp16: error)           | error|
| int8      | error                    | dynamic int8 quantisation of Linear   | error|
"""

from __future__ import annotations

import contextlib
from typing import Any

from tasks.errors import SvclusterError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def resolve_precision(requested: str, device: str, baseline: bool = False) -> str:
    """The concrete precision for ``requested`` on ``device`` (already resolved, not auto)."""
    if requested not in PRECISIONS:
        raise SvclusterError(f"--precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if baseline:
        if requested not in ("auto", "fp32"):
            raise SvclusterError("--model baseline computes its descriptor in fp32 only; drop --precision")
        return "fp32"
    if requested == "auto":
        if device == "cuda":
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if requested == "fp16" and device == "cpu":
        raise SvclusterError("fp16 is for GPUs; on a CPU use --precision bf16 or int8")
    if requested in ("bf16", "fp16") and device == "mps":
        raise SvclusterError("reduced precision on mps is not supported; use --precision fp32")
    if requested == "int8" and device != "cpu":
        raise SvclusterError("--precision int8 runs on the CPU only; use --device cpu")
    return requested


def prepare_model(model: Any, precision: str, device: str) -> Any:
    """The model made ready to run at ``precision`` (weights converted where that is the method)."""
    if precision == "int8":
        raise SvclusterError("--precision int8 is not available yet")
    return model


def autocast(precision: str, device: str) -> contextlib.AbstractContextManager:
    """The autocast context a forward pass runs in (a no-op for fp32 and int8)."""
    import torch

    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device, dtype=dtype)
    return contextlib.nullcontext()
