"""A lake the user cannot write still answers, a mistyped lake is not a new lake, and a lake
answers for itself wherever it is copied or moved.

Read-only here means read-only for root too (the tests run as root, whom permissions do not
stop): the lake's folders and files are made immutable (``chattr -R +i``), which refuses every
write, rename and delete in them to every user; without chattr (or its capability) a non-root
user gets ``chmod``. Besides the commands succeeding, "nothing is written" is checked directly:
every path, size and modification time under the lake is the same afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from svcluster.flows.cli import main
from svcluster.tasks.errors import NoLakeError
from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.store import INIT_FILE, TMP_DIR, Lake, open_lake, schema_file_name
from svcluster.tasks.lake.schemas import TABLES
from tests.fixtures.maps import geoguessr_doc, write_map
from tests.report_helpers import synthetic_map, write_sweep


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def state(root: Path) -> dict[str, tuple[int, int]]:
    """Every folder and file under ``root`` with its size and modification time (ns)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder, name)
            st = p.lstat()
            found[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return found


def _chattr(flag: str, root: Path) -> bool:
    return subprocess.run(["chattr", "-R", flag, str(root)], capture_output=True).returncode == 0 if shutil.which("chattr") else False


@contextmanager
def read_only(root: Path) -> Iterator[None]:
    """``root`` and everything under it unwritable for every user, root included, for the block."""
    if _chattr("+i", root):
        undo = lambda: _chattr("-i", root)  # noqa: E731
    elif os.geteuid() != 0:
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        undo = lambda: [p.chmod(p.stat().st_mode | 0o200) for p in [root, *root.rglob("*")]]  # noqa: E731
    else:
        pytest.skip("no way to make a folder read-only for root here (chattr unavailable)")
    try:
        probe = root / "tables" / "write-probe"
        try:
            probe.write_bytes(b"x")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("the lake could not be made read-only here")
        yield
    finally:
        undo()


def age_a_lake(lake: Lake) -> None:
    """Make ``lake`` look written by an older svcluster: a table it did not have yet (no folder),
    a table without this version's schema file, an init file with an absolute path, and a
    stray temp file an interrupted write left an hour ago."""
    shutil.rmtree(lake.path("tables/exported_tags"))
    os.remove(lake.path(schema_file_name(TABLES["cluster_names"])))
    Path(lake.path(INIT_FILE)).write_text(lake.duckdb_catalog_sql())  # as older versions wrote it
    stray = Path(lake.path(f"{TMP_DIR}/0123.tmp"))
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stray, (old, old))


@pytest.fixture
def study_lake(tmp_path) -> tuple[Lake, dict[int, str]]:
    """A lake with a map, its views and embeddings, and a k sweep of runs (3, 4, 5)."""
    lake = open_lake(str(tmp_path / "lake"))
    m = synthetic_map(lake, tmp_path, 120)
    return lake, write_sweep(lake, m)


def test_reading_commands_answer_on_a_read_only_lake_and_write_nothing(capsys, tmp_path, study_lake) -> None:
    lake, runs = study_lake
    age_a_lake(lake)
    root = Path(lake.root)
    before = state(root)
    elsewhere = tmp_path / "elsewhere"
    with read_only(root):
        for argv in (
            ["runs"],
            ["runs", "--map", "chile"],
            ["sql", "SELECT count(*) AS n FROM cluster_runs"],
            ["sql", "SELECT count(*) AS n FROM exported_tags; SELECT count(*) AS n FROM cluster_names"],
            ["compare", "chile@v1", "chile@v3"],
            ["compare", "chile@v3", "--tags"],
            ["export", "chile@v3", "--out", str(elsewhere / "tagged.json")],
            ["export", "--map", "chile", "--out", str(elsewhere / "plain.json")],
            ["report", "chile@v3", "--out", str(elsewhere / "report")],
        ):
            code, out, err = run(capsys, "--lake", str(root), *argv)
            assert code == 0, (argv, err)
    assert state(root) == before  # not a file added, removed or touched
    assert (elsewhere / "tagged.json").is_file() and (elsewhere / "report" / "report.html").is_file()


def test_opening_for_reading_writes_nothing_even_where_it_could(tmp_path, study_lake) -> None:
    lake, _ = study_lake
    age_a_lake(lake)
    before = state(Path(lake.root))
    reader = open_lake(lake.uri, mode="read")
    assert reader.query("SELECT count(*) AS n FROM exported_tags").to_pylist() == [{"n": 0}]  # a table the lake lacks
    assert reader.query("SELECT count(*) AS n FROM cluster_runs").to_pylist() == [{"n": 3}]
    assert state(Path(lake.root)) == before
    open_lake(lake.uri, mode="write")  # a writing command brings the lake up to date
    assert Path(lake.path(schema_file_name(TABLES["exported_tags"]))).is_file()
    assert str(lake.root) not in Path(lake.path(INIT_FILE)).read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["cluster", "--map", "chile", "--k", "6"],
        ["ingest", "MAP"],
    ],
)
def test_a_command_that_must_write_says_so_in_one_line(capsys, tmp_path, study_lake, argv) -> None:
    lake, _ = study_lake
    map_file = write_map(tmp_path / "other.json", geoguessr_doc(6))
    argv = [str(map_file) if a == "MAP" else a for a in argv]
    with read_only(Path(lake.root)):
        code, out, err = run(capsys, "--lake", lake.uri, *argv)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: the lake at {lake.uri} is read-only here") and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["runs"],
        ["sql", "SELECT 1"],
        ["sql", "--catalog"],
        ["compare", "chile@v1", "chile@v2"],
        ["export", "--map", "chile", "--out", "OUT/x.json"],
        ["report", "chile@v1", "--out", "OUT/report"],
        ["fetch", "--map", "chile"],
        ["embed", "--map", "chile", "--model", "baseline"],
        ["cluster", "--map", "chile"],
        ["names", "chile@v1"],
    ],
)
@pytest.mark.parametrize("place", ["missing", "empty folder", "typo of a lake"])
def test_a_mistyped_lake_is_not_a_new_lake(capsys, tmp_path, argv, place) -> None:
    if place == "typo of a lake":
        open_lake(str(tmp_path / "lake"))
        target = tmp_path / "lkae"
    else:
        target = tmp_path / "lake"
        if place == "empty folder":
            target.mkdir()
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    code, out, err = run(capsys, "--lake", str(target), *argv)
    assert code == 1 and out == ""
    assert err.strip() == f"error: no lake at {target} (`svcluster ingest MAP.json` creates one; --lake or SVCLUSTER_LAKE names another)"
    assert not (target / "tables").exists()
    assert (place == "empty folder") == target.exists()


