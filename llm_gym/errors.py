"""The one exception type for mistakes in what a user gave us.

The CLI prints a ``UserError`` as a short message (no traceback, exit code 2); ``--debug``
shows the traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class UserError(Exception):
    """A bad recipe, override, data file or command-line argument.

    ``message`` says what went wrong and where (file, YAML path, JSONL line);
    ``problems`` lists several findings at once, e.g. every validation error of a recipe.
    """

    exit_code = 2

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return "\n".join([self.message, *(f"  - {p}" for p in self.problems)])
