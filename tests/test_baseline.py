"""The weight-free baseline descriptor: deterministic, unit length, separates different scenes."""

from __future__ import annotations

import numpy as np

from svcluster.tasks.embed import baseline
from tests.fixtures.models import scene_image


def test_deterministic_and_normalised():
    img = scene_image("forest", seed=1, size=(640, 640))
    a = baseline.describe_image(img)
    b = baseline.describe_image(img.copy())
    assert a.dtype == np.float32 and a.shape == (baseline.DIM,)
    assert np.array_equal(a, b)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    gray = baseline.describe_image(scene_image("forest", seed=1).convert("L"))
    assert abs(float(np.linalg.norm(gray)) - 1.0) < 1e-5


def test_separates_desert_from_forest():
    deserts = np.stack([baseline.describe_image(scene_image("desert", s, (200, 160))) for s in range(6)])
    forests = np.stack([baseline.describe_image(scene_image("forest", s, (200, 160))) for s in range(6)])
    within = min((deserts @ deserts.T).min(), (forests @ forests.T).min())
    between = (deserts @ forests.T).max()
    assert between < within - 0.1, (within, between)
    # Every image is nearer its own scene's centroid than the other one's.
    cd, cf = deserts.mean(0), forests.mean(0)
    assert all(d @ cd > d @ cf for d in deserts) and all(f @ cf > f @ cd for f in forests)
    # A flipped image keeps its colour statistics but not its layout exactly: still closest to its kind.
    flipped = baseline.describe_image(scene_image("desert", 0, (200, 160)).transpose(0))
    assert flipped @ cd > flipped @ cf
