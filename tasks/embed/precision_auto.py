"""What ``--precision auto`` means for a model on this machine: measured once, then cached.

On a CPU, the first ``auto`` embed of a model times every path this CPU offers
(``precision.cpu_paths``: fp32 in torch — the reference — and through ONNX Runtime, bf16 with
native bf16, int8 dynamic and int8-static through ONNX Runtime; int8-static is calibrated on
the warm-up batch of the sample, the map's own views, once per model revision) on a small deterministic sample of the map's own views
(``AUTO_SAMPLE``), runs the quality gate (``precision_check.compare_vectors``) against the
reference's vectors on the fastest paths that beat it, from the fastest down, and picks the
fastest that passes (fp32 in torch if none does). The decision, with each path's speed and
the gate's figures, is written to ``<cache>/precision-auto/<key>.json`` and reused by every
later ``auto`` run with the same key: model revision, device, the CPU flags that change speeds
(``precision.SPEED_FLAGS``), torch threads, torch and ONNX Runtime versions and
``AUTO_VERSION``. A file that cannot be read is ignored and written again.

Not measured: a forced ``--precision``; the baseline (no precision paths); a GPU or mps,
where ``auto`` keeps ``precision.resolve_precision``'s rule; a map with fewer than
``MIN_VIEWS`` fetched views (the rule again, not cached). Why and how to reset the cache:
(docs/embed.md, 'How auto decides').
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from svcluster.tasks.embed.models import ClipEmbedder, is_baseline, model_key, model_revision, resolve_device
from svcluster.tasks.files import cache_dir
from svcluster.tasks.embed.precision import cpu_paths, resolve_precision, runtime_versions, speed_flags
from svcluster.tasks.embed.precision_check import Agreement, compare_vectors, sample_pixels
from svcluster.tasks.files import atomic_write
from svcluster.tasks.lake.store import Lake

if TYPE_CHECKING:
    from svcluster.tasks.embed.step import EmbedOptions

log = logging.getLogger(__name__)

AUTO_VERSION = 2  # bump when the paths or the rule change: decisions made before are measured again
AUTO_SAMPLE = 32  # views timed and gated: enough for neighbours@10 and K-means, minutes at most for ViT-L
MIN_VIEWS = 12  # fewer fetched views than this: nothing worth measuring yet (the rule decides, uncached)
GATED = 3  # at most this many of the fastest paths go through the gate
REFERENCE = ("fp32", "torch")


@dataclass(frozen=True)
class PathFigures:
    """One path measured on the sample: its speed, and the gate's figures when the gate ran."""

    precision: str
    runtime: str
    images_per_second: float
    speedup: float  # against fp32 in torch on the same views
    gate: dict[str, Any] | None = None  # Agreement's fields and ``passed``; None: not gated
    note: str = ""  # reference | gate passed | gate failed | slower than fp32 eager | not reached


@dataclass(frozen=True)
class PrecisionDecision:
    """What ``auto`` resolved to, how (``measured`` now, ``cached`` from an earlier run, or the
    ``rule`` without measuring) and why, with the figures it was decided on."""

    precision: str
    runtime: str  # what runs it: torch | onnxruntime | auto (``precision.runtime_for``)
    how: str  # measured | cached | rule
    reason: str
    device: str
    model: str | None = None
    model_revision: str | None = None
    cpu_flags: tuple[str, ...] = ()
    versions: dict[str, str | None] = field(default_factory=dict)
    map: str | None = None  # whose views it was measured on
    views: int = 0
    paths: tuple[PathFigures, ...] = ()
    measured_at: str | None = None  # UTC, ISO 8601
    measure_seconds: float | None = None
    cache_file: str | None = None


def decisions_dir() -> Path:
    """Where decisions are cached: ``<cache>/precision-auto`` (``files.cache_dir``)."""
    return cache_dir() / "precision-auto"


def decision_key(revision: str, device: str) -> dict[str, Any]:
    """What a cached decision is valid for (see the module docstring)."""
    import torch

    return {
        "version": AUTO_VERSION,
        "model_revision": revision,
        "device": device,
        "cpu_flags": list(speed_flags()),
        "threads": torch.get_num_threads(),
        **runtime_versions(),
    }


