"""``llm_gym recipe ...``: list, show, validate, lock, schema, run."""

from __future__ import annotations

from pathlib import Path

import click

from llm_gym.cli.params import BoundedInt, FiniteFloat, bad_parameter

# Local workers are processes on one machine: a thousand is past any machine's GPUs or
# cores, and a typo such as --nproc 100000 would start that many interpreters.
MAX_LOCAL_WORKERS = 1024
# A plan models at most this many ranks (2**17; the largest clusters have about 100,000
# GPUs): the dry run shards the model over all of them, about a millisecond per rank
# (16,384 ranks: 23 s on 2 CPU cores).
MAX_PLANNED_RANKS = 131_072

recipe_dir_option = click.option(
    "--recipe-dir", "recipe_dirs", multiple=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Extra directory of recipes (<name>/v<N>.yaml); repeatable. "
    "Also: LLM_GYM_RECIPE_PATH.",
)
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
spec_argument = click.argument("spec", metavar="NAME[@V]|PATH")


@click.group()
def recipe() -> None:
    """Find, inspect, validate, pin and run recipes."""


@recipe.command("list")
@recipe_dir_option
def list_recipes(recipe_dirs: tuple[Path, ...]) -> None:
    """List recipes: name, versions and a one-line description."""
    from rich.table import Table

    from llm_gym.cli.output import out
    from llm_gym.recipes.catalog import RecipeCatalog
    from llm_gym.registry import ResolverRegistry

    catalog = RecipeCatalog.from_registry(ResolverRegistry.from_installed_plugins(), recipe_dirs)
    table = Table("recipe", "versions", "description", box=None, pad_edge=False)
    for name in catalog.names():
        refs = catalog.versions(name)
        table.add_row(name, ", ".join(str(r.version) for r in refs), refs[-1].description())
    out.print(table)


@recipe.command()
@spec_argument
@overrides_argument
@recipe_dir_option
@click.option("--allow-drift", is_flag=True, help="Show it even if pins drifted.")
def show(spec: str, overrides: tuple[str, ...], recipe_dirs: tuple[Path, ...],
         allow_drift: bool) -> None:
    """Print the recipe as YAML with interpolations and overrides resolved."""
    from llm_gym.cli.output import out
    from llm_gym.recipes.loading import load_recipe
    from llm_gym.recipes.resolved import resolved_yaml

    loaded = load_recipe(spec, overrides, recipe_dirs=recipe_dirs, allow_drift=allow_drift)
    out.print(resolved_yaml(loaded), end="", markup=False, highlight=False)


@recipe.command()
@spec_argument
@overrides_argument
@recipe_dir_option
@click.option("--allow-drift", is_flag=True, help="Warn about drifted pins instead of failing.")
def validate(spec: str, overrides: tuple[str, ...], recipe_dirs: tuple[Path, ...],
             allow_drift: bool) -> None:
    """Check a recipe without training: YAML, interpolation, every value, its pins, and
    what the run would refuse (data files, vocabulary and sequence length, evaluation)."""
    from llm_gym.cli.output import out, warn
    from llm_gym.recipes.loading import load_recipe

    loaded = load_recipe(spec, overrides, recipe_dirs=recipe_dirs, allow_drift=allow_drift,
                         preflight=True)
    for drift in loaded.drift:
        warn(f"pin drifted: {drift}")
    count = len(loaded.recipe.components())
    out.print(f"{loaded.ref.label} ({loaded.ref.path}) is valid: {count} components, pins "
              + ("drifted (allowed)" if loaded.drift else "match"), markup=False)


@recipe.command()
@spec_argument
@recipe_dir_option
def lock(spec: str, recipe_dirs: tuple[Path, ...]) -> None:
    """Re-pin a recipe to the installed components, after a deliberate change."""
    from llm_gym.cli.output import out
    from llm_gym.recipes.loading import load_recipe
    from llm_gym.recipes.pins import NOT_PINNED, current_pins, write_pins

    loaded = load_recipe(spec, recipe_dirs=recipe_dirs, allow_drift=True)
    pins = current_pins(loaded.recipe)
    write_pins(loaded.ref.path, pins)
    if loaded.drift == [NOT_PINNED]:
        out.print(f"{loaded.ref.label}: pinned {len(pins)} components: {', '.join(pins)}",
                  markup=False)
    elif loaded.drift:
        for drift in loaded.drift:
            out.print(f"re-pinned {drift}", markup=False)
    else:
        out.print(f"{loaded.ref.label}: pins already match", markup=False)


@recipe.command()
@click.option("--out", "out_path", type=click.Path(path_type=Path),
              help="Write to this file instead of stdout.")
def schema(out_path: Path | None) -> None:
    """Print the JSON Schema of the recipe format (for YAML editors)."""
    import json

    from llm_gym.cli.output import out
    from llm_gym.config.recipe_model import recipe_json_schema
    from llm_gym.registry import ResolverRegistry

    text = json.dumps(recipe_json_schema(ResolverRegistry.from_installed_plugins()), indent=2)
    if out_path is None:
        out.print(text, markup=False, highlight=False)
    else:
        from llm_gym.errors import UserError
        from llm_gym.fileio import atomic_output

        data = (text + "\n").encode("utf-8")
        where = f"--out {out_path}: cannot write it"
        parent = out_path.parent
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{where} ({parent} is a file, not a directory)")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(out_path, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise UserError(f"{where} ({exc.strerror or exc})") from None
        except UserError as exc:
            raise UserError(f"{where}: {exc.message}") from None
        out.print(f"wrote the recipe JSON Schema to {out_path} ({len(data):,} bytes)",
                  markup=False, highlight=False)


