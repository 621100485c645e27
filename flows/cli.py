"""The ``svcluster`` command line: one entry point, a sub-command per step (the README lists them).

Every command prints a short human summary on stdout, or with ``--json`` one strict JSON
document (NaN and ±Infinity become null, with a note on stderr); logs and progress go to
stderr. Errors are one readable line (``--debug``, before or after the command, shows the
traceback) and the exit code is 0 only on success. The commands live in ``flows/commands/``;
this module owns the options every command shares, how each command opens the lake (see
``LAKE_MODES``), Ctrl-C, and how results, tables and errors reach the user.

Ctrl-C: the first SIGINT interrupts the command's main thread as usual (a pipeline stops
scheduling batches and its flows record the interruption) and starts a short grace period; the
command then exits with 130 and "interrupted; rerun to resume". A batch still running in a worker
thread when the grace period ends is abandoned (every lake write is atomic, so nothing half
written is seen, and the rerun resumes from what the lake holds), helper processes are stopped,
and the process exits. A second Ctrl-C does that at once.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import _thread
import signal
import sys
import threading
import traceback
from dataclasses import asdict, dataclass, is_dataclass
from decimal import Decimal
from typing import Annotated, Any, Callable, Optional

import click
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.lake.delta import set_step
from svcluster.tasks.lake.store import Lake, LakeMode, open_lake
from svcluster.tasks.processes import stop_helpers
from svcluster.tasks.settings import Settings, load_settings

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

INTERRUPTED = "interrupted; rerun to resume"
INTERRUPT_GRACE_SECONDS = 5.0  # after the first Ctrl-C, how long the command may take to wind down

# How each command opens the lake (svcluster.tasks.lake.store.open_lake): only the commands that bring a map in
# create one; the reading commands write nothing at all (a read-only lake still answers); every
# other command needs an existing lake and may write to it.
LAKE_MODES: dict[str, LakeMode] = {
    "ingest": "create", "run": "create", "demo": "create",
    "runs": "read", "sql": "read", "compare": "read", "export": "read", "report": "read",
    "history": "read",  # svcluster lake history (lake migrate opens the lake itself: it converts an old one)
}  # fmt: skip
DEFAULT_LAKE_MODE: LakeMode = "write"

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
    """What a command needs: its settings, whether to print JSON, and the lake (opened lazily,
    as ``mode`` says: see ``LAKE_MODES``)."""

    settings: Settings
    json: bool
    mode: LakeMode = DEFAULT_LAKE_MODE
    _lake: Lake | None = None

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = open_lake(self.settings.lake, mode=self.mode)
        return self._lake


def invocation(ctx: typer.Context, lake: str | None = None, json_output: bool = False) -> Invocation:
    """Merge the global options with the command's own (the command's win)."""
    state: CliState = ctx.find_root().obj or CliState()
    settings = load_settings(lake=lake or state.lake)
    mode = LAKE_MODES.get(ctx.info_name or "", DEFAULT_LAKE_MODE)
    set_step(ctx.info_name or "svcluster")  # each commit records the command that made it (lake history)
    return Invocation(settings=settings, json=json_output or state.json, mode=mode)


def to_jsonable(value: Any, _nonfinite: list[int] | None = None) -> Any:
    """``value`` as plain JSON types: dataclasses as objects, numbers as numbers (NaN and
    ±Infinity, which JSON has not, as null: counted in ``_nonfinite[0]`` when given), anything
    else as its text."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value), _nonfinite)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, _nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, _nonfinite) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (numbers.Real, Decimal)):
        number = float(value)
        if not math.isfinite(number):
            if _nonfinite is not None:
                _nonfinite[0] += 1
            return None
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        return number
    return str(value)