def decision_file(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return decisions_dir() / f"{digest}.json"


def read_decision(path: Path, key: dict[str, Any]) -> PrecisionDecision | None:
    """The decision cached in ``path`` for ``key``; None when there is none, it was made for
    another key, or the file cannot be read (it is then measured and written again)."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["key"] != key:
            return None
        d = dict(saved["decision"])
        d["paths"] = tuple(PathFigures(**p) for p in d["paths"])
        d["cpu_flags"] = tuple(d["cpu_flags"])
        return PrecisionDecision(**d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the unreadable precision decision %s (%s); measuring again", path, exc)
        return None


def write_decision(path: Path, key: dict[str, Any], decision: PrecisionDecision) -> None:
    """Cache ``decision`` for ``key`` (whole or not at all; a read-only cache only logs)."""
    try:
        with atomic_write(path, text=True) as fh:
            fh.write(json.dumps({"key": key, "decision": asdict(decision)}, indent=1))
    except OSError as exc:
        log.warning("cannot cache the precision decision in %s (%s)", path, exc)


def decide_precision(lake: Lake, map_name: str, options: "EmbedOptions") -> PrecisionDecision | None:
    """What ``options.precision`` resolves to when it is ``auto`` (None when it is forced or the
    model is the baseline: nothing to decide). Measures on ``map_name``'s views only when no
    decision for this model and machine is cached."""
    if options.precision != "auto" or is_baseline(options.model):
        return None
    device = resolve_device(options.device)
    if device != "cpu":
        chosen = resolve_precision("auto", device)
        why = "bf16 if the GPU supports it, else fp16" if device == "cuda" else "fp32 on mps"
        return PrecisionDecision(chosen, "auto", "rule", f"not measured on {device}: {why}", device, model_key(options.model))
    revision = model_revision(options.model)
    key = decision_key(revision, device)
    path = decision_file(key)
    cached = read_decision(path, key)
    if cached is not None:
        return replace(cached, how="cached", cache_file=str(path))
    reference = ClipEmbedder(options.model, "cpu", *REFERENCE)
    pixels = sample_pixels(lake, map_name, reference.prepare, AUTO_SAMPLE, options.workers)
    if len(pixels) < MIN_VIEWS:
        chosen = resolve_precision("auto", device)
        return PrecisionDecision(
            chosen, "auto", "rule",
            f"{len(pixels)} fetched views of {map_name}: too few to measure (at least {MIN_VIEWS}); "
            "the CPU-flag rule decided, nothing cached", device, reference.model, revision,
        )  # fmt: skip
    decision = measure_decision(options.model, reference, pixels, options.batch_size)
    decision = replace(decision, map=map_name, cpu_flags=speed_flags(), versions=runtime_versions())
    if revision != "unknown":
        write_decision(path, key, decision)
        decision = replace(decision, cache_file=str(path))
    return decision


def time_path(embedder: Any, pixels: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """One path's vectors of the sample and its images/s (the model alone), after a warm-up
    batch of the size timed: kernels are set up per shape on first use (oneDNN's bf16 ones
    take a while), which is not the path's speed."""
    embedder.embed(pixels[:batch_size])
    out, start = [], time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        out.append(embedder.embed(pixels[i : i + batch_size]))
    return np.concatenate(out), len(pixels) / (time.perf_counter() - start)


def measure_decision(ref: str, reference: ClipEmbedder, pixels: np.ndarray, batch_size: int) -> PrecisionDecision:
    """Time every CPU path on ``pixels``, gate the fastest against ``reference`` and pick."""
    started = time.perf_counter()
    # Other processes' load varies: the reference runs on the first half before the others and
    # on the second half after them, and its rate is the mean.
    half = max(1, len(pixels) // 2)
    first, rate_a = time_path(reference, pixels[:half], batch_size)
    rates: dict[tuple[str, str], float] = {}
    vectors: dict[tuple[str, str], np.ndarray] = {}
    for path in cpu_paths():
        if path == REFERENCE:
            continue
        try:
            embedder = ClipEmbedder(ref, "cpu", *path)
        except Exception as exc:  # an export or quantisation that fails here: not a candidate
            log.warning("precision path %s/%s unavailable for %s: %s", *path, ref, exc)
            continue
        vectors[path], rates[path] = time_path(embedder, pixels, batch_size)
        del embedder  # one candidate's weights in memory at a time
    second, rate_b = time_path(reference, pixels[half:], batch_size) if half < len(pixels) else (first[:0], rate_a)
    rates[REFERENCE] = (rate_a + rate_b) / 2
    reference_vectors = np.concatenate([first, second])
    chosen, figures = pick_path(rates, lambda p: compare_vectors(reference_vectors, vectors[p]))
    reason = (
        f"fastest path passing the gate ({figures_of(figures, chosen).speedup:.2f}x fp32 eager)"
        if chosen != REFERENCE
        else "no faster path passed the gate: fp32"
    )
    return PrecisionDecision(
        precision=chosen[0], runtime=chosen[1], how="measured", reason=reason, device="cpu",
        model=reference.model, model_revision=reference.revision, views=len(pixels), paths=figures,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        measure_seconds=round(time.perf_counter() - started, 2),
    )  # fmt: skip


def figures_of(figures: tuple[PathFigures, ...], path: tuple[str, str]) -> PathFigures:
    return next(f for f in figures if (f.precision, f.runtime) == path)


def pick_path(
    rates: dict[tuple[str, str], float], gate: Callable[[tuple[str, str]], Agreement], gated: int = GATED
) -> tuple[tuple[str, str], tuple[PathFigures, ...]]:
    """The fastest path that passes ``gate``, with every path's figures (fastest first).

    ``rates`` holds images/s per (precision, runtime), the reference (``REFERENCE``) among them;
    the gate runs on paths faster than the reference, fastest first, at most ``gated`` of them,
    and stops at the first pass. The reference is chosen when none passes."""
    base = rates[REFERENCE]
    order = sorted(rates, key=lambda p: -rates[p])
    chosen, tried, notes, gates = REFERENCE, 0, {REFERENCE: "reference"}, {}
    for path in order:
        if path == REFERENCE:
            continue
        if rates[path] <= base:
            notes[path] = "slower than fp32 eager"
        elif chosen != REFERENCE or tried >= gated:
            notes[path] = "not gated (a faster path passed)" if chosen != REFERENCE else "not gated"
        else:
            tried += 1
            agreement = gate(path)
            gates[path] = {**asdict(agreement), "passed": agreement.passed}
            notes[path] = "gate passed" if agreement.passed else "gate failed"
            if agreement.passed:
                chosen = path
    figures = tuple(
        PathFigures(p[0], p[1], round(rates[p], 3), round(rates[p] / base, 3) if base > 0 else 0.0, gates.get(p), notes[p])
        for p in order
    )
    return chosen, figures


def decision_lines(d: PrecisionDecision | None) -> list[str]:
    """The decision for a summary: the choice and why, then one line per path measured."""
    if d is None:
        return []
    head = f"precision auto -> {d.precision}" + (f" ({d.runtime})" if d.runtime != "auto" else "")
    if d.how == "rule":
        return [f"{head}: {d.reason}"]
    when = "measured now" if d.how == "measured" else f"measured {d.measured_at} (cached)"
    lines = [f"{head}: {d.reason}; {when} on {d.views} views of {d.map} in {d.measure_seconds:.1f} s"]
    for p in d.paths:
        line = f"  {p.precision} {p.runtime}: {p.images_per_second:.1f} img/s ({p.speedup:.2f}x), {p.note}"
        if p.gate:
            g = p.gate
            line += (
                f": cosine min {g['cosine_min']:.4f} median {g['cosine_median']:.4f}, neighbours@{g['neighbours']} "
                f"{g['neighbour_agreement']:.3f}, ARI {g['ari']:.3f} vs seeds {g['ari_seed_noise']:.3f}"
            )
        lines.append(line)
    if d.cache_file:
        lines.append(f"  decision cached in {d.cache_file} (delete it to measure again)")
    return lines

