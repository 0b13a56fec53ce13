"""How every ``gapscope`` command reports failure: one line on stderr and an exit code.

Exit codes: 0 ok; 1 a check found a regression; 2 bad usage or bad input (a
:class:`~gapscope.errors.GapscopeError`, or an operating-system error such as a missing or
unwritable path); 3 a crash (a bug in gapscope or in a library it calls: one line naming the
exception, and the traceback only when ``GAPSCOPE_TRACEBACK=1``); 130 interrupted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from gapscope.errors import GapscopeError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_CRASH = 3
EXIT_INTERRUPTED = 130
#: Set to 1 to see the traceback of a crash instead of its one line.
TRACEBACK_VARIABLE = "GAPSCOPE_TRACEBACK"


def fail(message: str) -> typer.Exit:
    """Print ``Error: message`` on one line to stderr and return the exit-2 exception to raise."""
    typer.echo(f"Error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _describe(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}: {where}" if where else reason


def handle_errors(func: F | None = None, *, interrupted: str = "Interrupted.") -> Any:
    """Decorate a command so library errors become one-line messages and exit codes.

    ``interrupted`` is what Ctrl-C prints (extract says that it can resume).
    """

    def decorate(inner: F) -> F:
        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return inner(*args, **kwargs)
            except GapscopeError as exc:
                raise fail(str(exc)) from None
            except OSError as exc:
                raise fail(_describe(exc)) from None
            except KeyboardInterrupt:
                typer.echo(interrupted, err=True)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except Exception as exc:
                if os.environ.get(TRACEBACK_VARIABLE) == "1":
                    raise
                detail = " ".join(str(exc).split()) or "no message"
                typer.echo(
                    f"Error: gapscope crashed ({type(exc).__name__}: {detail}); this is a bug: "
                    f"rerun with {TRACEBACK_VARIABLE}=1 for the traceback and report it",
                    err=True,
                )
                raise typer.Exit(EXIT_CRASH) from None

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate
