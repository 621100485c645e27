"""A query brings up to date only the tables its SQL can read (``tasks/lake/table_needs.py``).
The rule must never miss a table: for every view and table macro of the catalog, a database in
which every ``lake_<table>`` the rule leaves out is dropped still answers it (DuckDB binds a view
when it is queried, so a missed table is an error here, not an empty answer)."""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
import pytest

from svcluster.sql import catalog_sql
from svcluster.tasks.lake.schemas import TABLES
from svcluster.tasks.lake.store import open_lake, table_view_sql
from svcluster.tasks.lake.table_needs import tables_read

OBJECTS = re.findall(r"CREATE\s+OR\s+REPLACE\s+(VIEW|MACRO)\s+(\w+)\s*(\(([^)]*)\))?\s*AS\s*(TABLE)?", catalog_sql(), re.I)


def catalog_database() -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    db.execute("SET VARIABLE lake_root = '/nowhere'")
    db.execute("CREATE TABLE lake_files (table_name VARCHAR, uri VARCHAR)")
    for spec in TABLES.values():
        db.execute(table_view_sql(spec, []))
    db.execute(catalog_sql())
    return db


def queries() -> list[tuple[str, str]]:
    out = []
    for kind, name, _, params, table in OBJECTS:
        if kind.upper() == "VIEW":
            out.append((name, f"SELECT * FROM {name} LIMIT 0"))
        elif table:  # a table macro: called with NULL for each parameter without a default
            args = [p for p in params.split(",") if p.strip() and ":=" not in p]
            out.append((name, f"SELECT * FROM {name}({', '.join('NULL' for _ in args)}) LIMIT 0"))
    return out


@pytest.mark.parametrize(("name", "sql"), queries(), ids=[q[0] for q in queries()])
def test_every_catalog_object_reads_only_the_tables_the_rule_names(name: str, sql: str) -> None:
    db = catalog_database()
    needed = tables_read(sql, TABLES)
    for table in TABLES:
        if table not in needed:
            db.execute(f"DROP VIEW lake_{table}")
    db.sql(sql).fetchall()  # a table the rule missed: "Table lake_... does not exist"


def test_the_rule_is_not_everything_and_dynamic_names_read_every_table() -> None:
    assert tables_read("SELECT count(*) FROM images", TABLES) == {"images"}
    assert tables_read("SELECT * FROM places JOIN maps USING (map)", TABLES) == {"locations", "maps"}
    assert tables_read("SELECT * FROM query_table('images')", TABLES) == set(TABLES)
    assert tables_read("SELECT 1", TABLES) == set()


def test_a_query_sees_commits_to_its_tables_made_after_other_queries(tmp_path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    other = open_lake(str(tmp_path / "lake"))
    assert lake.query("SELECT count(*) AS n FROM maps").to_pylist() == [{"n": 0}]
    other.append("images", pa.table({"location_id": ["a"], "heading": [0], "status": ["ok"]}))
    assert lake.query("SELECT count(*) AS n FROM images").to_pylist() == [{"n": 1}]
    other.append("images", pa.table({"location_id": ["b"], "heading": [0], "status": ["ok"]}))
    assert lake.query_script("SELECT count(*) AS n FROM images")[0].to_pylist() == [{"n": 2}]
