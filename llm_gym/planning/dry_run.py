"""Build and shard a recipe's model over a simulated world, and trace one step, on a CPU.

The model is built on the meta device and handed to the runner's own ``parallelize``
over a process group of torch's ``fake`` backend (collectives that move nothing), as
one rank of ``ranks``. Its shards are then materialised as fake tensors
(``FakeTensorMode``: shapes, dtypes and strides, no storage), and one forward, loss and
backward run on a full-size micro-batch. A shape error, a sequence longer than the
model's positions, a loss that does not fit the logits or a sharding FSDP2 rejects
fails here in seconds instead of on the cluster.

The traced rank is the last one: with padding it holds the smallest, possibly empty,
shards, which is where sharding goes wrong if it does. ``torch.compile`` is not traced
(the blocks run eagerly); everything else is what the runner does.

A process can hold one default process group. If one exists (a caller inside a run),
the dry run happens in a subprocess, so the fake group never meets a real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from llm_gym.errors import UserError
from llm_gym.recipes.loading import LoadedRecipe
from llm_gym.registry import ResolverRegistry


@dataclass(frozen=True)
class DryRun:
    ranks: int
    rank: int  # the simulated rank that was traced
    seconds: float
    no_grad: tuple[str, ...] = ()  # parameters backward left without a gradient
    subprocess: bool = False

    @property
    def message(self) -> str:
        ranks = f"{self.ranks} rank{'s' if self.ranks > 1 else ''}"
        return f"dry run: OK (built, sharded over {ranks}, one forward/backward traced)"


def dry_run(
    loaded: LoadedRecipe,
    *,
    ranks: int,
    gpus_per_node: int,
    registry: ResolverRegistry | None = None,
) -> DryRun:
    """Trace one step of ``loaded`` as the last of ``ranks`` ranks; ``UserError`` if it fails."""
    import torch.distributed as dist

    if ranks < 1 or gpus_per_node < 1:
        raise UserError(f"a dry run needs at least one rank, got {ranks}")
    if dist.is_available() and dist.is_initialized():
        return _in_subprocess(loaded, ranks, gpus_per_node)
    registry = registry or ResolverRegistry.from_installed_plugins()
    return trace(loaded.recipe, registry, ranks=ranks, gpus_per_node=gpus_per_node)


def trace(recipe: Any, registry: ResolverRegistry, *, ranks: int, gpus_per_node: int) -> DryRun:
    """The dry run itself, in this process (which must hold no process group)."""
    import torch
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode

    from llm_gym.model_contract import as_language_model, build_on_meta
    from llm_gym.runner.distributed import World
    from llm_gym.runner.parallelize import parallelize_as_configured
    from llm_gym.runner.tensor_parallel import loss_takes_vocab_parallel, vocab_parallel_loss

    start = time.perf_counter()
    s, entries = recipe.trainer, recipe.components()
    rank = ranks - 1
    world = World(rank=rank, local_rank=rank % gpus_per_node, world_size=ranks,
                  device=torch.device("cpu"), backend="fake")
    model = build_on_meta(registry, recipe)
    # init_process_group chains its own excepthook; put ours back when leaving.
    previous_hook = sys.excepthook
    dist.init_process_group("fake", rank=rank, world_size=ranks)
    step = (f"sharding the model with FSDP2 over {ranks} ranks" if s.parallel.tp == 1 else
            f"cutting the model {s.parallel.tp} ways (tensor parallel) and sharding it "
            f"with FSDP2 over {ranks} ranks")
    try:
        model = parallelize_as_configured(model, s, world, compile=False)
        # Meta tensors are not fake ones; allow them in, as to_empty's source.
        with FakeTensorMode(allow_non_fake_inputs=True):
            step = "materialising the shards"
            model.to_empty(device="cpu")
            step = "initialising the shards (the model's init_weights)"
            as_language_model(model).init_weights()
            step = "building the loss and the optimizer"
            wanted = {k: entries[k] for k in ("loss", "optimizer") if k in entries}
            built = registry.build_components(
                wanted, extra_kwargs={"model": model, "world": world, "trainer": s})
            # Token values do not matter to fake tensors; 0 is a valid id for any vocab.
            batch = torch.zeros((s.micro_batch_size, s.seq_len + 1), dtype=torch.long)
            model.train()
            # As the trainer does: a loss that can, runs on logits cut by vocabulary.
            with vocab_parallel_loss(loss_takes_vocab_parallel(built.get("loss"),
                                                               s.parallel.tp)):
                step = (f"the forward pass of a micro-batch of {s.micro_batch_size} x "
                        f"{s.seq_len}")
                logits = model(batch[:, :-1])
                step = "the loss"
                loss = (built["loss"](logits, batch[:, 1:]) if "loss" in built
                        else logits.sum())
                step = "the backward pass"
                loss.backward()
            no_grad = tuple(n for n, p in model.named_parameters() if p.grad is None)
    except UserError:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(
            f"dry run over {ranks} simulated ranks failed in {step}: "
            f"{type(exc).__name__}: {detail}"
        ) from exc
    finally:
        dist.destroy_process_group()
        sys.excepthook = previous_hook
    return DryRun(ranks, rank, time.perf_counter() - start, no_grad)


def _in_subprocess(loaded: LoadedRecipe, ranks: int, gpus_per_node: int) -> DryRun:
    # The resolved recipe travels as data: the child re-validates it, no file or
    # environment lookups happen twice.
    payload = {"data": loaded.data, "label": loaded.ref.label, "ranks": ranks,
               "gpus_per_node": gpus_per_node}
    proc = subprocess.run(
        [sys.executable, "-m", "llm_gym.planning.dry_run"], input=json.dumps(payload),
        capture_output=True, text=True, check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the dry run subprocess failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise UserError(result["error"], result["problems"])
    return DryRun(**{**result, "no_grad": tuple(result["no_grad"]), "subprocess": True})


def _main() -> None:
    from llm_gym.config.recipe_model import validate_recipe

    payload = json.loads(sys.stdin.read())
    registry = ResolverRegistry.from_installed_plugins()
    try:
        recipe = validate_recipe(payload["data"], registry, source=payload["label"])
        result: dict[str, Any] = asdict(trace(recipe, registry, ranks=payload["ranks"],
                                              gpus_per_node=payload["gpus_per_node"]))
    except UserError as exc:
        result = {"error": exc.message, "problems": exc.problems}
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
