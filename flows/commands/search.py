"""``svcluster search`` and ``similar``: a map's places found by words, by a place or by pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from svcluster.flows.cli import JsonOption, LakeOption, emit, invocation, stdout
from svcluster.tasks.search.step import DEFAULT_TOP_SEARCH, DEFAULT_TOP_SIMILAR, SearchOptions, SearchResult, parse_coordinate, search_text, similar as find_similar

ModelOption = Annotated[Optional[str], typer.Option("--model", help="Embedding model [default: as `cluster` picks].")]
PoolingOption = Annotated[Optional[str], typer.Option("--pooling", help="mean | stitched [default: mean when there].")]
PrecisionOption = Annotated[Optional[str], typer.Option("--precision", help="fp32 | bf16 | fp16 | int8 | int8-static [default: the only one there].")]
OutOption = Annotated[Optional[Path], typer.Option("--out", help="Write the matched objects as a map file (a study set for map-making.app).")]
TagOption = Annotated[Optional[str], typer.Option("--tag", help="Tag added to every exported object [default: the query].")]


def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help='What to look for, best as a caption: "a photo of a red dirt road".')],
    map_name: Annotated[str, typer.Option("--map", help="Map whose places are searched.")],
    top: Annotated[int, typer.Option("--top", help="Places to return.")] = DEFAULT_TOP_SEARCH,
    # the options both commands share: vector set, study set, lake, output
    model: ModelOption = None, pooling: PoolingOption = None, precision: PrecisionOption = None,
    out: OutOption = None, tag: TagOption = None, lake: LakeOption = None, json_output: JsonOption = False,
) -> None:
    """Rank a map's places by how well they match TEXT (the model's text tower)."""
    inv = invocation(ctx, lake, json_output)
    result = search_text(inv.lake, map_name, text, SearchOptions(top, model, pooling, precision, out, tag))
    emit(inv, result, lambda: print_result(result))


def similar(
    ctx: typer.Context,
    target: Annotated[Optional[str], typer.Argument(help="A place's location_id, or LAT,LNG (the nearest place).")] = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", help="A picture to match (repeat to pool several).")] = None,
    map_name: Annotated[Optional[str], typer.Option("--map", help="Map whose places are searched.")] = None,
    all_maps: Annotated[bool, typer.Option("--all-maps", help="Search the places of every map.")] = False,
    top: Annotated[int, typer.Option("--top", help="Places to return.")] = DEFAULT_TOP_SIMILAR,
    # the options both commands share: vector set, study set, lake, output
    model: ModelOption = None, pooling: PoolingOption = None, precision: PrecisionOption = None,
    out: OutOption = None, tag: TagOption = None, lake: LakeOption = None, json_output: JsonOption = False,
) -> None:
    """Places that look like a place of the lake, the place nearest a coordinate, or your pictures."""
    inv = invocation(ctx, lake, json_output)
    if target and target.startswith("-") and parse_coordinate(target) is None:
        raise typer.BadParameter(f"no such option: {target}")
    result = find_similar(
        inv.lake, target, images=list(image or []), map_name=map_name, all_maps=all_maps,
        options=SearchOptions(top, model, pooling, precision, out, tag),
    )
    emit(inv, result, lambda: print_result(result))


def print_result(r: SearchResult) -> None:
    if r.note:
        stdout.print(r.note, highlight=False, markup=False)
    via = f" (via place {r.source_location_id})" if r.kind == "coordinate" else ""
    stdout.print(
        f"{r.kind} search {r.query!r}{via} in {', '.join(r.maps)}: {len(r.hits)} places "
        f"({r.model} / {r.pooling} / {r.precision}); {search_method(r)}; search {r.search_id}",
        highlight=False, markup=False,
    )
    # plain lines, not a table: a link must never be cut to the terminal's width
    stdout.print("rank  score   lat        lng         cluster  location_id  street view", highlight=False, markup=False)
    for h in r.hits:
        where = "-" if h.cluster is None else f"{h.run} c{h.cluster}"
        lat = "-" if h.lat is None else f"{h.lat:.5f}"
        lng = "-" if h.lng is None else f"{h.lng:.5f}"
        stdout.print(f"{h.rank:>4}  {h.score:.4f}  {lat:>9}  {lng:>10}  {where}  {h.location_id}  {h.link or '-'}", highlight=False, markup=False)
    if r.out:
        stdout.print(f"wrote {r.exported_objects} objects to {r.out}", highlight=False, markup=False)


def search_method(r: SearchResult) -> str:
    """How the places were found: exact, or the approximate index (and where it came from)."""
    i = r.index
    if i is None or i.method == "exact":
        return "exact"
    return f"approximate index ({i.method}, {i.probed} of {i.lists} lists probed, index {i.source})"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(search)
    # a coordinate south or west of 0 starts with "-": let it through as the TARGET argument
    app.command(context_settings={"ignore_unknown_options": True})(similar)
