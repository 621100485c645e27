"""Bad input at scale: property-based tests over the map parser, map names, tag templates and
the CLI's options. Never an unhandled exception; always an error that names the file, the item
and the field; nothing lands outside the lake whatever the name."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcluster.flows.cli import main
from svcluster.tasks.errors import MapFormatError, SvclusterError
from svcluster.tasks.cluster.runs import commit_run
from svcluster.tasks.export.step import export_map
from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.ingest.locations import parse_map_bytes
from svcluster.tasks.demo.sample import generate_locations, to_format
from tests.reliability.audit import audit_lake, files_outside

# Seeded and repeatable: the same examples every run (CI and laptops alike).
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

LABEL = "input/map.json"

# Strings users and attackers actually send: traversal, absolute paths, NUL, lone surrogates
# (JSON's \ud800 escape), control characters, very long unicode.
NASTY_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from([
        "", " ", "../../etc/passwd", "..", ".", "/", "/tmp/escape", "C:\\Windows\\x", "a/../../b", "\x00", "a\x00b",
        "\ud800", "x\udcff", "%2e%2e%2f", "~", "\u202e", "名" * 300, "é" * 5000, "{cluster}", "@v1", "a@b",
    ]),
)

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), NASTY_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NASTY_TEXT, inner, max_size=4)),
    max_leaves=12,
)


def parse(data: bytes):
    """The parser's outcome: a ParsedMap, or the MapFormatError it raised (anything else fails)."""
    try:
        return parse_map_bytes(data, LABEL, "bad-input")
    except MapFormatError as exc:
        assert exc.file == LABEL
        assert str(exc).startswith(LABEL)
        assert "\n" not in str(exc)
        return exc


@FAST
@given(st.binary(max_size=300))
def test_parser_survives_arbitrary_bytes(data: bytes) -> None:
    parse(data)


@FAST
@given(JSON_VALUES, st.booleans())
def test_parser_survives_arbitrary_json(doc, ascii_only: bool) -> None:
    parse(json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


# The fields the parser reads, by map format; a hostile value in one names that item and field.
FIELDS = ["lat", "lng", "heading", "pitch", "zoom", "panoId", "countryCode", "stateCode",
          "subdivisionCode", "extra", "extra.tags", "extra.panoId", "someUnknownField", "extra.unknown"]


def _set(item: dict, field: str, value) -> None:
    if field.startswith("extra."):
        extra = item.get("extra")
        if not isinstance(extra, dict):
            extra = item["extra"] = {}
        extra[field.split(".", 1)[1]] = value
    else:
        item[field] = value


@FAST
@given(
    fmt=st.sampled_from(["geoguessr", "customCoordinates", "vali"]),
    n=st.integers(min_value=1, max_value=6),
    index=st.integers(min_value=0, max_value=5),
    field=st.sampled_from(FIELDS),
    value=JSON_VALUES,
    ascii_only=st.booleans(),
)
def test_one_bad_field_is_named_by_item_and_field(fmt, n, index, field, value, ascii_only) -> None:
    locs = generate_locations(n, seed=n)
    doc = to_format(locs, fmt, name="fuzz")
    items = doc["customCoordinates"] if isinstance(doc, dict) else doc
    index %= n
    _set(items[index], field, value)
    outcome = parse(json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))
    if isinstance(outcome, MapFormatError):
        assert outcome.item == index, str(outcome)
        assert outcome.field is not None, f"no field named: {outcome}"
        assert outcome.field == field or outcome.field.startswith(field + ".") or field.startswith(outcome.field + "."), str(outcome)
        return
    # Accepted: the item is kept losslessly and its coordinates are valid numbers.
    rows = outcome.rows.to_pylist()
    kept = {r["position"]: r for r in rows}
    if index in kept:
        assert json.loads(kept[index]["raw"]) == items[index]
    for r in rows:
        assert -90 <= r["lat"] <= 90 and -180 <= r["lng"] <= 180
        assert math.isfinite(r["lat"]) and math.isfinite(r["lng"])
        pa.array([r["raw"]]).cast(pa.string())  # storable as UTF-8


