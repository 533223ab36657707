"""Consoles: data to stdout, messages and errors to stderr."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from llm_gym.errors import ReportedError, UserError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_error(exc: UserError | ReportedError) -> None:
    """A user error with its list of problems, or a reported failure, without traceback."""
    if not isinstance(exc, UserError):
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        return
    err.print(f"[bold red]{exc.label}:[/] {escape(exc.message)}")
    for problem in exc.problems:
        err.print(f"  [red]-[/] {escape(problem)}")
