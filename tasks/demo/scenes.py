"""Synthetic Street View scenes for the offline demo: one JPEG per (panorama, heading).

Each location of the Chile sample (``tasks/demo/sample.py``) lies in a latitude band, and each band
has its own landscape: the Atacama desert (pale sky, ochre sand, brown hills), the central valley
(green fields, orchards, the snow-capped Andes), the southern forest (grey sky, tall dark trees),
the Patagonian steppe (huge sky, flat yellow grass, fences) and the ice fields (white ground,
dark rock). A scene is drawn from its band's palette with variations seeded by the panorama id
and heading (sky colour, horizon height, ground texture, a road when looking along it, trees,
hills), so views of one band look alike without being copies, and the same request always gives
the same bytes. Drawing is vectorised numpy: about a millisecond per 256x256 image.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from svcluster.tasks.demo.sample import Band, band_of

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """What a band looks like: colours, where the horizon sits, what stands on the ground."""

    sky_top: RGB
    sky_horizon: RGB
    ground_near: RGB
    ground_far: RGB
    horizon: float  # fraction of the height from the top
    texture: float  # amplitude of the ground noise (0..255)
    hills: RGB | None  # distant relief colour
    hill_height: float  # fraction of the height above the horizon
    snow_caps: bool
    trees: int  # typical number of trees in a view
    tree_colour: RGB
    tree_height: float  # fraction of the height
    road: RGB
    road_line: RGB | None
    clouds: float  # 0..1 share of cloud cover
    fence: bool


PALETTES: dict[str, Palette] = {
    "desert": Palette(
        sky_top=(120, 170, 225), sky_horizon=(215, 225, 235), ground_near=(196, 150, 96), ground_far=(214, 180, 130),
        horizon=0.52, texture=18, hills=(150, 105, 75), hill_height=0.10, snow_caps=False,
        trees=0, tree_colour=(90, 100, 60), tree_height=0.1, road=(70, 70, 72), road_line=(230, 200, 40),
        clouds=0.0, fence=False,
    ),
    "valley": Palette(
        sky_top=(70, 130, 215), sky_horizon=(175, 205, 235), ground_near=(95, 140, 55), ground_far=(150, 165, 90),
        horizon=0.45, texture=28, hills=(110, 105, 115), hill_height=0.22, snow_caps=True,
        trees=5, tree_colour=(45, 90, 40), tree_height=0.22, road=(60, 60, 62), road_line=(240, 240, 240),
        clouds=0.15, fence=False,
    ),
    "forest": Palette(
        sky_top=(150, 160, 170), sky_horizon=(195, 200, 205), ground_near=(55, 85, 40), ground_far=(40, 70, 45),
        horizon=0.55, texture=35, hills=(35, 60, 40), hill_height=0.18, snow_caps=False,
        trees=14, tree_colour=(22, 55, 28), tree_height=0.55, road=(120, 110, 95), road_line=None,
        clouds=0.8, fence=False,
    ),
    "steppe": Palette(
        sky_top=(50, 110, 200), sky_horizon=(160, 195, 230), ground_near=(185, 165, 95), ground_far=(165, 150, 100),
        horizon=0.62, texture=22, hills=(130, 120, 110), hill_height=0.04, snow_caps=False,
        trees=0, tree_colour=(80, 90, 50), tree_height=0.08, road=(150, 135, 110), road_line=None,
        clouds=0.35, fence=True,
    ),
    "ice": Palette(
        sky_top=(170, 180, 195), sky_horizon=(225, 230, 235), ground_near=(235, 240, 245), ground_far=(205, 215, 230),
        horizon=0.5, texture=10, hills=(55, 55, 65), hill_height=0.28, snow_caps=True,
        trees=0, tree_colour=(40, 50, 45), tree_height=0.1, road=(90, 90, 95), road_line=None,
        clouds=0.6, fence=False,
    ),
}


def scene_rng(pano_id: str, heading: float) -> np.random.Generator:
    """A generator seeded by the panorama and heading: same request, same picture."""
    digest = hashlib.sha256(f"{pano_id}|{round(float(heading)) % 360}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _jitter(colour: RGB, rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0, amount, 3), 0, 255)


DRAW_SIZE = 96  # scenes are drawn at most this large, then scaled up with a fine grain added


def draw_scene(band: Band | str, pano_id: str, heading: float, width: int = 256, height: int = 256) -> np.ndarray:
    """The scene seen from ``pano_id`` towards ``heading`` in ``band``, as an HxWx3 uint8 array."""
    rng = scene_rng(pano_id, heading)
    small = _draw(band if isinstance(band, str) else band.name, rng, heading, min(width, DRAW_SIZE), min(height, DRAW_SIZE))
    if (width, height) == (small.shape[1], small.shape[0]):
        return small
    big = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR), np.int16)
    grain = _grain(width, height)
    dy, dx = (int(v) for v in rng.integers(0, 64, 2))
    big = big + np.roll(grain, (dy, dx), axis=(0, 1))[..., None]
    return np.clip(big, 0, 255).astype(np.uint8)


@functools.cache
def _grain(width: int, height: int) -> np.ndarray:
    """A fixed fine-noise tile (full resolution texture the scaled-up drawing lacks)."""
    return np.random.default_rng(0).normal(0, 6, (height, width)).astype(np.int16)


def _draw(name: str, rng: np.random.Generator, heading: float, w: int, h: int) -> np.ndarray:
    p = PALETTES[name]
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    img = np.empty((h, w, 3), np.float32)

    horizon = float(np.clip(p.horizon + rng.normal(0, 0.04), 0.3, 0.75))
    hy = int(horizon * h)

    # Sky: a vertical gradient, with soft clouds.
    top, bottom = _jitter(p.sky_top, rng, 10), _jitter(p.sky_horizon, rng, 8)
    t = np.clip(ys / max(horizon, 1e-3), 0, 1)[..., None]
    img[:hy] = (top * (1 - t) + bottom * t)[:hy]
    if p.clouds > 0:
        cover = np.clip(p.clouds + rng.normal(0, 0.15), 0, 1)
        coarse = rng.random((6, 12)).astype(np.float32)
        cloud = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, max(hy, 1)), Image.BILINEAR), np.float32) / 255
        mask = np.clip((cloud - (1 - cover)) * 3, 0, 1)[..., None] * 0.85
        grey = _jitter((235, 235, 238), rng, 6)
        img[:hy] = img[:hy] * (1 - mask[:hy]) + grey * mask[:hy]

    # Ground: gradient from far to near, plus texture (fields are striped in the valley).
    far, near = _jitter(p.ground_far, rng, 10), _jitter(p.ground_near, rng, 10)
    g = np.clip((ys[hy:] - horizon) / max(1 - horizon, 1e-3), 0, 1)[..., None]
    ground = far * (1 - g) + near * g
    noise = rng.standard_normal((h - hy, w), dtype=np.float32) * p.texture
    if name == "valley":
        rows = (np.sin((ys[hy:] - horizon) * 90 / (0.2 + g[..., 0]) + rng.random() * 6) > 0).astype(np.float32)
        noise += (rows - 0.5) * 30
    ground = ground + noise[..., None] * (0.5 + g)
    img[hy:] = ground

    # Distant relief: a ridge line above the horizon, snow on the highest parts.
    if p.hills is not None:
        phase = rng.random(3) * 6.28
        ridge = (
            0.5 * np.sin(xs[0] * 7 + phase[0]) + 0.3 * np.sin(xs[0] * 17 + phase[1]) + 0.2 * np.sin(xs[0] * 41 + phase[2])
        )
        peak = p.hill_height * (0.6 + 0.8 * rng.random())
        top_y = horizon - peak * (0.55 + 0.45 * ridge)  # fraction from the top, per column
        hill = (ys >= top_y[None, :]) & (ys < horizon)
        colour = _jitter(p.hills, rng, 8)
        img[hill] = colour
        if p.snow_caps:
            snow = hill & (ys < (top_y + peak * 0.25)[None, :]) & (top_y < horizon - peak * 0.6)[None, :]
            img[snow] = _jitter((245, 245, 250), rng, 4)

    # A road when looking along it (headings near the location's own direction and its back).
    along = (round(float(heading)) // 90) % 2 == 0
    if along and rng.random() < 0.85:
        centre = 0.5 + rng.normal(0, 0.05)
        half = 0.02 + (ys - horizon) / max(1 - horizon, 1e-3) * 0.35
        road = (ys > horizon) & (np.abs(xs - centre) < half)
        img[road] = _jitter(p.road, rng, 6) + rng.normal(0, 4, (int(road.sum()), 1))
        if p.road_line is not None:
            dash = (np.sin((ys - horizon) * 60 / np.maximum(ys - horizon + 0.05, 0.05)) > 0)
            line = road & (np.abs(xs - centre) < half * 0.05) & dash
            img[line] = p.road_line
    elif p.fence:
        post = (np.abs(((xs * 9 + rng.random()) % 1) - 0.5) < 0.015) & (ys > horizon + 0.05) & (ys < horizon + 0.17)
        wire = (np.abs(((ys - horizon - 0.07) * 40) % 1 - 0.5) < 0.08) & (ys > horizon + 0.05) & (ys < horizon + 0.15)
        img[post | wire] = (80, 70, 60)

    # Trees: dark rounded crowns on trunks, standing on the ground line (drawn in their box).
    n_trees = int(rng.poisson(p.trees)) if p.trees else 0
    for _ in range(n_trees):
        cx = rng.random()
        base = horizon + rng.random() * 0.15
        height_f = p.tree_height * (0.5 + rng.random())
        width_f = height_f * (0.25 + 0.2 * rng.random())
        x0, x1 = max(0, int((cx - width_f / 2) * w)), min(w, int((cx + width_f / 2) * w) + 1)
        y0, y1 = max(0, int((base - height_f * 1.15) * h)), min(h, int(base * h) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        bx, by = xs[:, x0:x1], ys[y0:y1]
        crown = (((bx - cx) / (width_f / 2)) ** 2 + ((by - (base - height_f * 0.6)) / (height_f * 0.55)) ** 2) < 1
        trunk = (np.abs(bx - cx) < width_f * 0.08) & (by <= base) & (by > base - height_f * 0.4)
        box = img[y0:y1, x0:x1]
        box[trunk] = (70, 50, 35)
        box[crown] = _jitter(p.tree_colour, rng, 10)

    return np.clip(img, 0, 255).astype(np.uint8)


def scene_jpeg(band: Band | str, pano_id: str, heading: float, width: int = 256, height: int = 256, quality: int = 85) -> bytes:
    """The scene as JPEG bytes, as the Street View Static API would send it."""
    buf = io.BytesIO()
    Image.fromarray(draw_scene(band, pano_id, heading, width, height)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """``"640x480"`` (or a pair) as (width, height), bounded like the real API (max 640)."""
    if isinstance(size, str):
        w, _, h = size.lower().partition("x")
        width, height = int(w), int(h)
    else:
        width, height = size
    return max(1, min(int(width), 640)), max(1, min(int(height), 640))


class SceneImages:
    """An image provider for the local Street View server: ``(pano_id, heading, size, fov, pitch)
    -> JPEG bytes``, drawing each panorama from the band of its location's latitude.

    ``latitudes`` maps every pano_id the server knows to its latitude; an unknown pano_id gets a
    scene from a band chosen by its hash (the server decides separately whether it exists).
    """

    def __init__(self, latitudes: Mapping[str, float]):
        self.latitudes = dict(latitudes)

    @classmethod
    def for_locations(cls, locations: Iterable[Mapping[str, object]]) -> "SceneImages":
        """From sample locations (dicts with ``panoId`` and ``lat``)."""
        return cls({str(loc["panoId"]): float(loc["lat"]) for loc in locations if loc.get("panoId")})  # type: ignore[arg-type]

    def band(self, pano_id: str) -> str:
        lat = self.latitudes.get(pano_id)
        if lat is None:
            names = list(PALETTES)
            return names[int(hashlib.sha256(pano_id.encode()).hexdigest(), 16) % len(names)]
        return band_of(lat).name

    def __call__(self, pano_id: str, heading: float, size: str | tuple[int, int] = "256x256", fov: float = 90.0, pitch: float = 0.0) -> bytes:
        width, height = parse_size(size)
        return scene_jpeg(self.band(pano_id), pano_id, heading, width, height)
