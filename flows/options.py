"""Everything a step's options become, derived from their one definition (``svcluster.tasks.options``):

* ``with_options`` — a command's options (``svcluster fetch``) or the pipeline's (``svcluster run``),
  added to a typer command's signature with their flags, help and defaults, and handed to the
  command as the checked options object;
* ``flow_params`` — the Prefect flow parameters of a step (``FetchParams`` …), a pydantic model
  with the same defaults and descriptions, converting back with ``to_options()``.

Adding an option to a step is one field in its options dataclass, plus its use.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Annotated, Any, Callable, Literal, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field, create_model

from svcluster.tasks.options import Opt, default_of, options_of

Scope = Literal["command", "run"]


def _in_scope(opt: Opt, scope: Scope) -> bool:
    return opt.cli if scope == "command" else (opt.flow and opt.run)


def _cli_type(cls: type, f: dataclasses.Field, opt: Opt) -> Any:
    typ = opt.text or typing.get_type_hints(cls)[f.name]
    if type(None) in typing.get_args(typ):  # X | None: typer wants Optional[X]
        (inner,) = [a for a in typing.get_args(typ) if a is not type(None)]
        typ = Optional[inner]
    return typ


def option_parameters(cls: type, scope: Scope, section: str | None = None) -> list[inspect.Parameter]:
    """The typer parameters of ``cls``'s options in ``scope``, named like the fields."""
    params = []
    for f, opt in options_of(cls):
        if not _in_scope(opt, scope) or opt.flag is None:
            continue
        default = default_of(f)
        if opt.shown is not None:
            default = opt.shown(default)
        help_text = f"{section}: {opt.help}" if section else opt.help
        annotation = Annotated[_cli_type(cls, f, opt), typer.Option(opt.flag, help=help_text)]
        params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation))
    return params


def options_from(cls: type, values: dict[str, Any], scope: Scope) -> Any:
    """``cls`` built from a command's option values (text parsed), checked by the step's rules."""
    fields: dict[str, Any] = {}
    for f, opt in options_of(cls):
        if not _in_scope(opt, scope) or f.name not in values:
            continue
        value = values[f.name]
        fields.update(opt.parse(value) if opt.parse is not None else {f.name: value})
    return cls(**fields).checked()


def with_options(scope: Scope = "command", **groups: type) -> Callable[[Callable], Callable]:
    """Give a typer command the options of each ``group=OptionsClass``: the command declares a
    parameter ``group`` and receives the checked options object in it. In the ``run`` scope each
    option's help starts with its step (``Fetch: …``). Two steps with an option of one name in a
    scope fail here, when the command is defined. They are listed after ``--map``."""

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func)
        own = [_evaluated(func, p) for p in sig.parameters.values() if p.name not in groups]
        taken = {p.name for p in own}
        generated: dict[str, list[str]] = {}
        added: list[inspect.Parameter] = []
        for group, cls in groups.items():
            section = group.capitalize() if scope == "run" else None
            params = option_parameters(cls, scope, section)
            for p in params:
                if p.name in taken:
                    raise TypeError(f"{func.__name__}: option {p.name!r} of {cls.__name__} is declared twice")
                taken.add(p.name)
            generated[group] = [p.name for p in params]
            added += params
        names = [p.name for p in own]
        at = names.index("map_name") + 1 if "map_name" in names else next((i for i, n in enumerate(names) if n in ("lake", "json_output")), len(own))
        parameters = own[:at] + added + own[at:]

        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            for group, cls in groups.items():
                kwargs[group] = options_from(cls, {n: kwargs.pop(n) for n in generated[group]}, scope)
            return func(*args, **kwargs)

        command.__signature__ = sig.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        del command.__wrapped__  # typer reads the signature above, not the function's own
        return command

    return decorate


def _evaluated(func: Callable, p: inspect.Parameter) -> inspect.Parameter:
    """``p`` with its annotation evaluated (modules use ``from __future__ import annotations``)."""
    if isinstance(p.annotation, str):
        return p.replace(annotation=eval(p.annotation, func.__globals__))  # noqa: S307 (our own source's annotation)
    return p


# ---- Prefect flow parameters -------------------------------------------------------------------


class StepParams(BaseModel):
    """A step's flow parameters; ``to_options()`` gives the step's options object. A name that
    is not a parameter (a deployment's typo) is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    def option_values(self) -> dict[str, Any]:
        """The options' values, a list given for a tuple field made a tuple again."""
        cls = self.options_class()
        hints = typing.get_type_hints(cls)
        values = {}
        for f, opt in options_of(cls):
            if opt.flow:
                value = getattr(self, f.name)
                values[f.name] = tuple(value) if typing.get_origin(hints[f.name]) is tuple and isinstance(value, list) else value
        return values

    @classmethod
    def options_class(cls) -> type:
        return cls.__options_class__  # type: ignore[attr-defined]

    @classmethod
    def from_options(cls, options: Any) -> "StepParams":
        """The flow parameters that give back ``options`` (its flow fields; the rest keep defaults)."""
        return cls(**{f.name: getattr(options, f.name) for f, opt in options_of(cls.options_class()) if opt.flow})

    def to_options(self, **overrides: Any) -> Any:
        return self.options_class()(**{**self.option_values(), **overrides}).checked()


def _as_json(typ: Any) -> Any:
    """The flow parameter's type: a tuple field is a list in JSON (Prefect passes lists)."""
    if typing.get_origin(typ) is tuple and typing.get_args(typ)[1:] == (Ellipsis,):
        return list[typing.get_args(typ)[0]]  # type: ignore[index]
    return typ


def flow_params(cls: type, name: str, doc: str, base: type[StepParams] = StepParams, **extra: Any) -> type[StepParams]:
    """The pydantic model of ``cls``'s flow parameters (defaults and help as in the command), plus
    ``extra`` fields ``name=(type, Field(...))`` of the flow alone (how work is split into tasks)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f, opt in options_of(cls):
        if not opt.flow:
            continue
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            spec = Field(default_factory=f.default_factory, description=opt.help)  # type: ignore[misc]
        else:
            spec = Field(list(f.default) if isinstance(f.default, tuple) else f.default, description=opt.help)
        fields[f.name] = (_as_json(hints[f.name]), spec)
    model = create_model(name, __base__=base, __doc__=doc, __module__="svcluster.flows.params", **fields, **extra)
    model.__options_class__ = cls  # type: ignore[attr-defined]
    return model
