"""Fetch speed: svcluster's fetch against the notebook's sequential loop, same local API server.

The server (``svcluster.tasks.fetch.server``) runs in its own process with a fixed latency per
request (50 ms by default), so the client's speed is bounded by concurrency / latency
(32 / 0.05 s = 640 requests/s): the "ceiling". Printed:

* images/s of ``fetch_map`` (``--concurrency 32 --qps 0``), wall time of the whole step
  (plan, metadata + image requests, blob writes, row appends, blob gc), into a fresh lake;
* images/s of the notebook's loop: ``requests.get`` per image in turn, written to
  ``panoramas/location_i/heading_h.jpg`` (timed on the first ``--sequential-locations``
  locations: its rate is steady, and timing all 500 would take minutes);
* the ratio, the fraction of the ceiling reached (requests/s including the free metadata
  requests, and images/s alone), and CPU seconds per image of this process.

Run: ``python benchmarks/fetch.py [--quick] [--locations 500] [--latency 0.05]``.
Targets: >= 25x the sequential loop, >= 70% of the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp  # noqa: F401 - both sides' HTTP libraries are imported before the timing starts
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svcluster.tasks.fetch.step import FetchOptions, fetch_map  # noqa: E402
from svcluster.tasks.ingest.step import ingest_map  # noqa: E402
from svcluster.tasks.lake.store import open_lake  # noqa: E402
from svcluster.tasks.demo.sample import generate_locations, to_format  # noqa: E402
from svcluster.tasks.settings import load_settings  # noqa: E402

KEY = "bench-key"
HEADINGS = (0, 90, 180, 270)


def start_server(latency: float, map_file: Path) -> tuple[subprocess.Popen, str]:
    """The API server in its own process (the benchmark's GIL is not shared with it), where the
    panoramas of ``map_file`` exist."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "svcluster.tasks.fetch.server", "--latency", str(latency), "--key", KEY, "--panoramas-of", str(map_file)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def sequential_notebook_loop(base: str, locations: list[dict], out: Path) -> tuple[int, float]:
    """The original notebook: one plain requests.get per image, in turn, saved to a file."""
    t0 = time.perf_counter()
    n = 0
    for i, loc in enumerate(locations):
        folder = out / "panoramas" / f"location_{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for h in HEADINGS:
            params = {"location": f"{loc['lat']},{loc['lng']}", "heading": h, "size": "640x640", "fov": 90, "pitch": 0, "key": KEY}
            r = requests.get(base, params=params, timeout=30)
            if r.status_code == 200:
                (folder / f"heading_{h}.jpg").write_bytes(r.content)
                n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100 locations, 25 for the sequential loop")
    p.add_argument("--locations", type=int, default=500)
    p.add_argument("--sequential-locations", type=int, default=100)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = p.parse_args()
    if args.quick:
        args.locations, args.sequential_locations = 100, 25

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        locs = generate_locations(args.locations, seed=1)
        (work / "bench.json").write_text(json.dumps(to_format(locs, "geoguessr")))
        proc, base = start_server(args.latency, work / "bench.json")
        try:
            lake = open_lake(str(work / "lake"))
            ingest_map(lake, work / "bench.json", "bench")
            settings = load_settings(api_key=KEY, streetview_url=base, lake=lake.uri)
            options = FetchOptions(concurrency=args.concurrency, qps=0)

            server_cpu0 = process_cpu_seconds(proc.pid)
            load0 = os.getloadavg()[0]
            cpu0, t0 = time.process_time(), time.perf_counter()
            r = fetch_map(lake, "bench", settings, options)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            server_cpu = process_cpu_seconds(proc.pid) - server_cpu0
            assert r.ok == args.locations * len(HEADINGS), r
            assert r.metadata_requests == args.locations, r  # every pano id exists: no refresh lookups

            seq_n, seq_wall = sequential_notebook_loop(base, locs[: args.sequential_locations], work / "nb")
        finally:
            proc.terminate()
            proc.wait()

    ours = r.ok / wall
    seq = seq_n / seq_wall
    ceiling = args.concurrency / args.latency
    req_rate = r.requests / wall
    figures = {
        "locations": args.locations,
        "images": r.ok,
        "requests": r.requests,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "svcluster_images_per_s": round(ours, 1),
        "svcluster_requests_per_s": round(req_rate, 1),
        "sequential_images_per_s": round(seq, 2),
        "ratio": round(ours / seq, 1),
        "ceiling_requests_per_s": ceiling,
        "fraction_of_ceiling_requests": round(req_rate / ceiling, 3),
        "fraction_of_ceiling_images": round(ours / ceiling, 3),
        "cpu_s_per_image": round(cpu / r.ok, 5),
        "server_cpu_s_per_request": round(server_cpu / r.requests, 5),
        "load_average_before": round(load0, 2),
        "wall_s": round(wall, 2),
        "cpu_count": os.cpu_count(),
    }
    print(f"fetch {r.ok} images of {args.locations} locations, server latency {args.latency * 1000:.0f} ms/request")
    print(f"  svcluster (concurrency {args.concurrency}, qps 0): {ours:8.1f} img/s  ({req_rate:.1f} req/s incl. metadata, {wall:.2f} s)")
    print(f"  sequential notebook loop ({seq_n} images):        {seq:8.2f} img/s")
    print(f"  ratio: {ours / seq:.1f}x   (target >= 25x)")
    print(f"  ceiling {ceiling:.0f} req/s: {req_rate / ceiling:.0%} reached by all requests, {ours / ceiling:.0%} by images alone   (target >= 70%)")
    print(f"  CPU: {cpu / r.ok * 1000:.2f} ms per image in the fetching process; server {server_cpu / r.requests * 1000:.2f} ms per request")
    print(f"  (1-min load average before the run: {load0:.1f} on {os.cpu_count()} CPUs; other work on the machine slows both sides)")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
