"""Numeric precision of the image model: what ``auto`` means on this machine, and how each runs.

The precision is part of what makes a vector set distinct (it is in the ``embeddings`` key),
so it is resolved to a concrete name (``fp32``, ``bf16``, ``fp16``, ``int8``, ``int8-static``) before anything is
written, never stored as ``auto``:

| requested | cuda                    | cpu                                                        | mps   |
|-----------|-------------------------|------------------------------------------------------------|-------|
| auto      | bf16 if supported, fp16 | measured once per model (``precision_auto``); this rule else | fp32 |
| fp32      | torch                   | ONNX Runtime (fused graph), torch if unavailable           | torch |
| bf16      | torch autocast          | torch, the whole image tower in bf16                       | error |
| fp16      | torch autocast          | error                                                      | error |
| int8      | error                   | ONNX Runtime dynamic int8 quantisation (weights int8)      | error |
| int8-static | error                 | ONNX Runtime static QDQ int8, calibrated on the map's views | error |

"Native bf16" is read from the CPU flags (``avx512_bf16``, ``amx_bf16``); a CPU can have the
instruction and still run bf16 matmuls slower than fp32 (a VM that hides AMX does), so a
one-off probe times both and is cached per machine in the cache folder. That rule is what
``resolve_precision`` says without a lake; the embed step asks ``precision_auto`` instead,
which times every path of ``cpu_paths`` on the map's own views once per model and machine.

ONNX exports (fp32, and both int8s quantised from it) are cached on disk under
``$SVCLUSTER_CACHE`` (default ``~/.cache/svcluster``) in ``onnx/<model revision>/<HxW>/``
(``onnx_export``), so only the first run pays for the export and the calibration. Set
``SVCLUSTER_ONNX=0`` to run everything in torch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from svcluster.tasks.files import cache_dir
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.files import atomic_write

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8", "int8-static")
INT8 = ("int8", "int8-static")  # ONNX Runtime on the CPU only (``onnx_export``)
BF16_MIN_SPEEDUP = 1.3  # auto picks bf16 on a CPU only if its matmuls are at least this much faster

Runner = Callable[[np.ndarray], np.ndarray]


# ---- what this machine can do ----------------------------------------------------------------
@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return frozenset(m.group(1).split()) if m else frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 natively (AVX512-BF16 or AMX-BF16)."""
    if cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return True
    try:
        import torch

        return "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:
        return False


def _machine_key() -> str:
    import torch

    model = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(errors="replace"), re.MULTILINE)
        model = m.group(1) if m else ""
    raw = f"{model}|{sorted(cpu_flags())}|{torch.__version__}|{torch.get_num_threads()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def matmul_rate(dtype: Any, n: int = 1024, seconds: float = 0.3, rows: int | None = None, inner: int | None = None) -> float:
    """Matmuls per second in ``dtype`` on this machine, now (same threads): ``(rows x inner) @
    (inner x n)``, square ``n`` x ``n`` unless ``rows``/``inner`` are given."""
    import torch

    a, b = torch.randn(rows or n, inner or n, dtype=dtype), torch.randn(inner or n, n, dtype=dtype)
    torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        runs += 1
    return runs / (time.perf_counter() - start)


def measure_bf16_speedup(n: int = 1024, seconds: float = 0.3) -> float:
    """How much faster a bf16 matmul runs than an fp32 one here (same threads), now."""
    import torch

    # Interleaved twice so a burst of load elsewhere does not decide alone.
    f1, b1 = matmul_rate(torch.float32, n, seconds), matmul_rate(torch.bfloat16, n, seconds)
    f2, b2 = matmul_rate(torch.float32, n, seconds), matmul_rate(torch.bfloat16, n, seconds)
    return (b1 + b2) / (f1 + f2)


@functools.cache
def bf16_speedup() -> float:
    """The bf16/fp32 matmul speed ratio on this machine, probed once and cached on disk."""
    path = cache_dir() / "cpu-probe.json"
    key = _machine_key()
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(path.read_text())
        if saved["machine"] == key:
            return float(saved["bf16_speedup"])
    speedup = measure_bf16_speedup()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, text=True) as fh:
            fh.write(json.dumps({"machine": key, "bf16_speedup": round(speedup, 3)}))
    return speedup


def cpu_prefers_bf16() -> bool:
    """auto's choice on a CPU: native bf16 that is measurably faster than fp32 here."""
    return cpu_has_native_bf16() and bf16_speedup() >= BF16_MIN_SPEEDUP


# The CPU flags that change which path is fastest: they key auto's measured decision.
SPEED_FLAGS = frozenset({
    "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_fp16", "amx_int8", "amx_tile",
})


def speed_flags() -> tuple[str, ...]:
    """This CPU's flags among ``SPEED_FLAGS``, sorted."""
    return tuple(sorted(cpu_flags() & SPEED_FLAGS))


def cpu_paths() -> list[tuple[str, str]]:
    """The (precision, runtime) paths this CPU offers, fp32 in torch (the reference) first:
    fp32 and both int8s through ONNX Runtime when it is available, bf16 when the CPU has it natively."""
    onnx = onnx_available()
    paths = [("fp32", "torch")]
    if onnx:
        paths.append(("fp32", "onnxruntime"))
    if cpu_has_native_bf16():
        paths.append(("bf16", "torch"))
    if onnx:
        paths += [("int8", "onnxruntime"), ("int8-static", "onnxruntime")]
    return paths


def runtime_versions() -> dict[str, str | None]:
    """torch's and ONNX Runtime's versions (None: not available or switched off)."""
    import torch

    ort = None
    if onnx_available():
        import onnxruntime

        ort = onnxruntime.__version__
    return {"torch": torch.__version__, "onnxruntime": ort}


def onnx_available() -> bool:
    """ONNX Runtime and the exporter's packages are installed (and not switched off)."""
    if os.environ.get("SVCLUSTER_ONNX", "1").lower() in ("0", "false", "no", "off"):
        return False
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


# ---- choosing --------------------------------------------------------------------------------
def resolve_precision(requested: str, device: str, baseline: bool = False) -> str:
    """The concrete precision for ``requested`` on ``device`` (a resolved device, not auto)."""
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
        if device == "cpu" and cpu_prefers_bf16():
            return "bf16"
        return "fp32"
    if requested == "fp16" and device == "cpu":
        raise SvclusterError("fp16 is for GPUs; on a CPU use --precision bf16 or int8")
    if requested in ("bf16", "fp16") and device == "mps":
        raise SvclusterError("reduced precision on mps is not supported; use --precision fp32")
    if requested in INT8:
        if device != "cpu":
            raise SvclusterError(f"--precision {requested} runs on the CPU only; use --device cpu")
        if not onnx_available():
            raise SvclusterError(
                f"--precision {requested} runs through ONNX Runtime: pip install onnxruntime onnx onnxscript "
                "(and leave SVCLUSTER_ONNX unset)"
            )
    return requested


def runtime_for(precision: str, device: str, runtime: str = "auto") -> str:
    """Which engine runs the model: ``onnxruntime`` (CPU fp32/int8 when available) or ``torch``."""
    if runtime in ("torch", "onnxruntime"):
        return runtime
    if device == "cpu" and precision in ("fp32", *INT8) and onnx_available():
        return "onnxruntime"
    return "torch"


# ---- running ---------------------------------------------------------------------------------
def make_runner(model: Any, revision: str, precision: str, device: str, image_hw: tuple[int, int], runtime: str) -> Runner:
    """A function: pixel values ``(n, 3, H, W)`` float32 -> projected image features ``(n, dim)``.

    ``model`` is a ``CLIPModel`` in fp32 on ``device``; ``runtime`` comes from ``runtime_for``.
    """
    if runtime == "onnxruntime":
        from svcluster.tasks.embed.onnx_export import OnnxVision

        return OnnxVision(model, revision, precision, image_hw)
    if precision in INT8:
        raise SvclusterError(f"--precision {precision} needs ONNX Runtime")
    return torch_runner(model, precision, device)


def torch_runner(model: Any, precision: str, device: str) -> Runner:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    input_dtype, context = torch.float32, functools.partial(autocast, precision, device)
    if dtype is not None and device == "cpu":
        # On a CPU the whole tower runs in bf16: autocast would keep LayerNorm, GELU and the
        # residual stream in fp32 and convert activations at every layer: slower, and no closer to
        # fp32 (docs/embed.md, 'Measured'; tests/test_precision.py checks the closeness), and its
        # quick-GELU is folded into the linear layers beside it.
        fold_quick_gelu(model)
        model.to(dtype)
        input_dtype, context = dtype, contextlib.nullcontext
    elif dtype is not None:
        cast_matmul_weights(model, dtype)

    def run(pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(device, input_dtype)
        with torch.inference_mode(), context():
            out = model.get_image_features(pixel_values=x)
            out = getattr(out, "pooler_output", out)
        return out.float().cpu().numpy()

    return run


QUICK_GELU = 1.702


def fold_quick_gelu(model: Any) -> int:
    """Rewrite each quick-GELU MLP (fc1 -> quick_gelu -> fc2, as in OpenAI's CLIP and StreetCLIP)
    into fc1' -> SiLU -> fc2' computing the same function; returns how many were rewritten.

    quick_gelu(z) = z * sigmoid(1.702 z) = silu(1.702 z) / 1.702, so fc1 scaled by 1.702 and fc2's
    weights by 1 / 1.702 leave the MLP unchanged, and the activation is one fused SiLU pass
    instead of three elementwise ones (mul, sigmoid, mul); what that saves of a bf16 forward on a
    CPU: docs/embed.md, 'Measured'.
    Call it on fp32 weights, before any cast.
    """
    import torch
    from transformers.activations import QuickGELUActivation

    folded = 0
    for module in model.modules():
        fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
        if not (isinstance(getattr(module, "activation_fn", None), QuickGELUActivation)
                and isinstance(fc1, torch.nn.Linear) and isinstance(fc2, torch.nn.Linear)):
            continue
        with torch.no_grad():
            fc1.weight.mul_(QUICK_GELU)
            if fc1.bias is not None:
                fc1.bias.mul_(QUICK_GELU)
            fc2.weight.div_(QUICK_GELU)
        module.activation_fn = torch.nn.SiLU()
        folded += 1
    return folded


def cast_matmul_weights(model: Any, dtype: Any) -> None:
    """Store the weights of ``model``'s linear and convolution layers in ``dtype``, once.

    Autocast runs those layers in ``dtype`` anyway, casting their fp32 weights again on every
    forward pass (for ViT-L/14 that is 300M numbers per batch); pre-cast weights give the same
    numbers bit for bit. Norms, embeddings and everything autocast keeps in fp32 stay fp32.
    """
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.to(dtype)


def autocast(precision: str, device: str) -> contextlib.AbstractContextManager:
    """The autocast context a torch forward pass runs in (a no-op for fp32)."""
    import torch

    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device, dtype=dtype)
    return contextlib.nullcontext()
