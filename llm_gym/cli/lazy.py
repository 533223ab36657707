"""A click group whose subcommands are imported only when they are invoked (or listed),
and whose command lists show each one-line description whole."""

from __future__ import annotations

import importlib
import types
from typing import Any

import click

# click cuts a command's description in a group's listing to what fits beside the
# longest name ("..."); the help formatter wraps long lines anyway, so never cut.
_NO_CUT = 10_000


def format_commands_whole(group: click.Group, ctx: click.Context,
                          formatter: click.HelpFormatter) -> None:
    """``Group.format_commands`` with each description's first sentence in full."""
    rows = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            rows.append((name, command.get_short_help_str(_NO_CUT)))
    if rows:
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def show_descriptions_whole(group: click.Group) -> None:
    """Make ``group`` and every group under it list descriptions whole: the groups are
    defined in several modules, this is the one place their listing is decided."""
    group.format_commands = types.MethodType(format_commands_whole, group)  # type: ignore[method-assign]
    for command in group.commands.values():
        if isinstance(command, click.Group):
            show_descriptions_whole(command)


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            module_name, attr = self.lazy_commands[name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if isinstance(command, click.Group):
                show_descriptions_whole(command)
            return command
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_commands_whole(self, ctx, formatter)
