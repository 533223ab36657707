"""The ``llm_gym`` command tree. Subcommands import their heavy modules lazily, so that
``llm_gym --help`` never imports torch, pydantic or omegaconf."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from llm_gym import __version__
from llm_gym.cli.lazy import LazyGroup

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    cls=LazyGroup,
    context_settings=CONTEXT,
    lazy_commands={
        "recipe": "llm_gym.cli.recipe_cmds:recipe",
        "components": "llm_gym.cli.component_cmds:components",
        "tools": "llm_gym.cli.tool_cmds:tools",
        "export": "llm_gym.cli.model_cmds:export_group",
        "import": "llm_gym.cli.model_cmds:import_group",
        "generate": "llm_gym.cli.model_cmds:generate",
        "plot": "llm_gym.cli.plot_cmds:plot",
        "eval": "llm_gym.cli.eval_cmds:eval_cmd",
        # The original LLMgym's command names keep working.
        "run": "llm_gym.cli.aliases:run_alias",
        "create_mmap_index": "llm_gym.cli.aliases:create_mmap_index",
    },
)
@click.option("--debug", is_flag=True, help="Show Python tracebacks for user errors too.")
@click.version_option(__version__, prog_name="llm_gym")
def cli(debug: bool) -> None:
    """Pre-train GPT-2-class language models from declarative, versioned recipes."""


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="llm_gym", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        from llm_gym.errors import ReportedError, UserError

        if not isinstance(exc, UserError | ReportedError) or debug:
            raise
        from llm_gym.cli.output import print_error

        print_error(exc)
        sys.exit(exc.exit_code)
    sys.exit(0)
