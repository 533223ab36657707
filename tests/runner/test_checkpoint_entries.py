"""What a checkpoint's entries must be to load on resume: the model's and optimizer's
tensors (no more, no fewer, the same shapes) and, for the rest, plain data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.runner.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from llm_gym.runner.distributed import distributed_world

from . import dist_helpers as h


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("entries")
    with distributed_world() as world:
        model = h.build(world)
        save_checkpoint(run_dir, 1, model=model, optimizer=h.make_optimizer(model, "adamw"),
                        world=world, extra={"step": 1})
    return checkpoint_path(run_dir, 1)


def _fewer_blocks(model: h.TinyLM) -> None:
    del model.h[2:]


def _more_blocks(model: h.TinyLM) -> None:
    model.h.append(h.Block(h.DIM, 0.0))


def _no_head_bias(model: h.TinyLM) -> None:
    for block in model.h:
        block.fc = torch.nn.Linear(h.DIM, h.DIM, bias=False)


def _wider_norm(model: h.TinyLM) -> None:
    model.ln_f = torch.nn.LayerNorm(h.DIM * 2)


CHANGES = {
    # 8 tensors of the model, 24 of AdamW's state (step, exp_avg, exp_avg_sq of each)
    "fewer blocks": (_fewer_blocks, ["in the checkpoint but not here: 32 (model.h.2.fc.bias",
                                     "and 27 more"]),
    "more blocks": (_more_blocks, ["missing from the checkpoint: 16 (model.h.4.fc.bias"]),
    "no biases": (_no_head_bias, ["in the checkpoint but not here: 16 (model.h.0.fc.bias, "
                                  "model.h.1.fc.bias"]),
    "another shape": (_wider_norm, ["different shapes: 6 (model.ln_f.bias (checkpoint [16], "
                                    "here [32])"]),
}


@pytest.mark.parametrize("case", CHANGES)
def test_tensors_that_differ_from_the_model_are_listed(saved: Path, case: str) -> None:
    change, expected = CHANGES[case]
    with distributed_world() as world:
        model = h.TinyLM()
        change(model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(UserError) as info:
            load_checkpoint(saved, model=model, optimizer=h.make_optimizer(model, "adamw"),
                            world=world)
    message = str(info.value)
    assert str(saved) in message and "Missing key" not in message
    for text in expected:
        assert text in message, message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_optimizer_is_compared_too(saved: Path) -> None:
    with distributed_world() as world:
        model = h.build(world)
        with pytest.raises(UserError) as info:
            load_checkpoint(saved, model=model, optimizer=h.make_optimizer(model, "sgd"),
                            world=world)
    message = str(info.value)
    # SGD's momentum and settings are missing; AdamW's moments are not SGD's.
    assert "missing from the checkpoint: 22 (optim.param_groups.0.dampening" in message
    assert "in the checkpoint but not here: 62 (optim.param_groups.0.amsgrad" in message


class _RunsCode:
    """An optimizer setting that, unpickled freely, creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (eval, (f"open({str(self.marker)!r}, 'w').close() or 0.1",))

    def __deepcopy__(self, memo: dict) -> _RunsCode:
        return self


def test_a_non_tensor_entry_that_would_run_code_is_refused(tmp_path: Path) -> None:
    """DCP loads non-tensor entries (the optimizer's settings) with torch.load
    (weights_only=False): a crafted shard runs code there, digests or not."""
    marker = tmp_path / "pwned"
    with distributed_world() as world:
        model = h.build(world)
        optimizer = h.make_optimizer(model, "sgd")
        optimizer.param_groups[0]["lr"] = _RunsCode(marker)
        save_checkpoint(tmp_path, 1, model=model, optimizer=optimizer, world=world, extra={})
        assert not marker.exists()
        model = h.build(world)
        with pytest.raises(UserError) as info:
            load_checkpoint(checkpoint_path(tmp_path, 1), model=model,
                            optimizer=h.make_optimizer(model, "sgd"), world=world)
    assert not marker.exists()
    assert "__0_0.distcp" in str(info.value) and "optim.param_groups.0.lr" in str(info.value)
