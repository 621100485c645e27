"""Fixtures shared by the reliability tests: a small Chile map served by the demo's scene
server (real HTTP on 127.0.0.1), and the environment a ``svcluster`` process runs with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from svcluster.flows.demo import DemoPanoramas
from svcluster.tasks.demo.sample import generate_locations, to_format
from svcluster.tasks.demo.scenes import SceneImages
from svcluster.tasks.fetch.server import StreetViewServer
from tests.reliability import proc

# Recognisable fakes: if either ever shows up in a log, a file or an error, a test says where.
FAKE_KEY = "AIzaFAKE-svcluster-secret-0123456789abcdef"
FAKE_SECRET = "c3ZjbHVzdGVyLXNpZ25pbmctc2VjcmV0LTAxMjM0NTY3OA=="  # url-safe base64
SMALL_MAP_LOCATIONS = 48
MAP_SEED = 2024
# The options of every pipeline run in these tests: small, seeded, weight-free.
RUN_OPTIONS = ["--model", "baseline", "--headings", "0,180", "--size", "256x256", "--k", "4", "--seed", "1",
               "--concurrency", "8", "--qps", "0"]


@dataclass
class World:
    """A map file, the scene server that serves its panoramas, and the env of a svcluster process."""

    map_file: Path
    locations: list[dict]
    server: StreetViewServer
    env: dict[str, str]


def write_small_map(path: Path, n: int = SMALL_MAP_LOCATIONS, seed: int = MAP_SEED) -> list[dict]:
    locations = generate_locations(n, seed=seed)
    path.write_text(json.dumps(to_format(locations, "customCoordinates", name=path.stem, seed=seed)))
    return locations


def scene_server(locations: list[dict], key: str = FAKE_KEY, secret: str | None = FAKE_SECRET,
                 image_provider=None) -> StreetViewServer:
    """The demo's scene server for these locations (1% of panoramas without imagery)."""
    return StreetViewServer(
        api_key=key, signing_secret=secret,
        image_provider=image_provider or SceneImages.for_locations(locations),
        metadata_resolver=DemoPanoramas(locations),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_api) -> Iterator[World]:
    """A 48-location map, its scene server (with a key and a signing secret) and the env of a
    ``svcluster`` process pointed at both and at the session's Prefect API."""
    tmp = tmp_path_factory.mktemp("world")
    map_file = tmp / "chile-small.json"
    locations = write_small_map(map_file)
    with scene_server(locations) as server:
        env = proc.base_env(
            PREFECT_API_URL=prefect_api, SVCLUSTER_STREETVIEW_URL=server.base_url,
            GOOGLE_MAPS_API_KEY=FAKE_KEY, GOOGLE_MAPS_SIGNING_SECRET=FAKE_SECRET,
        )
        yield World(map_file, locations, server, env)