def test_only_a_command_that_brings_a_map_in_creates_a_lake(capsys, tmp_path) -> None:
    target = tmp_path / "new-lake"
    with pytest.raises(NoLakeError):
        open_lake(str(target), mode="write")
    assert not target.exists()
    code, _, err = run(capsys, "--lake", str(target), "ingest", str(write_map(tmp_path / "m.json", geoguessr_doc(4))))
    assert code == 0, err
    assert (target / "tables" / "locations").is_dir()


# ---- relocatable: the duckdb init file ---------------------------------------------------------


def views_of(folder: Path) -> list[tuple]:
    """What the lake's own init file shows, run by a bare DuckDB in ``folder``."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        con = duckdb.connect()
        con.execute((folder / INIT_FILE).read_text())
        return con.sql("SELECT map, count(*) FROM locations GROUP BY map ORDER BY map").fetchall()
    finally:
        os.chdir(cwd)


def test_a_copied_or_moved_lake_answers_for_itself(tmp_path) -> None:
    first = open_lake(str(tmp_path / "first"))
    ingest_map(first, write_map(tmp_path / "a.json", geoguessr_doc(3)), "a")
    copy = tmp_path / "copy"
    shutil.copytree(first.root, copy)
    ingest_map(first, write_map(tmp_path / "b.json", geoguessr_doc(5)), "b")  # only the original has b
    text = (copy / INIT_FILE).read_text()
    assert str(tmp_path) not in text  # no path pinned
    assert views_of(copy) == [("a", 3)]
    assert views_of(Path(first.root)) == [("a", 3), ("b", 5)]
    moved = tmp_path / "moved" / "lake"
    moved.parent.mkdir()
    shutil.move(first.root, moved)
    assert views_of(moved) == [("a", 3), ("b", 5)]
    # svcluster itself opens the copy and the moved lake as themselves, and writes nothing there
    before = state(moved)
    assert open_lake(str(moved), mode="read").query("SELECT count(*) AS n FROM locations").to_pylist() == [{"n": 8}]
    assert state(moved) == before


def test_the_init_file_run_elsewhere_says_where_to_run_it(tmp_path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    con = duckdb.connect()
    with pytest.raises(duckdb.Error, match=r"run duckdb in the lake folder \(cd LAKE && duckdb -init svcluster.sql\)"):
        con.execute(Path(lake.path(INIT_FILE)).read_text())  # the test's cwd is not the lake


@pytest.mark.skipif(shutil.which("duckdb") is None, reason="the duckdb CLI is not installed (pip install duckdb-cli)")
def test_duckdb_cli_opens_a_moved_lake(tmp_path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    ingest_map(lake, write_map(tmp_path / "a.json", geoguessr_doc(7)), "a")
    moved = tmp_path / "elsewhere"
    shutil.move(lake.root, moved)
    out = subprocess.run(
        ["duckdb", "-init", INIT_FILE, "-csv", "-c", "SELECT count(*) AS n FROM locations"],
        cwd=moved, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-2:] == ["n", "7"]


def test_sql_catalog_names_the_lake_where_it_is_now(capsys, tmp_path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    ingest_map(lake, write_map(tmp_path / "a.json", geoguessr_doc(2)), "a")
    moved = tmp_path / "moved"
    shutil.move(lake.root, moved)
    code, out, _ = run(capsys, "--lake", str(moved), "sql", "--catalog")
    assert code == 0 and f"SET VARIABLE lake_root = '{moved}';" in out
    con = duckdb.connect()
    con.execute(out)  # from anywhere
    assert con.sql("SELECT count(*) FROM locations").fetchall() == [(2,)]


def test_an_s3_lake_keeps_its_uri_and_is_not_created_by_a_reader(s3_lake) -> None:
    for relocatable in (False, True):
        text = s3_lake.duckdb_catalog_sql(relocatable=relocatable)
        assert f"SET VARIABLE lake_root = '{s3_lake.uri}';" in text and "LOAD httpfs" in text
    assert not s3_lake.exists(INIT_FILE)
    assert open_lake(s3_lake.uri, mode="read").query("SELECT count(*) AS n FROM maps").to_pylist() == [{"n": 0}]
    with pytest.raises(NoLakeError, match=r"^no lake at s3://"):
        open_lake(s3_lake.uri + "-typo", mode="read")