@pytest.mark.parametrize("depth", [50, 2_000, 200_000])
def test_deeply_nested_json_is_a_format_error(depth: int) -> None:
    data = b'[{"lat": 1, "lng": 2, "x": ' + b"[" * depth + b"]" * depth + b"}]"
    outcome = parse(data)
    if depth > 1000:
        assert isinstance(outcome, MapFormatError)


def test_lone_surrogate_names_item_and_field() -> None:
    data = b'[{"lat": 1, "lng": 2}, {"lat": 3, "lng": 4, "panoId": "\\ud800"}]'
    outcome = parse(data)
    assert isinstance(outcome, MapFormatError)
    assert (outcome.item, outcome.field) == (1, "panoId")


def test_nan_in_an_unknown_field_names_it() -> None:
    outcome = parse(b'{"customCoordinates": [{"lat": 1, "lng": 2, "weird": [NaN]}]}')
    assert isinstance(outcome, MapFormatError)
    assert (outcome.item, outcome.field) == (0, "weird")


# ---- names and templates that try to leave the lake -------------------------------------------------

ESCAPING_NAMES = st.one_of(
    NASTY_TEXT,
    st.builds(lambda a, b: a + b, st.sampled_from(["../", "/", "..\\", "./", "\x00", "/../"]), NASTY_TEXT),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF), min_size=150, max_size=400),
)


@SLOW
@given(name=ESCAPING_NAMES)
def test_map_names_cannot_leave_the_lake(tmp_path_factory, name: str) -> None:
    work = tmp_path_factory.mktemp("names")
    lake = open_lake(str(work / "lake"))
    src = work / "in.json"
    src.write_text(json.dumps(to_format(generate_locations(3, seed=1), "geoguessr")))
    try:
        result = ingest_map(lake, src, name)
    except MapFormatError as exc:
        assert exc.field == "--map" or exc.item is None, str(exc)
    else:
        assert result.map == (name or "in")
        out = work / "out" / "export.json"
        export_map(lake, out, map_name=result.map)
        assert json.loads(out.read_text()) == json.loads(src.read_text())
    assert files_outside(work, [work / "lake", src, work / "out"]) == []
    for f in (work / "lake").rglob("*"):
        assert len(name) < 3 or name not in str(f.relative_to(work)), f"map name used in a path: {f}"
    audit_lake(lake).assert_clean()


@pytest.fixture(scope="module")
def clustered_lake(tmp_path_factory):
    """A lake with one small map and one committed cluster run (rows written through the lake)."""
    work = tmp_path_factory.mktemp("tagged")
    lake = open_lake(str(work / "lake"))
    src = work / "tagged.json"
    src.write_text(json.dumps(to_format(generate_locations(12, seed=5), "customCoordinates", name="tagged")))
    ingest_map(lake, src, "tagged")
    ids = lake.query("SELECT location_id FROM locations ORDER BY position").column(0).to_pylist()
    commit_run(lake, {"run_id": "run-fuzz", "map": "tagged", "k": 3}, pa.table({
        "location_id": ids, "cluster": [i % 3 for i in range(len(ids))], "distance": [0.5] * len(ids),
    }))
    return lake


TEMPLATES = st.one_of(
    NASTY_TEXT,
    st.builds(lambda a, b, c: a + "{cluster}" + b + c, NASTY_TEXT, st.sampled_from(["", "{k}", "{run}", "{x}", "{"]), NASTY_TEXT),
)


