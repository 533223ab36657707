"""A tiny language model and training routines run in 1 process or under launch_local.

Every routine here is a module-level function (workers are spawned and find it by name)
that enters ``distributed_world()``, so the same code runs in the pytest process as a
1-rank world and in N workers. Results come back as plain python values; full tensors
are gathered and returned by rank 0 for bitwise comparisons in the parent.
"""

from __future__ import annotations

import atexit
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from llm_gym.runner.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from llm_gym.runner.distributed import World, all_reduce_mean, distributed_world, seed_everything
from llm_gym.runner.parallelize import clip_grad_norm_, parallelize
from tests.threads import single_threaded

VOCAB, DIM, BLOCKS, SEQ, GLOBAL_BATCH = 32, 16, 4, 8, 4
SEED = 1234


class Block(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(torch.tanh(self.fc(self.norm(x))))


class TinyLM(nn.Module):
    """Embedding -> residual blocks -> head tied to the embedding, like GPT-2 in small."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, DIM)
        self.h = nn.ModuleList(Block(DIM, dropout) for _ in range(BLOCKS))
        self.ln_f = nn.LayerNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight
        nn.init.normal_(self.wte.weight, std=0.1)  # small logits: a sane starting loss

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


def global_batch(step: int) -> torch.Tensor:
    """The same global batch for a step on every world size."""
    gen = torch.Generator().manual_seed(10_000 + step)
    return torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=gen)


def local_part(batch: torch.Tensor, world: World) -> torch.Tensor:
    per_rank = batch.size(0) // world.world_size
    return batch[world.rank * per_rank : (world.rank + 1) * per_rank]


def build(world: World, *, dropout: float = 0.0, **parallel: Any) -> TinyLM:
    seed_everything(SEED, 0)  # identical initial values on every rank
    model = TinyLM(dropout).to(world.device)
    return parallelize(model, list(model.h), world=world, **parallel)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {k: v.clone() for k, v in get_model_state_dict(model, options=options).items()}


def full_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad
        grads[name] = (g.full_tensor() if isinstance(g, DTensor) else g).detach().cpu().clone()
    return grads


def make_optimizer(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


# --- the suite run once per world size -------------------------------------------------


@single_threaded
def parallel_suite(steps: int = 3) -> dict[str, Any]:
    """Everything parallelize/clip/collectives tests compare between 1 and 2 processes."""
    out: dict[str, Any] = {}
    with distributed_world() as world:
        out["world"] = world
        out["mean_of_ranks"] = all_reduce_mean(float(world.rank), world)
        out["mean_tensor"] = all_reduce_mean(torch.tensor([world.rank, 2.0]), world).tolist()

        for kind in ("sgd", "adamw"):
            model = build(world)
            out["tied_after_wrap"] = model.lm_head.weight is model.wte.weight
            out["state_dict_keys"] = sorted(model.state_dict())
            optimizer = make_optimizer(model, kind)
            losses, norms, clipped = [], [], []
            for step in range(steps):
                loss = lm_loss(model, local_part(global_batch(step), world))
                loss.backward()
                norms.append(float(clip_grad_norm_(model.parameters(), max_norm=0.5)))
                clipped.append(float(clip_grad_norm_(model.parameters(), max_norm=float("inf"))))
                optimizer.step()
                optimizer.zero_grad()
                losses.append(all_reduce_mean(loss.detach(), world).item())
            out[f"{kind}_losses"], out[f"{kind}_norms"] = losses, norms
            out[f"{kind}_norms_after_clip"] = clipped
            out[f"{kind}_state"] = full_state(model)
            out["tied_after_steps"] = model.lm_head.weight is model.wte.weight

        # Activation checkpointing must not change the numbers, dropout included (the
        # recomputation replays the saved RNG state).
        for ac in ("none", "full", 2):
            model = build(world, dropout=0.2, activation_checkpointing=ac)
            seed_everything(SEED, world.rank)
            loss = lm_loss(model, local_part(global_batch(0), world))
            loss.backward()
            out[f"ac_{ac}"] = {"loss": loss.item(), "grads": full_grads(model)}

        model = build(world, param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        optimizer = make_optimizer(model, "sgd")
        bf16 = []
        for step in range(2):
            loss = lm_loss(model, local_part(global_batch(step), world))
            out["bf16_loss_dtype"] = str(loss.dtype)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            bf16.append(all_reduce_mean(loss.detach(), world).item())
        out["bf16_losses"] = bf16
        out["bf16_master_dtypes"] = sorted({str(p.to_local().dtype) for p in model.parameters()})
    return out if world.rank == 0 else {"rank": world.rank}


# --- training with checkpoint/resume ----------------------------------------------------


@single_threaded
def train_with_checkpoints(
    run_dir: str,
    total_steps: int,
    save_every: int,
    resume: bool,
    probe_paths: tuple[str, ...] = (),
) -> dict[str, Any]:
    """AdamW + StepLR + dropout + per-rank random data: everything a resume must restore.

    Data comes from numpy and python RNGs on each rank, and each rank's "data position"
    moves by a rank-dependent amount, so a resume that mixed up ranks or RNG states, or
    lost optimizer/scheduler state, would produce different losses.
    """
    with distributed_world() as world:
        model = build(world, dropout=0.1, activation_checkpointing=2)
        optimizer = make_optimizer(model, "adamw")
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        seed_everything(SEED, world.rank)
        step, data_position = 0, 0
        resumed_from = None
        if resume:
            path = latest_checkpoint(Path(run_dir))
            assert path is not None, "nothing to resume from"
            extra = load_checkpoint(path, model=model, optimizer=optimizer, world=world)
            scheduler.load_state_dict(extra["scheduler"])
            step, data_position = extra["step"], extra["data_position"]
            resumed_from = {"step": step, "data_position": data_position, "path": str(path)}
        losses = {}
        while step < total_steps:
            rows = np.random.randint(0, VOCAB, size=(GLOBAL_BATCH // world.world_size, SEQ + 1))
            tokens = torch.from_numpy(rows).roll(random.randint(0, SEQ), dims=1)
            loss = lm_loss(model, tokens.to(world.device))
            loss.backward()
            clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            step += 1
            data_position += 1 + world.rank
            losses[step] = all_reduce_mean(loss.detach(), world).item()
            if step % save_every == 0:
                extra = {
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "data_position": data_position,
                }
                save_checkpoint(
                    Path(run_dir),
                    step,
                    model=model,
                    optimizer=optimizer,
                    world=world,
                    extra=extra,
                )
        state = full_state(model)
        # Damaged checkpoints prepared by the test, loaded in this same world.
        probes = [try_load(path) for path in probe_paths]
    return {
        "rank": world.rank,
        "losses": losses,
        "resumed_from": resumed_from,
        "data_position": data_position,
        "state": state if world.rank == 0 else None,
        "probes": probes,
    }


@single_threaded
def try_load(path: str) -> dict[str, Any]:
    """Load ``path`` into a fresh model; report the error message instead of raising.

    Inside an existing world (as a probe) it reuses that world's process group."""
    with distributed_world() as world:
        model = build(world)
        optimizer = make_optimizer(model, "adamw")
        try:
            load_checkpoint(Path(path), model=model, optimizer=optimizer, world=world)
        except Exception as exc:  # the test inspects type and message
            return {"rank": world.rank, "error": type(exc).__name__, "message": str(exc)}
        return {"rank": world.rank, "error": None, "message": ""}


# --- launcher behaviour ------------------------------------------------------------------


def print_then_fail_on(rank_to_fail: int) -> int:
    with distributed_world() as world:
        print(f"hello from rank {world.rank}", flush=True)
        torch.distributed.barrier()  # everyone has printed before anyone fails
        if world.rank == rank_to_fail:
            raise ValueError(f"deliberate failure on rank {world.rank}")
        torch.distributed.barrier()  # the healthy rank waits for a peer that never comes
        return world.rank


def raise_user_error(message: str) -> None:
    from llm_gym.errors import UserError

    raise UserError(message)


def stop_agreement_trace(first_request: dict[int, int], calls: int) -> list[bool]:
    """What ``StopAgreement.agreed`` answers on this rank over ``calls`` calls, when rank
    r requests a stop from call ``first_request[r]`` on; the ranks run out of step."""
    from llm_gym.runner.stop_agreement import StopAgreement

    with distributed_world() as world:
        agreement = StopAgreement(world)
        answers = []
        for call in range(calls):
            time.sleep(0.01 * ((world.rank + call) % 3))
            answers.append(agreement.agreed(call >= first_request.get(world.rank, calls)))
        agreement.finish()
    return answers


# --- results shared by several test modules ------------------------------------------

RESUME_K = 2  # the uninterrupted run saves at K and 2K; tests resume from K

_SESSIONS: dict[int, dict[int, Any]] = {}


def session(run_dir: str) -> dict[str, Any]:
    """The parallel suite and an uninterrupted 2K-step training run, in one world.

    One launch instead of two: starting workers costs more than the work itself here.
    The nested ``distributed_world()`` calls reuse this group.
    """
    with distributed_world():
        suite = parallel_suite()
        full_run = train_with_checkpoints(run_dir, 2 * RESUME_K, RESUME_K, resume=False)
        stop_trace = stop_agreement_trace({1: 3}, 7)  # rank 1 sees Ctrl-C before call 3
    return {"suite": suite, "full_run": full_run, "run_dir": run_dir, "stop_trace": stop_trace}


def session_results(nproc: int) -> dict[int, Any]:
    """``session`` per rank for a world of ``nproc``, computed once per test session."""
    if nproc not in _SESSIONS:
        run_dir = tempfile.mkdtemp(prefix=f"llm_gym_session{nproc}_")
        atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
        if nproc == 1:
            _SESSIONS[1] = {0: session(run_dir)}
        else:
            from llm_gym.runner.launcher import launch_local

            _SESSIONS[nproc] = launch_local(nproc, session, (run_dir,))
    return _SESSIONS[nproc]


def suite_results(nproc: int) -> dict[int, Any]:
    """``parallel_suite`` per rank for a world of ``nproc``."""
    return {rank: r["suite"] for rank, r in session_results(nproc).items()}
