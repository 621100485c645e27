"""The offline demo: the whole pipeline on a generated map of Chile, with no network and no key.

``run_demo`` writes the deterministic 1000-location Chile sample (``tasks/demo/sample.py``) as a
map-making.app file, starts a Street View–compatible server on 127.0.0.1 that draws each view
from its location's latitude band (``tasks/demo/scenes.py``), points the real fetch client at it with
a throw-away key, and runs the real Prefect pipeline: ingest, fetch, embed (the weight-free
``baseline`` model unless another is asked for), cluster, compare with the map's own band tags,
export. Everything lands in one output folder; nothing outside it is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svcluster.tasks.files import atomic_write
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.processes import start_helper, stop_process
from svcluster.tasks.demo.sample import generate_locations, to_format
from svcluster.tasks.demo.scenes import SceneImages
from svcluster.tasks.fetch.server import Panorama, StreetViewServer, World

DEMO_MAP = "chile-demo"
DEMO_KEY = "svcluster-demo-key"  # accepted only by the demo's own server on 127.0.0.1
DEMO_SIZE = "224x224"  # CLIP's own input size
DEMO_SEED = 7
NO_IMAGERY_SHARE = 0.01  # a few panoramas have no imagery, as on a real map


@dataclass
class DemoResult:
    """Where the demo's outputs are, and the pipeline's own result."""

    out_dir: str
    map_file: str
    lake: str
    export_file: str
    summary_file: str
    locations: int
    seconds: float
    pipeline: Any  # svcluster.flows.pipeline.PipelineResult


class DemoPanoramas(World):
    """The demo server's world: every sample panorama exists where its location is, except a
    deterministic ~1% that were deleted with nothing in their place (their ids answer
    ZERO_RESULTS and the location lookup that follows finds nothing: ``no_imagery``); no
    panorama is derived for other coordinates."""

    def __init__(self, locations: list[Mapping[str, Any]], no_imagery_share: float = NO_IMAGERY_SHARE):
        super().__init__(derive=False)
        self.no_imagery_share = no_imagery_share
        for loc in locations:
            pano_id = str(loc["panoId"])
            if not self.missing(pano_id):
                h = int.from_bytes(hashlib.sha256(pano_id.encode()).digest()[:2], "big")
                self.add(Panorama(pano_id, float(loc["lat"]), float(loc["lng"]), f"{2012 + h % 12}-{1 + (h >> 4) % 12:02d}"))

    def missing(self, pano_id: str) -> bool:
        h = int.from_bytes(hashlib.sha256(f"no-imagery|{pano_id}".encode()).digest()[:4], "big")
        return h / 2**32 < self.no_imagery_share


def write_demo_map(path: Path, n: int = 1000, seed: int = DEMO_SEED) -> list[dict[str, Any]]:
    """The Chile sample as a map-making.app file at ``path``; returns its locations."""
    locations = generate_locations(n, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = to_format(locations, "customCoordinates", name="Chile demo", seed=seed)
    with atomic_write(path, text=True) as fh:
        fh.write(json.dumps(doc, ensure_ascii=False, indent=1))
    return locations


def demo_server(locations: list[Mapping[str, Any]]) -> StreetViewServer:
    """The scene server for these sample locations (not started)."""
    return StreetViewServer(
        api_key=DEMO_KEY,
        image_provider=SceneImages.for_locations(locations),
        world=DemoPanoramas(list(locations)),
        record=False,
    )


@contextmanager
def pointed_at(base_url: str) -> Iterator[None]:
    """This process's Street View settings pointed at a local server with the demo key (and
    restored afterwards)."""
    overrides = {"SVCLUSTER_STREETVIEW_URL": base_url, "GOOGLE_MAPS_API_KEY": DEMO_KEY, "GSV_API_KEY": None, "GOOGLE_MAPS_SIGNING_SECRET": None}
    saved = {k: os.environ.get(k) for k in overrides}
    try:
        _set_environ(overrides)
        yield
    finally:
        _set_environ(saved)


def _set_environ(values: Mapping[str, str | None]) -> None:
    """Set each variable (None: remove it)."""
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextmanager
def demo_streetview(locations: list[Mapping[str, Any]]) -> Iterator[StreetViewServer]:
    """The scene server in this process (its faults and counters at hand, as tests need),
    with this process's Street View settings pointed at it."""
    with demo_server(locations) as server, pointed_at(server.base_url):
        yield server