@recipe.command(context_settings={"ignore_unknown_options": False})
@spec_argument
@overrides_argument
@click.option("--nproc", type=BoundedInt(1, MAX_LOCAL_WORKERS), default=1, show_default=True,
              help="Local worker processes (torch.distributed elastic launcher).")
@click.option("--run-dir", type=click.Path(path_type=Path),
              help="Where checkpoints and metrics go (default: runs/<recipe>-<time>).")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint.")
@click.option("--allow-drift", is_flag=True, help="Run although pins drifted (with a warning).")
@click.option("--allow-change", "allow_changes", multiple=True, metavar="KEY",
              help="On resume, train with a changed value of recipe KEY (or every key under "
              "it), e.g. optimizer.config.lr; repeatable. Keys the checkpoint cannot honour "
              "(the model's shape, the data) are refused anyway: docs/resuming.md.")
@recipe_dir_option
def run(spec: str, overrides: tuple[str, ...], nproc: int, run_dir: Path | None, resume: bool,
        allow_drift: bool, allow_changes: tuple[str, ...], recipe_dirs: tuple[Path, ...]) -> None:
    """Train with a recipe, on one process or N local workers (also under torchrun).

    Resuming (--resume, or a --run-dir with checkpoints) compares the recipe with the
    one that wrote the checkpoint and refuses changes the checkpoint cannot honour."""
    from llm_gym.runner.entry import run_recipe

    run_recipe(spec, overrides, nproc=nproc, run_dir=run_dir, resume=resume,
               allow_drift=allow_drift, recipe_dirs=recipe_dirs, allow_changes=allow_changes)


@recipe.command()
@spec_argument
@overrides_argument
@click.option("--nodes", type=BoundedInt(1, MAX_PLANNED_RANKS), default=1, show_default=True,
              help="Nodes the run will use.")
@click.option("--gpus-per-node", type=BoundedInt(1, 1024), default=8, show_default=True,
              help="GPUs per node (one rank each).")
@click.option("--gpu", default="h100", show_default=True,
              help="GPU model: h200, h100, a100, a100-40gb, l40s, a10g, l4, v100, 4090.")
@click.option("--mfu", type=FiniteFloat(0, 1, min_open=True), default=0.4,
              show_default=True, help="Assumed model FLOPs utilisation for the step time.")
@click.option("--no-dry-run", is_flag=True,
              help="Skip building and sharding the model over a simulated world.")
@click.option("--allow-drift", is_flag=True, help="Plan although pins drifted.")
@recipe_dir_option
def plan(spec: str, overrides: tuple[str, ...], nodes: int, gpus_per_node: int, gpu: str,
         mfu: float, no_dry_run: bool, allow_drift: bool, recipe_dirs: tuple[Path, ...]) -> None:
    """Will it fit, how fast will it run: memory per GPU, FLOPs, step time and
    communication at NODES x GPUS-PER-NODE, then a dry run of the sharded model on this
    CPU. Exits with code 2 if it will not fit or the dry run fails."""
    from llm_gym.cli.output import markup_out, out, warn
    from llm_gym.errors import UserError
    from llm_gym.planning.dry_run import dry_run
    from llm_gym.planning.plan import make_plan
    from llm_gym.planning.report import gib, render
    from llm_gym.recipes.loading import load_recipe
    from llm_gym.registry import ResolverRegistry

    if nodes * gpus_per_node > MAX_PLANNED_RANKS:
        raise bad_parameter("--nodes", f"{nodes} x --gpus-per-node {gpus_per_node} = "
                            f"{nodes * gpus_per_node:,} ranks, more than the "
                            f"{MAX_PLANNED_RANKS:,} a plan models")
    registry = ResolverRegistry.from_installed_plugins()
    loaded = load_recipe(spec, overrides, registry=registry, recipe_dirs=recipe_dirs,
                         allow_drift=allow_drift)
    for drift in loaded.drift:
        warn(f"pin drifted: {drift}")
    the_plan = make_plan(loaded.recipe, label=loaded.ref.label, nodes=nodes,
                         gpus_per_node=gpus_per_node, gpu=gpu, mfu=mfu, registry=registry)
    result = render(the_plan, markup_out)  # the report's own styling
    if not no_dry_run:
        traced = dry_run(loaded, ranks=nodes * gpus_per_node, gpus_per_node=gpus_per_node,
                         registry=registry)
        out.print(traced.message, markup=False)
        if loaded.recipe.trainer.compile:
            out.print("  torch.compile was not traced: the blocks ran eagerly", markup=False)
        if traced.no_grad:
            warn(f"backward left {len(traced.no_grad)} parameters "
                 f"without a gradient: {', '.join(traced.no_grad[:5])}")
    if not result.fits:
        raise UserError(f"{loaded.ref.label} will not fit on {nodes} x {gpus_per_node} "
                        f"{the_plan.gpu}: peak {gib(result.peak)} per GPU of "
                        f"{gib(the_plan.gpu_bytes)}; see what to change above")
