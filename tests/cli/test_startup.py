"""`llm_gym --help` must stay instant: it may not import torch, pydantic or omegaconf."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import json, sys
from llm_gym.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = [m for m in ("torch", "pydantic", "omegaconf", "numpy", "class_resolver")
         if m in sys.modules]
print(json.dumps(heavy), file=sys.stderr)
"""


def test_help_imports_nothing_heavy():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert "recipe" in result.stdout and "components" in result.stdout
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []


def test_python_dash_m_and_console_script_agree():
    via_module = subprocess.run([sys.executable, "-m", "llm_gym", "--version"],
                                capture_output=True, text=True, check=True)
    assert "llm_gym" in via_module.stdout


def test_help_lists_every_description_whole():
    """click cuts descriptions to fit beside the longest name ("..."); every group,
    nested ones included, lists the first sentence of each command's help in full."""
    import click

    from llm_gym.cli.main import cli

    def groups(group: click.Group, path: list[str]):
        yield path, group
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                yield from groups(command, [*path, name])

    checked = 0
    for path, group in groups(cli, []):
        result = subprocess.run([sys.executable, "-m", "llm_gym", *path, "--help"],
                                capture_output=True, text=True, cwd=REPO, check=True,
                                env={**os.environ, "COLUMNS": "80"})
        listing = " ".join(result.stdout.split("Commands:")[1].split())
        assert "..." not in listing, (path, listing)
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            first = group.get_command(ctx, name).get_short_help_str(10_000)
            assert " ".join(first.split()) in listing, (path, name)
            checked += 1
    assert checked >= 20
