"""Ingest + export of a large customCoordinates map, against a plain ``json.load`` + ``json.dump``.

Generates an N-location map-generator / map-making.app file (default 1,000,000 locations), then
in this one process:

* plain:     ``json.load`` the file and ``json.dump`` it again (the floor any tool must pay);
* plain+:    the same with ``json.loads``/``json.dumps`` on whole strings (the C encoder, faster
             than ``json.dump``'s chunked one): a stricter baseline, shown for reference;
* svcluster: ``ingest_map`` into a fresh local lake and ``export_map`` back out, checking
             that the export parses to exactly the input.

Prints wall time, locations/s and peak resident memory (RSS sampled in a thread; the peak
above the RSS at the start of each phase) for both, and the ratio.
Targets: svcluster within 3x of plain, peak memory under 3 GB.

    python benchmarks/ingest_export.py            # 1,000,000 locations
    python benchmarks/ingest_export.py --n 100000 # quicker
    python benchmarks/ingest_export.py --quick    # 50,000 locations
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svcluster.tasks.export.step import export_map  # noqa: E402
from svcluster.tasks.ingest.step import ingest_map  # noqa: E402
from svcluster.tasks.lake.store import open_lake  # noqa: E402
from svcluster.tasks.demo.sample import band_of, chile_lng  # noqa: E402


@dataclass
class Measure:
    """One phase: wall seconds and the peak RSS it added above where it started (bytes)."""

    seconds: float
    peak_bytes: int


class RssSampler:
    """Samples this process's RSS every few milliseconds in a thread; remembers the maximum."""

    def __init__(self, interval: float = 0.005):
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def measure(fn: Callable[[], object]) -> Measure:
    gc.collect()
    start_rss = psutil.Process().memory_info().rss
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    return Measure(seconds, max(0, sampler.peak - start_rss))


def generate_map(n: int, seed: int = 7) -> dict:
    """An n-location customCoordinates map shaped like tasks/demo/sample.py's, built quickly."""
    rng = random.Random(seed)
    coords = []
    for i in range(n):
        lat = -17.6 - rng.random() * (55.0 - 17.6)
        band = band_of(lat)
        extra: dict = {"panoId": base64.urlsafe_b64encode(rng.randbytes(16)).decode()[:22]}
        if rng.random() < 0.3:
            extra["tags"] = [band.name]
        extra["panoDate"] = f"20{rng.randrange(12, 25)}-{rng.randrange(1, 13):02d}"
        coords.append(
            {
                "heading": rng.randrange(360),
                "pitch": 0,
                "zoom": 0,
                "panoId": None,
                "countryCode": "CL",
                "stateCode": band.region_codes[i % len(band.region_codes)],
                "lat": lat,
                "lng": chile_lng(lat, rng),
                "extra": extra,
            }
        )
    return {"name": "benchmark", "customCoordinates": coords}


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="locations in the generated map")
    parser.add_argument("--quick", action="store_true", help="same as --n 50000")
    args = parser.parse_args()
    n = 50_000 if args.quick else args.n

    with tempfile.TemporaryDirectory(prefix="svcluster-bench-") as tmp:
        src = Path(tmp) / "map.json"
        t0 = time.perf_counter()
        doc = generate_map(n)
        with open(src, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False)
        del doc
        gc.collect()
        size = src.stat().st_size
        print(f"generated {n:,} locations ({mb(size)}) in {time.perf_counter() - t0:.1f}s")

        def plain() -> None:
            with open(src, encoding="utf-8") as fh:
                data = json.load(fh)
            with open(Path(tmp) / "plain.json", "w", encoding="utf-8") as fh:
                json.dump(data, fh, ensure_ascii=False)

        def plain_strings() -> None:
            data = json.loads(src.read_text(encoding="utf-8"))
            (Path(tmp) / "plain.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

        lake = open_lake(str(Path(tmp) / "lake"))
        out = Path(tmp) / "export.json"

        def ours() -> None:
            ingest_map(lake, src, "benchmark")
            export_map(lake, out, map_name="benchmark")

        base = measure(plain)
        strict = measure(plain_strings)
        gc.collect()
        mine = measure(ours)

        with open(src, encoding="utf-8") as a, open(out, encoding="utf-8") as b:
            same = json.load(a) == json.load(b)

    ratio = mine.seconds / base.seconds
    print(f"{'':12}{'seconds':>10}{'locations/s':>14}{'peak RSS':>12}")
    print(f"{'plain json':12}{base.seconds:>10.2f}{n / base.seconds:>14,.0f}{mb(base.peak_bytes):>12}")
    print(f"{'plain+ json':12}{strict.seconds:>10.2f}{n / strict.seconds:>14,.0f}{mb(strict.peak_bytes):>12}")
    print(f"{'svcluster':12}{mine.seconds:>10.2f}{n / mine.seconds:>14,.0f}{mb(mine.peak_bytes):>12}")
    print(f"ratio svcluster / plain: {ratio:.2f}x (target <= 3x); peak {mb(mine.peak_bytes)} (target < 3,000 MB)")
    print(f"ratio svcluster / plain+: {mine.seconds / strict.seconds:.2f}x")
    print(f"export equals input: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
