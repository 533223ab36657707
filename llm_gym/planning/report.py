"""``recipe plan``'s output: rich tables of a Plan and a verdict with what to change."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from llm_gym.planning.memory import (
    OptimizerLayout,
    Setup,
    checkpointed_blocks,
    tensor_parallel_collectives,
)
from llm_gym.planning.plan import USABLE, Plan, alternatives
from llm_gym.runner.flops import gpu_part


@dataclass(frozen=True)
class Verdict:
    status: str  # "fits", "tight" or "does not fit"
    peak: int
    usable: int

    @property
    def fits(self) -> bool:
        return self.status != "does not fit"


def verdict(plan: Plan) -> Verdict:
    peak, usable = plan.memory().peak, int(USABLE * plan.gpu_bytes)
    if peak <= usable:
        return Verdict("fits", peak, usable)
    return Verdict("tight" if peak <= plan.gpu_bytes else "does not fit", peak, usable)


def render(plan: Plan, console: Console) -> Verdict:
    """Print the plan's tables and verdict; return the verdict."""
    s = plan.setup
    console.print(
        f"[bold]{plan.label}[/]: {plan.shape.name}, {plan.shape.num_params / 1e6:,.1f}M "
        f"parameters, on {plan.nodes} node{'s' if plan.nodes > 1 else ''} x "
        f"{plan.gpus_per_node} {plan.gpu} = {s.ranks} rank{'s' if s.ranks > 1 else ''} "
        f"({_layout(s)}, data-parallel {s.data_parallel})"
    )
    precision = (
        f"{s.param_dtype} compute (all-gathered), {s.reduce_dtype} gradient reduce-scatter, "
        f"fp32 sharded master weights" if s.sharded
        else "fp32 throughout, one rank: parallelize() leaves the model unsharded"
    )
    console.print(f"mixed precision: {precision}")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(_memory_table(plan))
    if plan.async_checkpoint:
        host = plan.checkpoint_host_bytes()
        console.print(f"background checkpoints (trainer.async_checkpoint): a host-memory copy "
                      f"of {gib(host)} per rank, {gib(host * plan.gpus_per_node)} per node, "
                      "while a save is written")
    console.print(_compute_table(plan))
    if plan.comm.total:
        console.print(_comm_table(plan))
    result = verdict(plan)
    for line in _verdict_lines(plan, result):
        console.print(line)
    return result


def _layout(s: Setup) -> str:
    data = "FSDP2" if s.replicas == 1 else (
        f"HSDP: {s.replicas} replicas x FSDP2 over {s.shard_ranks}")
    if s.tp == 1:
        return data
    return f"{data} x tensor parallel {s.tp}; mesh {s.replicas} x {s.shard_ranks} x {s.tp}"


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def _states(o: OptimizerLayout) -> str:
    if not o.states:
        return "no state"
    per = o.bytes_per_element // o.states
    return f"{o.states} x " + {4: "fp32", 2: "16-bit", 8: "fp64"}.get(per, f"{per} B")


def _memory_table(plan: Plan) -> Table:
    s = plan.setup
    modes = list(dict.fromkeys([s.activation_checkpointing, "none", "full"]))
    table = Table(title="Memory per GPU (rank 0, the largest shard)", title_justify="left")
    table.add_column("")
    for mode in modes:
        mark = " (recipe)" if mode == s.activation_checkpointing else ""
        table.add_column(f"AC {mode}{mark}", justify="right")
    mems = [plan.memory(s.with_(activation_checkpointing=m)) for m in modes]
    master = "fp32" if plan.shape.master_bytes == 4 else f"{plan.shape.master_bytes} B"
    share = f", 1/{s.shard_ranks} shard" if s.shard_ranks > 1 else ""
    if s.tp > 1:
        share = f", 1/{s.tp} cut" + (f" x 1/{s.shard_ranks} shard" if s.shard_ranks > 1 else "")
    o = plan.optimizer
    rows = [
        (f"parameters ({master}{share})", "params"),
        (f"gradients ({master}{share})", "grads"),
        (f"optimizer states ({o.name}, {_states(o)})", "optimizer"),
    ]
    notes = []
    if s.sharded:
        blocks = min(2, len(plan.shape.blocks))
        rows += [
            (f"gathered params ({s.param_dtype}, root + {blocks} blocks)", "gathered"),
            (f"grad buffers ({s.param_dtype} + {s.reduce_dtype}, 1 block)", "grad_buffers"),
        ]
        notes.append("gathered: the root stays gathered from forward to the end of backward, "
                     "two blocks are in flight (computing, prefetched)")
        if s.grad_accumulation > 1:
            rows.append((f"no-sync grads ({s.reduce_dtype}, unsharded)", "accumulated"))
            notes.append(f"no-sync grads: FSDP2 keeps unsharded gradients through the "
                         f"{s.grad_accumulation - 1} micro-batches that skip gradient sync")
    rows += [
        (f"activations ({s.micro_batch_size} x {s.seq_len}, {s.param_dtype})", "activations"),
        ("working (loss backward / recompute)", "working"),
    ]
    notes.append("working: the loss's fp32 logit gradients as backward starts, or one "
                 "recomputed block, whichever is larger")
    if s.tp > 1:
        notes.append(f"tensor parallel: activations and logits are 1/{s.tp} (sequence "
                     "parallel between the matmuls, heads and units within, loss parallel)")
    table.caption = "; ".join(notes)
    table.caption_justify = "left"
    for label, attr in rows:
        table.add_row(label, *(gib(getattr(m, attr)) for m in mems))
    table.add_section()
    table.add_row("[bold]peak (estimate)[/]", *(f"[bold]{gib(m.peak)}[/]" for m in mems))
    table.add_row(f"share of the {plan.gpu}'s {gib(plan.gpu_bytes)}",
                  *(_share(m.peak, plan) for m in mems))
    return table


