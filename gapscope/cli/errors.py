"""How every ``gapscope`` command reports failure: one line on stderr and an exit code.

Exit codes: 0 ok; 1 a check found a regression; 2 bad usage or bad input (a
:class:`~gapscope.errors.GapscopeError`, an operating-system error such as a missing or
unwritable path, or a usage error of the option parser); 3 a crash (a bug in gapscope or in a
library it calls: one line naming the exception and the file that holds its traceback; the
traceback on stderr instead when ``GAPSCOPE_TRACEBACK=1``; under ``torchrun`` the other
processes say which process crashed); 130 interrupted; 141 the reader of
standard output went away (``gapscope analyze --help | head -1``): the command ends quietly,
with the status of a process that SIGPIPE ended, as other command-line tools do.

CI tells these apart by the code alone, so none of them may print a traceback or a multi-line
panel: a usage error of the option parser is rewritten into one line here too
(:class:`OneLineUsageGroup`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from gapscope._version import __version__
from gapscope.errors import GapscopeError, ProcessCrashedError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BROKEN_PIPE",
    "EXIT_CRASH",
    "EXIT_INTERRUPTED",
    "EXIT_REGRESSION",
    "OneLineUsageGroup",
    "closed_output",
    "fail",
    "handle_errors",
    "report_crash",
    "route_broken_pipes",
    "usage_message",
    "write_crash_file",
]

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_CRASH = 3
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE: what a shell reports for a tool whose output pipe was closed.
EXIT_BROKEN_PIPE = 141
#: Set to 1 to see the traceback of a crash instead of its one line.
TRACEBACK_VARIABLE = "GAPSCOPE_TRACEBACK"
#: What Ctrl-C prints when the command has nothing more specific to say.
INTERRUPTED = "Interrupted."

# The option parser's exception classes, found through the one typer exports, so this works
# with typer's own copy of click (typer >= 0.22) as with click itself (older typer).
_PARSER_ERRORS = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
_USAGE_ERROR: type[Exception] = _PARSER_ERRORS["UsageError"]
_CLICK_EXCEPTION: type[Exception] = _PARSER_ERRORS["ClickException"]


def one_line(message: object) -> str:
    """``message`` with every run of whitespace (line breaks included) as one space.

    >>> one_line("a\\n  b\\tc ")
    'a b c'
    """
    return " ".join(str(message).split())


def fail(message: str) -> typer.Exit:
    """Print ``Error: message`` on one line to stderr and return the exit-2 exception to raise."""
    typer.echo(f"Error: {one_line(message)}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def closed_output() -> int:
    """Standard output's reader went away (``| head -1``): end quietly, exit 141.

    Python ignores SIGPIPE, so writing to a closed pipe raises ``BrokenPipeError`` instead of
    ending the process as it ends other tools. What is left in the output buffers would raise
    it again when the interpreter flushes them on exit, so standard output is pointed at
    ``os.devnull`` first (the approach of Python's documentation, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # no file descriptor behind stdout (tests capture it): nothing to protect
    return EXIT_BROKEN_PIPE


def _raise_broken_pipe(console: Any) -> None:
    if not getattr(console, "quiet", False):
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def route_broken_pipes() -> None:
    """Have rich raise ``BrokenPipeError`` on a closed output, like every other write.

    rich's ``Console.on_broken_pipe`` (its documented hook for this) exits with status 1 by
    default, the status ``gapscope check`` gives a regression; raised instead, the error
    reaches :func:`handle_errors` (or the command group, for ``--help``), which ends quietly
    with 141 (:func:`closed_output`). Applies to every console, typer's help included.
    """
    from rich.console import Console

    Console.on_broken_pipe = _raise_broken_pipe  # type: ignore[method-assign, assignment]


def _describe(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}: {where}" if where else reason


def write_crash_file(exc: BaseException) -> str | None:
    """Write the traceback of ``exc`` (with the version, Python and the command line) to a new
    file ``gapscope-crash-<time>-<pid>-<random>.txt`` in the temporary folder; its path, or
    ``None`` when it cannot be written (a crash report must never crash).

    The file is created readable by its owner only: a traceback shows paths and values of the
    user's data, and the temporary folder may be shared.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        fd, path = tempfile.mkstemp(prefix=f"gapscope-crash-{stamp}-{os.getpid()}-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"gapscope {__version__} on Python {sys.version.split()[0]}\n")
            fh.write(f"command: {' '.join(sys.argv)}\n\n")
            fh.write("".join(traceback.format_exception(exc)))
    except Exception:  # noqa: BLE001 - no disk, no permission: the one line still goes out
        return None
    return path


def report_crash(exc: BaseException) -> int:
    """Print the one line of a crash (naming the file with its traceback); return exit 3."""
    detail = one_line(exc) or "no message"
    path = write_crash_file(exc)
    if path is not None:
        where = f"the traceback is in {path} ({TRACEBACK_VARIABLE}=1 prints it)"
    else:
        where = f"rerun with {TRACEBACK_VARIABLE}=1 for the traceback"
    typer.echo(
        f"Error: gapscope crashed ({type(exc).__name__}: {detail}); this is a bug: {where}; "
        "please report it",
        err=True,
    )
    return EXIT_CRASH


def handle_errors(func: F | None = None, *, interrupted: str = INTERRUPTED) -> Any:
    """Decorate a command so library errors become one-line messages and exit codes.

    ``interrupted`` is what Ctrl-C prints (extract says that it can resume). A crash (any
    exception that is not bad input) exits 3 with one line that names the file holding its
    traceback; with ``GAPSCOPE_TRACEBACK=1`` it propagates instead.
    """

    def decorate(inner: F) -> F:
        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return inner(*args, **kwargs)
            except GapscopeError as exc:
                raise fail(str(exc)) from None
            except ProcessCrashedError as exc:
                # Not this process's crash: the one that crashed reports it (and its file).
                typer.echo(f"Error: {one_line(exc)}", err=True)
                raise typer.Exit(EXIT_CRASH) from None
            except BrokenPipeError:
                raise typer.Exit(closed_output()) from None
            except OSError as exc:
                raise fail(_describe(exc)) from None
            except KeyboardInterrupt:
                typer.echo(interrupted, err=True)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except (typer.Exit, typer.Abort, SystemExit, _CLICK_EXCEPTION):
                raise  # click's Exit is a RuntimeError: before the loop test below
            except RuntimeError as exc:
                loop = _symlink_loop(exc)
                if loop is None:
                    if os.environ.get(TRACEBACK_VARIABLE) == "1":
                        raise
                    raise typer.Exit(report_crash(exc)) from None
                raise fail(loop) from None
            except Exception as exc:
                if os.environ.get(TRACEBACK_VARIABLE) == "1":
                    raise
                raise typer.Exit(report_crash(exc)) from None

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _symlink_loop(exc: RuntimeError) -> str | None:
    """The one line for a path through a loop of symbolic links, which ``Path.resolve``
    reports as a ``RuntimeError`` on Python 3.11 and 3.12 (later versions raise ``OSError``,
    described with the others); ``None`` for any other ``RuntimeError``."""
    text = str(exc)
    prefix = "Symlink loop from "
    if not text.startswith(prefix):
        return None
    return f"{text[len(prefix) :].strip(chr(39))}: a loop of symbolic links"


# ----------------------------------------------------------------------------- usage errors


def usage_message(exc: Exception, command: str = "gapscope") -> str:
    """One line for a usage error of the option parser, naming the option and the value, with
    a pointer to the help of the command (``command`` when the error does not say which).

    E.g. ``--batch-size: 'x' is not a valid integer (see gapscope extract --help)``.
    """
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or command
    return f"{one_line(_problem(exc)).rstrip('.')} (see {command} --help)"


def _problem(exc: Exception) -> str:
    kind = type(exc).__name__
    if kind == "NoSuchOption":
        return _no_such_option(exc)
    param = getattr(exc, "param", None)
    if kind == "MissingParameter":
        what = "argument" if getattr(param, "param_type_name", "") == "argument" else "option"
        return f"missing {what} {_param_name(param)}" if param is not None else str(exc)
    if kind == "BadParameter" and param is not None:
        return f"{_param_name(param)}: {_bad_value(exc)}"
    format_message = getattr(exc, "format_message", None)
    text = format_message() if callable(format_message) else str(exc)
    # "No such command 'x'." -> lower case, as every other gapscope message starts.
    return text[:1].lower() + text[1:]


def _no_such_option(exc: Exception) -> str:
    text = f"no such option {getattr(exc, 'option_name', '')}"
    possible = sorted(getattr(exc, "possibilities", None) or [])
    return f"{text} (did you mean {' or '.join(possible)}?)" if possible else text


def _param_name(param: Any) -> str:
    """``--batch-size`` for an option (its long names), ``SHARDS`` for an argument."""
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.name).upper()
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(param.opts)
    return "/".join(opts)


def _bad_value(exc: Exception) -> str:
    """``'x' is not a valid integer`` from the parser's message and the value it got."""
    message = str(getattr(exc, "message", exc)).strip()
    value = _bad_input(exc)
    found = re.match(r"Input should be (.+?)(?:, .*)?$", message)
    if found and value is not None:
        return f"{value!r} is not {found.group(1)}"
    return message


def _bad_input(exc: Exception) -> Any:
    # typer >= 0.22 checks values with pydantic; the offending value is in its error.
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors):
        with contextlib.suppress(Exception):
            return errors()[0].get("input")
    return None


