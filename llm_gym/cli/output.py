"""Consoles: data to stdout, messages and errors to stderr."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from llm_gym.errors import UserError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_user_error(exc: UserError) -> None:
    err.print(f"[bold red]error:[/] {escape(exc.message)}")
    for problem in exc.problems:
        err.print(f"  [red]-[/] {escape(problem)}")