def _share(peak: int, plan: Plan) -> str:
    ratio = peak / plan.gpu_bytes
    color = "green" if ratio <= USABLE else "yellow" if ratio <= 1 else "red"
    return f"[{color}]{ratio:.0%}[/]"


def _compute_table(plan: Plan) -> Table:
    s, shape = plan.setup, plan.shape
    table = Table(title="Compute per optimizer step", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_column("", style="dim")
    table.add_row("tokens per step", f"{plan.tokens_per_step:,}",
                  f"{s.micro_batch_size} x {s.seq_len} x {s.grad_accumulation} accumulation "
                  f"x {s.data_parallel} data-parallel")
    table.add_row("FLOPs per token", f"{shape.flops_per_token / 1e9:,.3f} G",
                  "the model's own count (flops_per_token)")
    table.add_row("FLOPs per step", _flops(plan.model_flops_per_step), "model FLOPs")
    ckpt = checkpointed_blocks(shape, s.activation_checkpointing)
    if ckpt:
        table.add_row("hardware FLOPs per step", _flops(plan.hardware_flops_per_step),
                      f"+ recomputing {ckpt} checkpointed blocks' forward")
    part = gpu_part(plan.gpu)
    sheet = f"{part.peak_dtype} dense" + (f" ({part.note})" if part.note else "") if part else ""
    table.add_row("GPU peak", f"{plan.gpu_peak_flops / 1e12:,.0f} TFLOP/s",
                  f"{plan.gpu} {sheet}, x {s.ranks}")
    table.add_row("assumed MFU", f"{plan.mfu:.0%}", "--mfu; model FLOPs / peak")
    table.add_row("step time", _duration(plan.step_seconds), "")
    table.add_row("throughput", f"{plan.tokens_per_second:,.0f} tokens/s",
                  f"{plan.tokens_per_second / s.ranks:,.0f} per GPU")
    table.add_row(f"{plan.max_steps:,} steps", _duration(plan.max_steps * plan.step_seconds),
                  "trainer.max_steps")
    return table


def _comm_table(plan: Plan) -> Table:
    s, comm = plan.setup, plan.comm
    table = Table(title="Communication per optimizer step, received by each rank",
                  title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_column("", style="dim")
    micro = f"{s.grad_accumulation} micro-batch{'es' if s.grad_accumulation > 1 else ''}"
    if s.sharded and s.data_parallel > 1:
        table.add_row(f"dp_shard: all-gather, forward ({s.param_dtype})",
                      gib(comm.all_gather_forward), f"every parameter, {micro}")
        resharded = max(0, len(plan.shape.blocks) - 1)
        table.add_row(f"dp_shard: all-gather, backward ({s.param_dtype})",
                      gib(comm.all_gather_backward),
                      f"{resharded} blocks re-sharded after forward, {micro}")
        within = f" within a replica of {s.shard_ranks}" if s.replicas > 1 else ""
        table.add_row(f"dp_shard: reduce-scatter ({s.reduce_dtype})", gib(comm.reduce_scatter),
                      f"every gradient, once per step{within}")
    if s.replicas > 1:
        table.add_row(f"dp_replicate: all-reduce across replicas ({s.reduce_dtype})",
                      gib(comm.all_reduce_replicas),
                      f"each gradient shard, over the {s.replicas} replicas (between nodes)")
    if s.tp > 1:
        count = tensor_parallel_collectives(plan.shape, s)
        table.add_row(f"tp: all-gather + reduce-scatter ({s.param_dtype})",
                      gib(comm.tensor_parallel),
                      f"activations ({s.micro_batch_size} x {s.seq_len} x {plan.shape.width}), "
                      f"{count} per micro-batch, within each group of {s.tp} (keep it in a "
                      "node)")
    table.add_section()
    rate = comm.total / plan.step_seconds
    table.add_row("total", gib(comm.total),
                  f"{rate / 1e9:,.0f} GB/s per GPU to hide it behind the step's compute")
    return table


def _verdict_lines(plan: Plan, result: Verdict) -> list[str]:
    head = (f"peak {gib(result.peak)} per GPU; usable {gib(result.usable)} = {USABLE:.0%} "
            f"of the {plan.gpu}'s {gib(plan.gpu_bytes)} (the rest: CUDA context, NCCL "
            f"buffers, fragmentation)")
    if result.status == "fits":
        return [f"[bold green]verdict: fits[/], {head}"]
    color = "yellow" if result.status == "tight" else "red"
    word = "tight" if result.status == "tight" else "will not fit"
    lines = [f"[bold {color}]verdict: {word}[/], {head}"]
    options = alternatives(plan)
    if options:
        lines.append("what to change (any one of):")
        lines += [f"  {change}  -> peak {gib(m.peak)} [dim]({note})[/]"
                  for change, m, note in options]
    else:
        lines.append("nothing llm_gym controls makes it fit: not micro-batch 1 with full "
                     "activation checkpointing, not 64x the nodes; try a larger "
                     "trainer.parallel.tp, or this model needs pipeline parallelism")
    return lines


def _flops(n: float) -> str:
    return f"{n / 1e15:,.2f} PFLOP" if n >= 1e15 else f"{n / 1e12:,.2f} TFLOP"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1e3:,.0f} ms"
    if seconds < 120:
        return f"{seconds:,.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"

