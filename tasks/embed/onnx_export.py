"""The image tower as ONNX files, made once and cached on disk, and run by ONNX Runtime.

One folder per model revision and input size, one file per precision:
``<cache>/onnx/<revision>/<H>x<W>/vision-<precision>.onnx`` (``files.cache_dir``):

- ``fp32``: ``torch.onnx.export`` (dynamo) of ``get_image_features``; every other file starts
  from it.
- ``int8``: dynamic quantisation (weights int8; activations quantised per batch at run time).
- ``int8-static``: static QDQ quantisation of the linear layers (weights int8 per channel,
  activations uint8 with fixed ranges), calibrated on the first views it is given: the first
  batch it runs on, which is the map's own views (``CALIBRATION_VIEWS`` at most). The
  products between activations (attention's Q·K and weights·V) stay fp32. The ranges, and so
  the vectors, then stay the same for every later batch and map (the file is reused).

A model without a known revision is written to a temporary folder instead (never reused by
mistake). ``made`` counts the files this process wrote, per precision: what the tests read to
see a cache hit does no work.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from svcluster.tasks.errors import SvclusterError

log = logging.getLogger(__name__)

ONNX_INPUT = "pixel_values"
ONNX_PRECISIONS = ("fp32", "int8", "int8-static")
CALIBRATION_VIEWS = 16  # views of the first batch whose activation ranges fix int8-static's scales

made: collections.Counter[str] = collections.Counter()  # files written by this process, per precision


def export_folder(revision: str, image_hw: tuple[int, int]) -> Path:
    """The cache folder of a model revision at an input size (a fresh temp folder without one)."""
    from svcluster.tasks.files import cache_dir

    if revision and revision != "unknown":
        folder = cache_dir() / "onnx" / re.sub(r"[^A-Za-z0-9._-]", "_", revision) / f"{image_hw[0]}x{image_hw[1]}"
    else:
        folder = Path(tempfile.mkdtemp(prefix="svcluster-onnx-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def exported_model(model: Any, revision: str, precision: str, image_hw: tuple[int, int], calibration: np.ndarray | None = None) -> Path:
    """The ONNX file of ``model``'s image tower at ``precision``, made once (module docstring).

    ``calibration`` (model inputs) is needed only to make ``int8-static`` the first time."""
    return make_onnx(model, export_folder(revision, image_hw), precision, image_hw, calibration)


def make_onnx(model: Any, folder: Path, precision: str, image_hw: tuple[int, int], calibration: np.ndarray | None = None) -> Path:
    """``folder``'s file for ``precision``, made from ``model`` (and fp32 first) when missing."""
    if precision not in ONNX_PRECISIONS:
        raise SvclusterError(f"no ONNX path for precision {precision}")
    target = folder / f"vision-{precision}.onnx"
    if target.exists():
        return target
    fp32 = folder / "vision-fp32.onnx"
    if not fp32.exists():
        _export_fp32(model, fp32, image_hw)
        made["fp32"] += 1
    if precision == "fp32":
        return fp32
    if precision == "int8-static" and (calibration is None or len(calibration) == 0):
        raise SvclusterError("int8-static is calibrated on views: none were given")
    tmp = folder / f".{precision}-{os.getpid()}.onnx"
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr), quiet_logs():
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            log.info("quantising %s to int8 (once; cached in %s)", fp32.name, folder)
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        else:
            views = calibration[:CALIBRATION_VIEWS]
            log.info("calibrating int8-static on %d views (once; cached in %s)", len(views), folder)
            quantize_static_int8(fp32, tmp, views)
    os.replace(tmp, target)
    made[precision] += 1
    log.info("%s made in %.1f s", target.name, time.perf_counter() - started)
    return target


def quantize_static_int8(fp32: Path, target: Path, calibration: np.ndarray) -> None:
    """Static QDQ int8 of ``fp32``'s linear layers (MatMul with a weight), calibrated on
    ``calibration`` one view at a time (the calibrator keeps each tensor's min and max only)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Views(CalibrationDataReader):
        def __init__(self) -> None:
            self.views = iter(range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.views, None)
            return None if i is None else {ONNX_INPUT: np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32)}

    pre = target.with_name(target.stem + "-pre.onnx")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        between_activations = [n.name for n in graph.node if n.op_type == "MatMul" and not weights & set(n.input)]
        quantize_static(
            str(pre), str(target), Views(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=between_activations,
        )  # fmt: skip
    finally:
        pre.unlink(missing_ok=True)


def _export_fp32(model: Any, target: Path, image_hw: tuple[int, int]) -> None:
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self, clip: Any):
            super().__init__()
            self.clip = clip

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            out = self.clip.get_image_features(pixel_values=pixel_values)
            return getattr(out, "pooler_output", out)

    log.info("exporting the image tower to ONNX (once; cached as %s)", target)
    tower = ImageTower(model.float().cpu()).eval()
    example = torch.zeros(2, 3, *image_hw)
    tmp = target.with_name(f".{target.stem}-{os.getpid()}.onnx")
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr), quiet_logs(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            tower,
            (example,),
            str(tmp),
            input_names=[ONNX_INPUT],
            output_names=["image_embeds"],
            dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}},
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    os.replace(tmp, target)
    log.info("exported in %.1f s", time.perf_counter() - started)


class OnnxVision:
    """The image tower run by ONNX Runtime on the CPU, from the cached file of ``precision``.

    ``int8-static`` not cached yet is made on the first call, calibrated on that call's views."""

    def __init__(self, model: Any, revision: str, precision: str, image_hw: tuple[int, int]):
        self.precision = precision
        self.session = None
        self.path = export_folder(revision, image_hw) / f"vision-{precision}.onnx"
        self._model, self._image_hw = model, image_hw
        if precision == "int8-static" and not self.path.exists():
            make_onnx(model, self.path.parent, "fp32", image_hw)  # the export now, the calibration on first use
        else:
            self._open(make_onnx(model, self.path.parent, precision, image_hw))

    def _open(self, path: Path) -> None:
        import onnxruntime as ort
        import torch

        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle runtime threads sleep instead of spinning: the decode/preprocess threads need the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._model = None  # its weights are no longer needed here

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if self.session is None:
            self._open(make_onnx(self._model, self.path.parent, self.precision, self._image_hw, x))
        return np.asarray(self.session.run(None, {ONNX_INPUT: x})[0], dtype=np.float32)


@contextlib.contextmanager
def quiet_logs():
    """The exporter and quantiser log progress at INFO/WARNING; keep them out of the user's way."""
    import warnings

    noisy = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir", "root", "torch.export")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)
