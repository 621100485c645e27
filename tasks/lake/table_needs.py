"""Which lake tables a SQL text reads: so a connection checks and binds only those.

Binding a table (its Delta log read, its files' footers planned) costs a request or more per
table on S3; a ``svcluster sql`` count over one view should not pay for thirteen. The catalog's
views and macros (``svcluster.sql.catalog_sql``) are read once: each object's name, and the
``lake_<table>`` views and other objects its body names. A SQL text needs the tables of every
catalog object (and ``lake_<table>``) whose name appears in it as a word, anywhere, strings
included: a superset of what it can read. A text that names tables at run time (``query(...)``,
``query_table(...)``) needs every table.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import cache

from svcluster.sql import catalog_sql

_OBJECT = re.compile(r"CREATE\s+OR\s+REPLACE\s+(?:VIEW|MACRO)\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DYNAMIC = {"query", "query_table", "lake_files"}  # names a table at run time; lake_files lists every table's files


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


@cache
def _catalog_tables(tables: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """Each catalog object's name -> the lake tables it reads (directly or through others)."""
    text = catalog_sql()
    starts = list(_OBJECT.finditer(text))
    bodies: dict[str, set[str]] = {}
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        bodies.setdefault(m.group(1).lower(), set()).update(_words(text[m.end():end]))
    direct = {f"lake_{t}": t for t in tables}
    out: dict[str, frozenset[str]] = {}

    def reads(name: str, seen: frozenset[str]) -> frozenset[str]:
        if name in out:
            return out[name]
        found: set[str] = set()
        for word in bodies.get(name, ()):
            if word in direct:
                found.add(direct[word])
            elif word in bodies and word not in seen and word != name:
                found |= reads(word, seen | {name})
        out[name] = frozenset(found)
        return out[name]

    for name in bodies:
        reads(name, frozenset())
    return out


def tables_read(sql: str, tables: Collection[str]) -> frozenset[str]:
    """The lake tables ``sql`` may read (every one when it names tables at run time)."""
    words = _words(sql)
    if words & _DYNAMIC:
        return frozenset(tables)
    catalog = _catalog_tables(tuple(tables))
    needed: set[str] = set()
    for word in words:
        if word in catalog:
            needed |= catalog[word]
        elif word.startswith("lake_") and word[5:] in tables:
            needed.add(word[5:])
    return frozenset(needed)
