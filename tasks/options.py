"""A step's options, said once: each field of a step's options dataclass (``FetchOptions``,
``EmbedOptions``, ``ClusterOptions``) carries its flag, help text and where it appears, and the
step's command, ``svcluster run``, the Prefect flow parameters and the deployments are all
derived from that one definition (``svcluster.flows.options``).

    size: str = option("640x640", "--size", "Image size WIDTHxHEIGHT (at most 640x640).")

An option is on its step's command unless ``cli=False``, a flow parameter (and so an option of
``svcluster run`` and settable by a deployment) unless ``flow=False``; ``run=False`` keeps a flow
parameter off ``svcluster run`` (the pipeline sets it from another step's option). ``text`` is
the type the command line takes when it is not the field's own (``--headings 0,90`` for a tuple),
with ``parse`` turning that text into the fields it sets and ``shown`` writing a default back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class Opt:
    """How one options field appears outside its step."""

    flag: str | None
    help: str
    cli: bool = True
    flow: bool = True
    run: bool = True
    text: type | None = None
    parse: Callable[[Any], dict[str, Any]] | None = None
    shown: Callable[[Any], Any] | None = None


_KEY = "svcluster.option"


def option(
    default: Any = dataclasses.MISSING,
    flag: str | None = None,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    **how: Any,
) -> Any:
    """A dataclass field that is also an option (see the module docstring)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_KEY: Opt(flag, help, **how)})


def options_of(cls: type) -> Iterator[tuple[dataclasses.Field, Opt]]:
    """The fields of an options dataclass that are options, in declaration order."""
    for f in dataclasses.fields(cls):
        opt = f.metadata.get(_KEY)
        if opt is not None:
            yield f, opt


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING
