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
    label = "error"  # how the CLI introduces the message

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return "\n".join([self.message, *(f"  - {p}" for p in self.problems)])

    def at(self, path: str) -> UserError:
        """This error named at YAML ``path`` (``train_dataset.config.sources[1]: ...``),
        once: the innermost place it is known at wins, outer ones leave it as it is."""
        if getattr(self, "located", False):
            return self
        import copy

        found = copy.copy(self)
        found.message = f"{path}: {self.message}"
        found.args = (found.message,)
        found.located = True
        return found


class ReportedError(Exception):
    """A failure that is not the user's mistake but whose message already says all that
    helps (e.g. which worker died and how): printed without our traceback, exit code 1."""

    exit_code = 1
