"""svcluster: cluster Google Street View locations by what they look like.

Everything imports under this one name: ``svcluster.flows`` (Prefect flows and the command line),
``svcluster.tasks`` (the work, a subpackage per step) and ``svcluster.sql`` (every statement).
In the repository those live in the top-level folders ``flows/``, ``tasks/`` and ``sql/``;
pyproject.toml maps them here, so no generic top-level name is installed.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("svcluster")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

# In a source checkout (this folder holds no flows/, tasks/ or sql/ of its own) the subpackages
# are the repository's top-level folders beside it; an installed wheel has them in this folder.
_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "tasks").is_dir() and (_checkout / "tasks" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # type: ignore[name-defined]