@contextmanager
def demo_streetview_process(n: int, seed: int = DEMO_SEED) -> Iterator[str]:
    """The scene server for the sample of ``write_demo_map(path, n, seed)`` in a process of its
    own, with this process's Street View settings pointed at it; yields its base URL.

    Drawing the scenes takes CPU: in its own process it does not compete with the fetch for
    this process's GIL, as a remote API would not (the demo's fetch here: 34 s -> 27 s).
    Its stderr goes to a temporary file (a pipe nobody reads could fill and stall it), shown
    only if it fails to start. Like every helper it is out of reach of the terminal's Ctrl-C
    and dies with this process (``svcluster.tasks.processes.start_helper``).
    """
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = start_helper(
            [sys.executable, "-m", "svcluster.flows.demo", "--locations", str(n), "--seed", str(seed)],
            stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip()
            if not base_url.startswith("http://127.0.0.1:"):
                proc.wait(timeout=30)
                errors.seek(0)
                raise SvclusterError(f"the demo's Street View server did not start: {errors.read()[-2000:]}")
            with pointed_at(base_url):
                yield base_url
        finally:
            stop_process(proc)


def serve(n: int, seed: int = DEMO_SEED) -> None:
    """``python -m svcluster.flows.demo --locations N --seed S``: serve the sample's scenes until
    terminated; prints the base URL (one line) once listening."""
    server = demo_server(generate_locations(n, seed=seed)).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()  # until SIGTERM (its default action ends the process) or Ctrl-C
    except KeyboardInterrupt:
        server.stop()


def run_demo(
    out_dir: str | Path = "svcluster-demo",
    *,
    lake: str | None = None,
    model: str = "baseline",
    locations: int = 1000,
    k: int = 5,
    size: str = DEMO_SIZE,
    runner: Any = None,
) -> DemoResult:
    """Run the whole pipeline offline on the Chile sample; outputs under ``out_dir``.

    ``lake`` defaults to ``out_dir/lake``; ``runner`` is a ``svcluster.flows.runner.RunnerOptions``.
    Prefect must be prepared (``svcluster.flows.prefect_env.prepare_prefect``) before this is called.
    """
    from svcluster.flows.params import ClusterParams, EmbedParams, FetchParams
    from svcluster.flows.pipeline import pipeline
    from svcluster.flows.runner import RunnerOptions

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    map_file = out / f"{DEMO_MAP}.json"
    write_demo_map(map_file, locations)
    lake_uri = lake or str(out / "lake")
    export_file = out / f"{DEMO_MAP}.tagged.json"
    summary_file = out / f"{DEMO_MAP}.summary.md"
    with demo_streetview_process(locations):
        result = pipeline(
            map_file=str(map_file),
            lake=lake_uri,
            map_name=DEMO_MAP,
            fetch=FetchParams(size=size, qps=0),  # a local server: no rate limit to respect
            embed=EmbedParams(model=model),
            cluster=ClusterParams(k=k),
            export_out=str(export_file),
            summary_out=str(summary_file),
            runner=runner or RunnerOptions(),
        )
    return DemoResult(
        out_dir=str(out),
        map_file=str(map_file),
        lake=result.lake,
        export_file=result.export.out,
        summary_file=result.summary_file or str(summary_file),
        locations=locations,
        seconds=round(time.perf_counter() - started, 1),
        pipeline=result,
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The demo's Street View look-alike for the generated Chile sample, on 127.0.0.1.")
    parser.add_argument("--locations", type=int, required=True, help="sample size (as given to write_demo_map)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args()
    serve(args.locations, args.seed)
