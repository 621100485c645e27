"""The ``svcluster`` command line: one entry point, a sub-command per step (see DESIGN.md).

Every command prints a short human summary on stdout, or with ``--json`` one JSON document;
logs and progress go to stderr. Errors are one readable line (``--debug`` shows the traceback)
and the exit code is 0 only on success. The commands live in ``flows/commands/``; this module
owns the options every command shares and how results and errors reach the user.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, is_dataclass
from typing import Annotated, Any, Callable, Optional

import click
import typer
from rich.console import Console

from tasks.errors import SvclusterError
from tasks.lake import Lake, open_lake
from tasks.settings import Settings, load_settings

try:  # typer >= 0.20 vendors click: its parser raises typer._click's exception classes
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    _click_errors = click.exceptions
_EXIT = (click.exceptions.Exit, typer.Exit, *filter(None, [getattr(_click_errors, "Exit", None)]))
_ABORT = (click.exceptions.Abort, typer.Abort, *filter(None, [getattr(_click_errors, "Abort", None)]))
_USAGE = (click.ClickException, _click_errors.ClickException)

app = typer.Typer(
    name="svcluster",
    help="Cluster Google Street View locations by what they look like, in a Parquet/DuckDB lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long

LakeOption = Annotated[
    Optional[str],
    typer.Option("--lake", help="Lake root: a folder or s3://bucket/prefix [env SVCLUSTER_LAKE; default ./lake]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a summary.")]


@dataclass
class CliState:
    """Options given before the command (``svcluster --lake X --json cmd``)."""

    lake: str | None = None
    json: bool = False
    debug: bool = False


@app.callback()
def _global(
    ctx: typer.Context,
    lake: LakeOption = None,
    json_output: JsonOption = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    ctx.obj = CliState(lake=lake, json=json_output, debug=debug)


@dataclass
class Invocation:
    """What a command needs: its settings, whether to print JSON, and the lake (opened lazily)."""

    settings: Settings
    json: bool
    _lake: Lake | None = None

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = open_lake(self.settings.lake)
        return self._lake


def invocation(ctx: typer.Context, lake: str | None = None, json_output: bool = False) -> Invocation:
    """Merge the global options with the command's own (the command's win)."""
    state: CliState = ctx.find_root().obj or CliState()
    settings = load_settings(lake=lake or state.lake)
    return Invocation(settings=settings, json=json_output or state.json)


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def emit(inv: Invocation, result: Any, summary: str | Callable[[], None]) -> None:
    """Print the result: JSON with ``--json``, else the human summary (text or a printer)."""
    if inv.json:
        sys.stdout.write(json.dumps(to_jsonable(result), ensure_ascii=False, indent=2) + "\n")
    elif callable(summary):
        summary()
    else:
        stdout.print(summary, highlight=False, markup=False)


_registered = False


def _register_commands() -> None:
    """Add every step's commands to the app (once per process: main() may run many times)."""
    global _registered
    if _registered:
        return
    from flows.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        module.register(app)
    _registered = True


def undecodable_argument(args: list[str]) -> str | None:
    """Bytes in argv that are not UTF-8 arrive as lone surrogates (Python's surrogateescape);
    no map, run or path can hold them, so name the argument instead of failing deep inside."""
    for i, arg in enumerate(args):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            where = args[i - 1] if i and args[i - 1].startswith("-") else f"argument {i + 1}"
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            return f"{where}: '{shown}' is not valid UTF-8 text"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``svcluster`` script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SVCLUSTER_DEBUG") == "1"
    _register_commands()
    bad = undecodable_argument(args)
    if bad:
        stderr.print(f"error: {bad}", markup=False, highlight=False)
        code = 2
        if argv is None:
            sys.exit(code)
        return code
    try:
        result = app(args=args, prog_name="svcluster", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except _EXIT as exc:
        code = exc.exit_code
    except _ABORT:
        stderr.print("aborted", markup=False)
        code = 130
    except _USAGE as exc:
        exc.show(file=sys.stderr)
        code = exc.exit_code
    except (SvclusterError, KeyboardInterrupt) as exc:
        if debug:
            raise
        message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        stderr.print(f"error: {message}", markup=False, highlight=False)
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    except Exception as exc:  # an unexpected failure: still one line, the rest behind --debug
        if debug:
            raise
        stderr.print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", markup=False, highlight=False)
        code = 1
    if argv is None:
        sys.exit(code)
    return code
