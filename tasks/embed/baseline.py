"""``--model baseline``: a fixed GIST-like descriptor computed from the pixels, no weights.

The data: one RGB image in, a 376-float32 L2-normalised vector out, made of
  * colour layout: mean and standard deviation of R, G, B in each cell of a 4x4 grid (96),
  * texture layout: gradient-orientation histograms (8 unsigned orientations, magnitude
    weighted) in each cell of a 4x4 grid, at two scales (128 px and 64 px) (256),
  * global colour: a 16-bin hue histogram weighted by saturation, and an 8-bin brightness
    histogram (24).
Each block is normalised on its own and weighted so no block dominates; the concatenation is
L2-normalised. Deterministic (no randomness, fixed resize), fast on any CPU (docs/embed.md, 'The baseline'),
and it answers "how much does StreetCLIP add over plain colour and texture?".
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from svcluster.tasks.embed.preprocess import to_rgb

BASELINE_MODEL = "baseline"
BASELINE_REVISION = "gist-v1"
GRID = 4
ORIENTATIONS = 8
SCALES = (128, 64)
HUE_BINS = 16
VALUE_BINS = 8
DIM = GRID * GRID * 6 + len(SCALES) * GRID * GRID * ORIENTATIONS + HUE_BINS + VALUE_BINS
BLOCK_WEIGHTS = {"colour": 1.0, "texture": 1.0, "global": 0.6}


def describe_image(img: Image.Image) -> np.ndarray:
    """The baseline descriptor of one image: float32 ``(DIM,)``, unit length."""
    rgb = to_rgb(img)
    base = np.asarray(rgb.resize((SCALES[0], SCALES[0]), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    colour = _colour_layout(base)
    texture = np.concatenate([_gradient_histograms(_luma(_downsample(base, SCALES[0] // s))) for s in SCALES])
    global_ = _global_colour(base)
    parts = [
        _unit(colour) * BLOCK_WEIGHTS["colour"],
        _unit(np.sqrt(texture)) * BLOCK_WEIGHTS["texture"],
        _unit(np.sqrt(global_)) * BLOCK_WEIGHTS["global"],
    ]
    return _unit(np.concatenate(parts)).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _downsample(img: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    return img[: h * factor, : w * factor].reshape(h, factor, w, factor, -1).mean(axis=(1, 3))


def _luma(img: np.ndarray) -> np.ndarray:
    return img @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def _cells(a: np.ndarray) -> np.ndarray:
    """Split the first two axes into a GRID x GRID grid: (GRID, GRID, ch, cw, ...)."""
    h, w = a.shape[0] // GRID, a.shape[1] // GRID
    a = a[: h * GRID, : w * GRID]
    return a.reshape(GRID, h, GRID, w, *a.shape[2:]).swapaxes(1, 2)


def _colour_layout(img: np.ndarray) -> np.ndarray:
    cells = _cells(img)  # (4, 4, h, w, 3)
    mean = cells.mean(axis=(2, 3))
    std = cells.std(axis=(2, 3))
    return np.concatenate([mean.reshape(-1), std.reshape(-1)])


def _gradient_histograms(gray: np.ndarray) -> np.ndarray:
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned orientation
    bins = np.minimum((angle / np.pi * ORIENTATIONS).astype(np.int64), ORIENTATIONS - 1)
    cell_h, cell_w = gray.shape[0] // GRID, gray.shape[1] // GRID
    rows = np.minimum(np.arange(gray.shape[0]) // cell_h, GRID - 1)
    cols = np.minimum(np.arange(gray.shape[1]) // cell_w, GRID - 1)
    index = (rows[:, None] * GRID + cols[None, :]) * ORIENTATIONS + bins
    hist = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=GRID * GRID * ORIENTATIONS)
    return hist.astype(np.float32) / float(gray.size)


def _global_colour(img: np.ndarray) -> np.ndarray:
    mx = img.max(axis=2)
    mn = img.min(axis=2)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    safe = np.maximum(delta, 1e-6)
    hue = np.where(
        mx == r, np.mod((g - b) / safe, 6.0), np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    ) / 6.0
    hue_bins = np.minimum((hue * HUE_BINS).astype(np.int64), HUE_BINS - 1)
    hue_hist = np.bincount(hue_bins.ravel(), weights=sat.ravel(), minlength=HUE_BINS)
    value_bins = np.minimum((mx * VALUE_BINS).astype(np.int64), VALUE_BINS - 1)
    value_hist = np.bincount(value_bins.ravel(), minlength=VALUE_BINS).astype(np.float64)
    return np.concatenate([hue_hist, value_hist]).astype(np.float32) / float(mx.size)
