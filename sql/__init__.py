"""Every SQL statement svcluster runs lives in this folder as a ``.sql`` file, grouped in a
folder per step like ``svcluster.tasks`` (``lake/``, ``fetch/``, ``cluster/`` …).

Statements take values as bound parameters (``?`` or ``$name``), never through string
formatting; the lake root reaches the views as the DuckDB variable ``lake_root``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


# Files run, in order, on every lake connection: they define the views and macros users query.
CATALOG = ("lake/views", "cluster/names", "cluster/clusters", "cluster/shape", "export/export")


@cache
def catalog_sql() -> str:
    """Every view and macro definition of the lake, as one script."""
    return "\n".join(load_sql(name) for name in CATALOG)


@cache
def load_sql(name: str) -> str:
    """The text of ``sql/<step>/<name>.sql``, named ``"<step>/<name>"``."""
    step, _, leaf = name.rpartition("/")
    folder = resources.files(__name__).joinpath(step) if step else resources.files(__name__)
    return folder.joinpath(f"{leaf}.sql").read_text(encoding="utf-8")
