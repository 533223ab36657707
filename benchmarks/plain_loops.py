"""Hand-written training loops, the yardsticks the runner is measured against."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.runner.host_memory import keep_freed_host_memory
from llm_gym_components.models.gpt2 import GPT2

SEQ, WIDTH, LAYERS, HEADS, VOCAB = 128, 192, 4, 4, 257


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT2(vocab_size=VOCAB, n_positions=SEQ, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS)
    return model, None  # the optimizer comes after sharding


def _adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-3, betas=(0.9, 0.95), fused=True)


def train_tokens_per_s(model: torch.nn.Module, data: PackedMemMapDataset, batch: int,
                       steps: int, log_every: int, world_size: int = 1) -> float:
    """What a researcher writes by hand: forward, loss, backward, clip, step."""
    optimizer = _adamw(model)
    times = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        tokens = data.next_batch(batch)
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % log_every == 0:
            loss.item()  # the plain loop logs too
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
    return batch * SEQ * log_every * world_size / statistics.median(times[1:])


def plain_single(prefix: Path, batch: int, steps: int, log_every: int) -> float:
    keep_freed_host_memory()  # one of the runner's choices on a CPU (runner/host_memory.py)
    model, _ = _model_and_optimizer()
    data = PackedMemMapDataset(prefix, SEQ, split="train", val_fraction=0.1)
    return train_tokens_per_s(model, data, batch, steps, log_every)


def plain_fsdp_worker(prefix: str, batch: int, steps: int, log_every: int) -> float:
    """One rank of a hand-written FSDP2 loop (started by the elastic launcher)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, _ = _model_and_optimizer()
    mesh = init_device_mesh("cpu", (world,))
    blocks = list(model.transformer.h)
    for block in blocks:
        # The runner's reshard policy (runner/parallelize.py): the last block stays
        # gathered after forward, as backward needs it first.
        fully_shard(block, mesh=mesh, reshard_after_forward=block is not blocks[-1])
    fully_shard(model, mesh=mesh)
    data = PackedMemMapDataset(prefix, SEQ, split="train", val_fraction=0.1, rank=rank,
                               world_size=world)
    result = train_tokens_per_s(model, data, batch, steps, log_every, world)
    dist.barrier()
    dist.destroy_process_group()
    return result
