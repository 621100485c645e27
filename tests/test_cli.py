"""The ``svcluster`` command line: help, summaries, --json, SQL output formats, exit codes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import duckdb
import pytest
import typer.main

from svcluster.flows.cli import _register_commands, app, main
from svcluster.tasks.lake.store import open_lake
from tests.fixtures.maps import geoguessr_doc, write_map


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def command_names() -> list[str]:
    _register_commands()
    return sorted(typer.main.get_command(app).commands)


def test_every_command_has_help(capsys) -> None:
    names = command_names()
    assert {"ingest", "export", "sql"} <= set(names)
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(n in out for n in names)
    for name in names:
        code, out, err = run(capsys, name, "--help")
        assert code == 0, (name, err)
        assert "Usage" in out and "--help" in out, name


def test_ingest_export_sql_from_the_command_line(capsys, tmp_path, chile_map) -> None:
    lake = str(tmp_path / "lake")
    code, out, err = run(capsys, "--lake", lake, "ingest", str(chile_map))
    assert code == 0, err
    assert out.startswith("chile: 1000 locations ingested (array, geoguessr)")
    code, out, _ = run(capsys, "--lake", lake, "ingest", str(chile_map))
    assert code == 0 and "unchanged" in out
    dest = tmp_path / "out" / "chile.json"
    code, out, err = run(capsys, "export", "--lake", lake, "--map", "chile", "--out", str(dest))
    assert code == 0, err
    assert f"wrote 1000 locations of chile to {dest}" in out
    assert json.loads(dest.read_text()) == json.loads(chile_map.read_text())


def test_json_output_is_one_document(capsys, tmp_path) -> None:
    lake = str(tmp_path / "lake")
    doc = geoguessr_doc(4)
    path = write_map(tmp_path / "dup.json", doc + [doc[1]])
    for argv in (["--json", "--lake", lake, "ingest", str(path)], ["ingest", str(path), "--lake", lake, "--json"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0
        result = json.loads(out)
        assert result["map"] == "dup" and result["locations"] == 5 and result["places"] == 4
        assert result["duplicates"] == 1 and result["duplicate_examples"] == [[4, 1]]
    code, out, _ = run(capsys, "--lake", lake, "--json", "export", "--map", "dup", "--out", str(tmp_path / "e.json"))
    assert code == 0 and json.loads(out)["locations"] == 5
    code, out, _ = run(capsys, "--lake", lake, "--json", "sql", "SELECT count(*) AS n FROM locations")
    assert json.loads(out) == [{"n": 5}]


def test_duplicates_are_reported_in_the_summary(capsys, tmp_path) -> None:
    doc = geoguessr_doc(3)
    path = write_map(tmp_path / "d.json", doc + [doc[0], doc[2]])
    code, out, _ = run(capsys, "--lake", str(tmp_path / "lake"), "ingest", str(path))
    assert code == 0
    assert "5 locations on 3 places ingested" in out
    assert "2 exact duplicate locations, all kept (item 3 = item 0, item 4 = item 2)" in out


def test_sql_output_formats(capsys, tmp_path, small_map) -> None:
    lake = str(tmp_path / "lake")
    assert run(capsys, "--lake", lake, "ingest", str(small_map))[0] == 0
    query = "SELECT position, pano_id, tags FROM locations ORDER BY position LIMIT 3"
    code, out, _ = run(capsys, "--lake", lake, "sql", query, "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["position"] for r in rows] == [0, 1, 2]
    code, out, _ = run(capsys, "--lake", lake, "sql", query, "--format", "csv")
    parsed = list(csv.reader(io.StringIO(out)))
    assert parsed[0] == ["position", "pano_id", "tags"]
    assert [r[1] for r in parsed[1:]] == [r["pano_id"] for r in rows]
    assert [json.loads(r[2]) if r[2] else None for r in parsed[1:]] == [r["tags"] for r in rows]
    code, out, _ = run(capsys, "--lake", lake, "sql", query, "--format", "table")
    assert code == 0 and "pano_id" in out and rows[0]["pano_id"] in out and "3 rows" in out
    # not a terminal: plain aligned columns (the row count on stderr, out of a pipe's way)
    code, out, err = run(capsys, "--lake", lake, "sql", query)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["position", "pano_id", "tags"] and len(lines) == 4
    assert lines[1].split()[:2] == ["0", rows[0]["pano_id"]] and err.strip() == "3 rows"


def test_sql_catalog_opens_the_lake_elsewhere(capsys, tmp_path, small_map) -> None:
    lake = str(tmp_path / "lake")
    run(capsys, "--lake", lake, "ingest", str(small_map))
    code, out, _ = run(capsys, "--lake", lake, "sql", "--catalog")
    assert code == 0 and "SET VARIABLE lake_root" in out
    con = duckdb.connect()
    con.execute(out)
    assert con.sql("SELECT count(*) FROM locations").fetchall() == [(20,)]


@pytest.mark.parametrize(
    "argv,words",
    [
        (["sql", "SELEC nothing"], "SQL failed"),
        (["sql", "SELECT 1", "--format", "xml"], "--format"),
        (["sql"], "give a SQL statement"),
        (["export", "--map", "nope", "--out", "x.json"], "no map named 'nope'"),
        (["export", "--out", "x.json"], "name a RUN"),
        (["export", "nope@v3", "--out", "x.json"], "no cluster run"),
        (["ingest", "does-not-exist.json"], "cannot read the file"),
        (["ingest", "BAD", "--map", "../x"], "--map"),
    ],
)
def test_errors_are_one_line_with_exit_1(capsys, tmp_path, monkeypatch, argv, words) -> None:
    monkeypatch.chdir(tmp_path)
    bad = write_map(tmp_path / "bad.json", [{"lat": 1, "lng": 2}, {"lat": 1, "lng": 2, "heading": "east"}])
    argv = [str(bad) if a == "BAD" else a for a in argv]
    open_lake(str(tmp_path / "lake"))  # an empty lake: only ingest, run and demo create one
    code, out, err = run(capsys, "--lake", str(tmp_path / "lake"), *argv)
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "Traceback" not in err


def test_bad_map_error_names_file_item_and_field(capsys, tmp_path) -> None:
    bad = write_map(tmp_path / "bad.json", [{"lat": 1, "lng": 2}, {"lat": 1, "lng": 2, "heading": "east"}])
    code, out, err = run(capsys, "--lake", str(tmp_path / "lake"), "ingest", str(bad))
    assert code == 1
    assert err.strip() == f"error: {bad}: item 1: field 'heading': must be a number, got \"east\""


def test_usage_errors_exit_2(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "--lake", str(tmp_path / "lake"), "no-such-command")
    assert code == 2 and "No such command" in err
    code, _, err = run(capsys, "ingest")
    assert code == 2 and "Missing argument" in err


def test_lake_from_the_environment(capsys, tmp_path, monkeypatch, small_map) -> None:
    monkeypatch.setenv("SVCLUSTER_LAKE", str(tmp_path / "envlake"))
    assert run(capsys, "ingest", str(small_map))[0] == 0
    assert (tmp_path / "envlake" / "tables" / "locations").is_dir()


def test_debug_shows_the_traceback(tmp_path) -> None:
    bad = write_map(tmp_path / "bad.json", [{"lat": 100, "lng": 2}])
    script = "from svcluster.flows.cli import main; main()"
    base = [sys.executable, "-c", script, "--lake", str(tmp_path / "lake")]
    quiet = subprocess.run([*base, "ingest", str(bad)], capture_output=True, text=True, timeout=120)
    loud = subprocess.run([*base, "--debug", "ingest", str(bad)], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip() == f"error: {bad}: item 0: field 'lat': must be between -90 and 90, got 100"
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "MapFormatError" in loud.stderr


def test_tables_never_cut_a_cell(capsys) -> None:
    """Rich squeezes a table wider than the console into "…" (a k=27 contingency showed no
    number, a run name lost its tail): print_table keeps every cell whole."""
    from rich.table import Table

    from svcluster.flows.cli import print_table

    table = Table("run", *[str(c) for c in range(27)], "purity")
    table.add_row("chile-demo@v41", *[str(1000 + c) for c in range(27)], "57% 3")
    print_table(table)
    out = capsys.readouterr().out
    assert "…" not in out and "chile-demo@v41" in out and "57% 3" in out
    assert all(str(1000 + c) in out for c in range(27))


def test_compare_at_k27_shows_its_numbers(capsys, tmp_path) -> None:
    import numpy as np

    from tests.report_helpers import synthetic_map, write_run

    lake = open_lake(str(tmp_path / "lake"))
    m = synthetic_map(lake, tmp_path, 270)
    labels = np.arange(270) % 27
    write_run(lake, m.name, m.location_ids, m.vectors, labels, m.model)
    write_run(lake, m.name, m.location_ids, m.vectors, (labels + (np.arange(270) % 10 == 0)) % 27, m.model, created_offset_s=1)
    code, out, err = run(capsys, "--lake", lake.uri, "compare", "chile@v1", "chile@v2")
    assert code == 0, err
    table = out[out.index("contingency") :]
    assert "…" not in table
    header = next(line for line in table.splitlines() if "purity" in line)
    assert all(f" {c} " in header for c in range(27))
    assert table.count(" 9 ") >= 27  # every diagonal cell (9 of each cluster's 10 stay) is shown
