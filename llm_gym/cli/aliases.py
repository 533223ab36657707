"""The original LLMgym's command names, kept working: ``run --config_file_path`` and
``create_mmap_index``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config_file_path", "config_file_path", required=True,
              type=click.Path(path_type=Path), help="Recipe YAML file.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--allow-drift", is_flag=True, help="Run although pins drifted.")
def run_alias(config_file_path: Path, overrides: tuple[str, ...], allow_drift: bool) -> None:
    """Alias of `llm_gym recipe run PATH` (the original LLMgym command)."""
    from llm_gym.runner.entry import run_recipe

    run_recipe(str(config_file_path), overrides, allow_drift=allow_drift)


@click.command("create_mmap_index")
@click.argument("source", type=click.Path(path_type=Path))
def create_mmap_index(source: Path) -> None:
    """Alias of `llm_gym tools index FILE` (the original LLMgym command)."""
    from llm_gym.cli.tool_cmds import run_index

    run_index(source, out=None, validate=False, on_bad_line="fail")