def json_text(value: Any) -> str:
    """``value`` as one strict JSON document (RFC 8259: no NaN or Infinity); a note on stderr
    says how many non-finite numbers became null."""
    nonfinite = [0]
    doc = to_jsonable(value, nonfinite)
    if nonfinite[0]:
        stderr.print(
            f"note: {nonfinite[0]} NaN or infinite value{'s' if nonfinite[0] != 1 else ''} written as null (JSON has no NaN or Infinity)",
            markup=False, highlight=False,
        )  # fmt: skip
    return json.dumps(doc, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def emit(inv: Invocation, result: Any, summary: str | Callable[[], None]) -> None:
    """Print the result: JSON with ``--json``, else the human summary (text or a printer)."""
    if inv.json:
        sys.stdout.write(json_text(result))
    elif callable(summary):
        summary()
    else:
        stdout.print(summary, highlight=False, markup=False)


def print_table(table: Table, console: Console | None = None) -> None:
    """Print a rich table without cutting any cell: a cell that is one word (a number, a run
    name like ``chile-demo@v41``, an id) is never wrapped, longer text wraps within its
    column, and a table wider than the terminal is printed as wide as it needs (the terminal
    folds its lines) instead of having its cells squeezed into "…"."""
    console = console or stdout
    for column in table.columns:
        column.overflow = "fold"
        cells = [str(c) for c in column.cells]
        if all(len(c.split()) <= 1 for c in cells):
            column.no_wrap = True
    needed = _width_needed(console, table)
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(table)
    finally:
        console.width = width


_registered = False


def _register_commands() -> None:
    """Add every step's commands to the app (once per process: main() may run many times)."""
    global _registered
    if _registered:
        return
    from svcluster.flows.commands import COMMAND_MODULES

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


def _width_needed(console: Console, table: Table) -> int:
    """The narrowest width at which no cell is cut: the one-word columns at their widest, the
    others at their longest word, plus borders and padding."""
    options = console.options.update_width(1_000_000)
    measure = getattr(table, "_measure_column", None)
    if measure is None:  # pragma: no cover - another rich: its natural width is always safe
        return Measurement.get(console, options, table).maximum
    widths = [measure(console, options, column) for column in table.columns]
    return table._extra_width + sum(m.maximum if column.no_wrap else m.minimum for column, m in zip(table.columns, widths))


def hoist_debug(args: list[str]) -> list[str]:
    """``--debug`` is a global option that is also accepted after the command
    (``svcluster sql --debug ...``): moved to the front, unless it comes after ``--``."""
    cut = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:cut]:
        return args
    return ["--debug", *(a for a in args[:cut] if a != "--debug"), *args[cut:]]


REDELIVER_S = 0.05  # how soon a Ctrl-C that landed in a finalizer is delivered again


def _in_finalizer(frame: Any) -> bool:
    """Whether ``frame`` runs inside a ``__del__`` (anywhere down its stack)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


class Interrupts:
    """SIGINT (Ctrl-C) for one command, see the module docstring: the first raises
    KeyboardInterrupt in the main thread and arms a timer that, if the command has not ended
    ``grace`` seconds later, abandons it; a second abandons it at once. Abandoning: the
    message, helper processes stopped, exit 130 without waiting for worker threads."""

    def __init__(self, grace: float = INTERRUPT_GRACE_SECONDS):
        self.grace = grace
        self.count = 0
        self._said = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._previous: Any = None
        self._installed = False

    def install(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def uninstall(self) -> None:
        """Restore the previous handler and disarm the timer (a caller that goes on running)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if _in_finalizer(frame):
            # An exception raised inside a __del__ (the garbage collector finalising an HTTP
            # response, say) is printed as "Exception ignored ..." and dropped: ask again just after.
            threading.Timer(REDELIVER_S, _thread.interrupt_main, (signal.SIGINT,)).start()
            return
        self.count += 1
        if self.count == 1:
            self._timer = threading.Timer(self.grace, self.abandon)
            self._timer.daemon = True
            self._timer.start()
            raise KeyboardInterrupt
        self.abandon()

    def say(self) -> None:
        """Print the interruption line (once)."""
        with self._lock:
            if self._said:
                return
            self._said = True
        stderr.print(INTERRUPTED, markup=False, highlight=False)

    def abandon(self) -> None:  # pragma: no cover - ends the process
        self.say()
        try:
            stop_helpers()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(130)


def _validation_message(exc: Exception) -> str:
    """A pydantic ValidationError in one line: the first bad field and why."""
    errors = exc.errors()  # type: ignore[attr-defined]
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "value"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field.replace('_', '-')}: {first.get('msg', 'invalid')}{more}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``svcluster`` script; returns the process exit code."""
    interrupts = Interrupts().install()
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv), interrupts)
    except KeyboardInterrupt:  # before the command started (while loading it)
        code = 130
    if interrupts.count or code == 130:  # typer turns a KeyboardInterrupt into exit code 130
        interrupts.say()
        code = 130
    if argv is None:
        sys.exit(code)  # the grace timer stays armed: a shutdown that hangs is cut short
    interrupts.uninstall()
    return code


def _run(args: list[str], interrupts: Interrupts) -> int:
    from pydantic import ValidationError

    args = hoist_debug(args)
    debug = "--debug" in args or os.environ.get("SVCLUSTER_DEBUG") == "1"
    _register_commands()
    bad = undecodable_argument(args)
    if bad:
        stderr.print(f"error: {bad}", markup=False, highlight=False)
        return 2
    try:
        result = app(args=args, prog_name="svcluster", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except _EXIT as exc:
        code = exc.exit_code
    except _ABORT:
        stderr.print("aborted", markup=False)
        code = 1
    except _USAGE as exc:
        exc.show(file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        code = 130
    except (SvclusterError, ValidationError) as exc:
        if interrupts.count and not debug:  # what the interruption caused: the one line says it
            return 130
        if debug:
            raise
        message = _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        stderr.print(f"error: {message}", markup=False, highlight=False)
        code = 1
    except Exception as exc:  # an unexpected failure: still one line, the rest behind --debug
        if interrupts.count and not debug:
            return 130
        if debug:
            raise
        stderr.print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", markup=False, highlight=False)
        code = 1
    return code
