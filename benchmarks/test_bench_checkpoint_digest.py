"""What the checkpoint digests cost: saving (and loading) with them beside without them.

A GPT-2 of 16M parameters with AdamW state (a checkpoint of 245 MB) is saved in
rounds that alternate which side goes first, so that the machine's noise and the page
cache hit both alike; the digests are switched off by saving through DCP's plain
FileSystemWriter and replacing the digest functions with stubs, so the difference is
exactly their cost. Target: saving with digests takes at most 1.25x as long as without
(the files are hashed while DCP writes them, checkpoint_writer.py). Loading verifies the
files it reads; that ratio is reported.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemWriter

from llm_gym.runner import checkpoint, checkpoint_reading
from llm_gym.runner.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from llm_gym.runner.distributed import distributed_world
from llm_gym_components.models.gpt2 import GPT2

ROUNDS = 4
STUB = {"bytes": 0, "xxh3_128": "0" * 32}


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT2(vocab_size=50257, n_positions=256, n_embd=256, n_layer=4, n_head=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 8, dtype=torch.long)).float().mean().backward()
    optimizer.step()  # AdamW's moments exist, as in a real checkpoint
    return model, optimizer


def _timed_save(run_dir: Path, model, optimizer, world, digests: bool) -> float:  # noqa: ANN001
    shutil.rmtree(run_dir, ignore_errors=True)
    with pytest.MonkeyPatch.context() as mp:
        if not digests:
            # DCP's own writer, which hashes nothing; the catch-all in _commit then sees
            # every file undigested, so it is stubbed too.
            mp.setattr(checkpoint, "storage_writer", lambda path, digests: FileSystemWriter(path))
            mp.setattr(checkpoint, "digest_file", lambda path: STUB)
            mp.setattr(checkpoint, "digest_bytes", lambda data: STUB)
        start = time.perf_counter()
        save_checkpoint(run_dir, 1, model=model, optimizer=optimizer, world=world, extra={})
        return time.perf_counter() - start


def _timed_load(run_dir: Path, model, optimizer, world, digests: bool) -> float:  # noqa: ANN001
    with pytest.MonkeyPatch.context() as mp:
        if not digests:
            mp.setattr(checkpoint_reading, "verify_files", lambda *args: None)
        start = time.perf_counter()
        load_checkpoint(checkpoint_path(run_dir, 1), model=model, optimizer=optimizer,
                        world=world)
        return time.perf_counter() - start


def test_checkpoint_digest_cost(benchmark, bench_targets, tmp_path):
    model, optimizer = _model_and_optimizer()
    saves: dict[bool, list[float]] = {True: [], False: []}
    loads: dict[bool, list[float]] = {True: [], False: []}
    with distributed_world() as world:
        _timed_save(tmp_path / "warmup", model, optimizer, world, True)
        for i in range(ROUNDS):
            for digests in ((True, False) if i % 2 == 0 else (False, True)):
                run_dir = tmp_path / f"run-{digests}"
                saves[digests].append(_timed_save(run_dir, model, optimizer, world, digests))
            for digests in ((True, False) if i % 2 == 0 else (False, True)):
                # Each side loads the checkpoint written with digests (the stubbed one
                # would not verify); without, the verification is skipped.
                loads[digests].append(_timed_load(tmp_path / "run-True", model, optimizer,
                                                  world, digests))
        size = sum(p.stat().st_size for p in checkpoint_path(tmp_path / "run-True", 1).iterdir())
        benchmark.pedantic(_timed_save, args=(tmp_path / "timed", model, optimizer, world, True),
                           rounds=1, iterations=1)
    save_with, save_without = statistics.median(saves[True]), statistics.median(saves[False])
    load_with, load_without = statistics.median(loads[True]), statistics.median(loads[False])
    benchmark.extra_info.update(saves={str(k): v for k, v in saves.items()},
                                loads={str(k): v for k, v in loads.items()}, bytes=size)
    print(f"\ncheckpoint of {size / 1e6:.0f} MB, 1 process, CPU: save with digests "
          f"{save_with:.3f} s | without {save_without:.3f} s | ratio "
          f"{save_with / save_without:.3f} (target <= 1.25); load with verification "
          f"{load_with:.3f} s | without {load_without:.3f} s | ratio "
          f"{load_with / load_without:.3f}")
    bench_targets.add("checkpoint save with / without digests", save_with / save_without,
                      at_most=1.25)
    bench_targets.add("checkpoint load with / without verification", load_with / load_without)
