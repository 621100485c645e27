"""``svcluster embed``: every 'ok' view of a map through the image model, pooled per location."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation
from svcluster.flows.commands.progress import RichBar
from svcluster.flows.options import with_options
from svcluster.tasks.embed.precision_auto import decision_lines
from svcluster.tasks.embed.step import EmbedOptions, EmbedResult, embed_map
from svcluster.tasks.errors import SvclusterError


@with_options(options=EmbedOptions)
def embed(
    ctx: typer.Context,
    map_name: Annotated[str, typer.Option("--map", help="Map whose locations to embed.")],
    check_precision: Annotated[
        bool,
        typer.Option(
            "--check-precision",
            help="Compare --precision with fp32 on a sample of views (cosine, K-means ARI, speed); writes nothing.",
        ),
    ] = False,
    check_sample: Annotated[int, typer.Option("--check-sample", help="Views sampled by --check-precision.")] = 256,
    lake: LakeOption = None,
    json_output: JsonOption = False,
    *,
    options: EmbedOptions,
) -> None:
    """Embed a map's street views (incremental: only locations without a vector are done).

    A view whose image blob is missing or unreadable is not embedded: it is marked failed (with
    the reason) and the rest go on; `svcluster fetch --map MAP` fetches those views again.
    """
    inv = invocation(ctx, lake, json_output)
    if check_precision:
        _check(inv, map_name, options, check_sample)
        return
    r = embed_map(inv.lake, map_name, options, RichBar(unit="img", enabled=not inv.json))
    runtime = f", {r.runtime}" if r.runtime else ""
    lines = [f"{r.map}: {r.locations_embedded} locations embedded with {r.model} ({r.pooling}, {r.precision}, {r.device}{runtime})"]
    lines += decision_lines(r.precision_decision)
    if r.views_embedded:
        lines.append(f"{r.views_embedded} images in {r.seconds:.1f} s ({r.images_per_second:.1f} img/s)")
    if r.views_reused:
        lines.append(f"{r.views_reused} view vectors re-pooled from the lake")
    if r.locations_up_to_date:
        lines.append(f"{r.locations_up_to_date} locations were already embedded")
    lines += failed_view_lines(r)
    lines += missing_view_hints(r)
    emit(inv, r, "\n".join(lines))
    failure = nothing_embeddable(r)
    if failure:
        raise SvclusterError(failure)


def failed_view_lines(r: EmbedResult) -> list[str]:
    """Views left out because their blob is missing or unreadable, and how to repair them."""
    if not r.views_failed:
        return []
    kinds = ", ".join(f"{n} {kind}" for kind, n in r.failure_reasons.items())
    return [
        f"{r.views_failed} views failed ({kinds}): not embedded, marked failed in images; "
        f"`svcluster fetch --map {r.map}` fetches them again, then rerun embed"
    ]


def missing_view_hints(r: EmbedResult) -> list[str]:
    """Why places got no embedding, each with what helps (a fetch only helps two of the three)."""
    lines = []
    if r.locations_no_imagery:
        lines.append(
            f"{r.locations_no_imagery} places have no Street View imagery (Google has no panorama there): "
            "nothing to embed, fetching again will not change it; they stay untagged on export"
        )
    if r.locations_fetch_failed:
        lines.append(f"{r.locations_fetch_failed} places have views that failed to fetch: `svcluster fetch --map {r.map}` retries them")
    if r.locations_not_fetched:
        lines.append(f"{r.locations_not_fetched} places have not been fetched yet: run `svcluster fetch --map {r.map}`")
    return lines


def nothing_embeddable(r: EmbedResult) -> str | None:
    """Why the exit code is not 0: no place of the map has an embedding, and this run could make
    none (no usable image anywhere). Some places left out exit 0, with the hints above."""
    if r.locations_embedded or r.locations_up_to_date or not r.locations:
        return None
    why = [
        f"{n} {text}"
        for n, text in (
            (r.locations_no_imagery, "have no Street View imagery"),
            (r.locations_fetch_failed, "have views that failed to fetch"),
            (r.locations_not_fetched, "are not fetched yet"),
        )
        if n
    ]
    if r.views_failed:
        why.append(f"{r.views_failed} views have a missing or unreadable image")
    detail = f" ({'; '.join(why)})" if why else ""
    return f"nothing to embed: none of the {r.locations} places of {r.map} has a usable image{detail}"


def _check(inv, map_name: str, options: EmbedOptions, sample: int) -> None:
    from svcluster.tasks.embed.precision_check import check_precision
    from svcluster.tasks.embed.step import with_decided_precision

    options, _ = with_decided_precision(inv.lake, map_name, options)  # auto: the path embed would run
    c = check_precision(inv.lake, map_name, options, sample=sample)
    verdict = "PASS" if c.passed else "FAIL"
    text = (
        f"{verdict}: {c.precision} ({c.runtime}) vs fp32 on {c.views} views of {c.map} with {c.model}\n"
        f"cosine min {c.cosine_min:.4f}, median {c.cosine_median:.4f}; neighbour agreement@10 {c.neighbour_agreement:.3f}; "
        f"K-means k={c.k} ARI vs fp32 {c.ari:.3f}, between fp32 seeds {c.ari_seed_noise:.3f}\n"
        f"(pass: {c.targets})\n"
        f"spread between views (median cosine distance, fp32): {c.reference_spread:.4f} "
        f"vs precision error {1 - c.cosine_median:.4f}\n"
        f"speed {c.images_per_second:.2f} img/s vs fp32 {c.reference_images_per_second:.2f} img/s ({c.speedup:.2f}x)"
    )
    emit(inv, c, text)
    if not c.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(embed)