@SLOW
@given(template=TEMPLATES)
def test_tag_templates_are_refused_or_land_only_in_tags(clustered_lake, tmp_path_factory, template: str) -> None:
    out_dir = tmp_path_factory.mktemp("export")
    out = out_dir / "tagged.json"
    try:
        result = export_map(clustered_lake, out, run="run-fuzz", tag_format=template)
    except SvclusterError as exc:
        assert "--tag-format" in str(exc), str(exc)
        assert not out.exists()
    else:
        assert result.tagged == 12
        doc = json.loads(out.read_text(encoding="utf-8"))
        for i, item in enumerate(doc["customCoordinates"]):
            expected = template.replace("{k}", "3").replace("{cluster}", str(i % 3)).replace("{run}", "tagged@v1")
            assert item["extra"]["tags"][-1] == expected
    assert [p.name for p in out_dir.iterdir()] in ([], ["tagged.json"])
    assert files_outside(clustered_lake.root, [Path(clustered_lake.root)]) == []


# ---- the CLI's options -----------------------------------------------------------------------------

OPTION_VALUES = st.one_of(
    NASTY_TEXT.filter(lambda s: "\x00" not in s),
    st.sampled_from(["0", "-1", "1e9", "99999999999999999999", "nan", "2..1", "1..", "..", "abc", "0,90,x",
                     "640x", "x640", "0x0", "-5", "auto", "cuda", "mean", "stitched", "kmeans", "MAP@v9", "", "1.5"]),
)


def _commands():
    import typer.main

    from svcluster.flows.cli import _register_commands, app

    _register_commands()
    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():
        opts = [p.opts[0] for p in cmd.params if getattr(p, "opts", None) and p.opts[0].startswith("--")
                and p.opts[0] not in ("--help", "--lake", "--json")]
        nargs = sum(1 for p in cmd.params if p.param_type_name == "argument")
        out[name] = (opts, nargs)
    return out


COMMANDS = _commands()
# demo runs the whole pipeline offline, sql takes any statement: covered elsewhere.
FUZZED = sorted(c for c in COMMANDS if c not in ("demo",))


@st.composite
def argvs(draw):
    cmd = draw(st.sampled_from(FUZZED))
    opts, nargs = COMMANDS[cmd]
    argv = [cmd]
    argv += [draw(OPTION_VALUES) for _ in range(draw(st.integers(0, nargs)))]
    for opt in draw(st.lists(st.sampled_from(opts), max_size=3, unique=True)) if opts else []:
        argv += [opt, draw(OPTION_VALUES)]
    return argv


@SLOW
@given(argv=argvs())
def test_cli_options_never_crash(tmp_path_factory, argv) -> None:
    lake = tmp_path_factory.mktemp("cli") / "lake"
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(["--lake", str(lake), *argv])
    text = err.getvalue()
    assert isinstance(code, int)
    assert "run with --debug" not in text, f"unhandled exception for {argv!r}: {text}"
    assert "Traceback" not in text
    if code != 0:
        assert text.strip(), f"exit {code} without a message for {argv!r}"
        # one readable line "error: <what>: <why>" from svcluster, "Error: ..." from the option
        # parser (after its usage hint); only `sql` adds DuckDB's caret lines under its line.
        lines = [ln for ln in text.strip().splitlines() if re.match(r"(error|Error): \S", ln)]
        assert len(lines) == 1, (argv, text)
        assert len(lines[0]) < 600, (argv, lines[0])
        if argv[0] != "sql":
            assert text.strip().splitlines()[-1] == lines[0], (argv, text)


@pytest.mark.parametrize("argv", [["export", "\udcff"], ["fetch", "--map", "chile\udcff"], ["ingest", "x\ud800.json"]])
def test_non_utf8_arguments_are_named(tmp_path, argv) -> None:
    """Bytes that are not UTF-8 on the command line (argv decoded with surrogateescape)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--lake", str(tmp_path / "lake"), *argv])
    text = err.getvalue().strip()
    assert code == 2 and text.startswith("error: ") and "\n" not in text, text
    assert "not valid UTF-8" in text and ("--map" in text if "--map" in argv else "argument" in text), text