@contextlib.contextmanager
def _one_line_errors(ctx: Any = None) -> Iterator[None]:
    """Usage errors, Ctrl-C and crashes raised while parsing or dispatching, as one line."""
    try:
        yield
    except _USAGE_ERROR as exc:
        command = _command_path(ctx)
        if type(exc).__name__ == "NoArgsIsHelpError":
            # Typer has printed the help on stdout; stderr still gets its one line.
            what = "command" if command == "gapscope" else "arguments"
            typer.echo(f"Error: no {what} given (see {command} --help)", err=True)
        else:
            typer.echo(f"Error: {usage_message(exc, command)}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except _CLICK_EXCEPTION as exc:
        typer.echo(f"Error: {one_line(exc)}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:  # --help into a closed pipe
        raise typer.Exit(closed_output()) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        if os.environ.get(TRACEBACK_VARIABLE) == "1":
            raise
        raise typer.Exit(report_crash(exc)) from None


_COMMAND_KEY = "gapscope.command"


def _command_path(ctx: Any) -> str:
    """``gapscope`` or ``gapscope <command>``: the command being parsed (some parser errors
    carry no context of their own)."""
    if ctx is None:
        return "gapscope"
    name = ctx.meta.get(_COMMAND_KEY)
    return f"{ctx.command_path} {name}" if name else ctx.command_path


class OneLineUsageGroup(TyperGroup):
    """The command group of ``gapscope``: usage errors of the option parser (a bad value, an
    unknown option or command, a missing argument) become one line and exit 2 instead of
    typer's usage panel; Ctrl-C while parsing exits 130 with one line; a crash outside a
    command exits 3 with one line. A bare command (no arguments) shows its help on stdout and
    one line on stderr, and exits 2."""

    def make_context(self, info_name: str | None, args: list[str], *a: Any, **kw: Any) -> Any:
        route_broken_pipes()
        with _one_line_errors():
            return super().make_context(info_name, args, *a, **kw)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[_COMMAND_KEY] = name
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        with _one_line_errors(ctx):
            return super().invoke(ctx)
