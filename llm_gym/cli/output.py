"""Consoles: data to stdout, messages and errors to stderr.

User text (paths, prompts, recipe values) is printed literally: both consoles read no
markup (``[bold]`` in a path stays ``[bold]``), replace no emoji codes (``:x:`` stays
``:x:``) and colour nothing by guesswork. The project's own styling goes through the
helpers below, which style their prefix and print the message as given; a call that
passes ``markup=True`` must ``escape()`` whatever it interpolates.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from llm_gym.errors import ReportedError, UserError

__all__ = ["err", "escape", "markup_out", "note", "out", "print_error", "styled", "warn"]

_LITERAL = {"soft_wrap": True, "markup": False, "emoji": False, "highlight": False}

out = Console(**_LITERAL)
err = Console(stderr=True, **_LITERAL)
# For a report written in the project's own markup (tables with [bold] cells): markup
# on, emoji still off; whatever it interpolates from the user must be escape()d.
markup_out = Console(soft_wrap=True, emoji=False)


def styled(label: str, style: str, message: str) -> Text:
    """``label: message`` with only the label styled; the message stays literal."""
    return Text.assemble((f"{label}:", style), " ", message)


def warn(message: str) -> None:
    err.print(styled("warning", "yellow", message))


def note(message: str) -> None:
    err.print(styled("note", "yellow", message))


def print_error(exc: UserError | ReportedError) -> None:
    """A user error with its list of problems, or a reported failure, without traceback."""
    if not isinstance(exc, UserError):
        err.print(styled("error", "bold red", str(exc)))
        return
    err.print(styled(exc.label, "bold red", exc.message))
    for problem in exc.problems:
        err.print(Text.assemble("  ", ("-", "red"), " ", problem))
