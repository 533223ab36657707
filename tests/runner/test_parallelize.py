"""parallelize() and clip_grad_norm_: 1 process vs 2 FSDP2 processes on one global batch."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch import nn

from llm_gym.errors import UserError
from llm_gym.runner.distributed import distributed_world, seed_everything
from llm_gym.runner.parallelize import clip_grad_norm_, parallelize

from . import dist_helpers as h


@pytest.fixture(scope="module")
def one() -> dict:
    return h.suite_results(1)[0]


@pytest.fixture(scope="module")
def two() -> dict:
    return h.suite_results(2)[0]


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_two_processes_train_like_one(one: dict, two: dict, kind: str) -> None:
    assert two["world"].world_size == 2
    assert two[f"{kind}_losses"] == pytest.approx(one[f"{kind}_losses"], abs=1e-5)
    # The losses moved, so the comparison covered real optimizer steps.
    assert len(set(one[f"{kind}_losses"])) == len(one[f"{kind}_losses"])
    for name, value in one[f"{kind}_state"].items():
        torch.testing.assert_close(two[f"{kind}_state"][name], value, atol=1e-5, rtol=1e-5)


def test_state_dict_keys_stay_those_of_the_plain_model(one: dict, two: dict) -> None:
    plain = sorted(h.TinyLM().state_dict())
    assert one["state_dict_keys"] == plain
    assert two["state_dict_keys"] == plain
    assert "lm_head.weight" in plain


def test_tied_head_stays_tied_under_fsdp(one: dict, two: dict) -> None:
    for result in (one, two):
        assert result["tied_after_wrap"] and result["tied_after_steps"]
        state = result["sgd_state"]
        torch.testing.assert_close(state["lm_head.weight"], state["wte.weight"], rtol=0, atol=0)


def test_clip_grad_norm_returns_the_global_unsharded_norm(one: dict, two: dict) -> None:
    seed_everything(h.SEED, 0)
    plain = h.TinyLM()
    h.lm_loss(plain, h.global_batch(0)).backward()
    expected = float(torch.nn.utils.clip_grad_norm_(plain.parameters(), max_norm=float("inf")))
    assert expected > 0.5  # so that max_norm=0.5 actually clipped
    assert one["sgd_norms"][0] == pytest.approx(expected, rel=1e-5)
    assert two["sgd_norms"][0] == pytest.approx(expected, rel=1e-5)
    assert two["sgd_norms"] == pytest.approx(one["sgd_norms"], rel=1e-5)
    # After clipping, the global norm is max_norm on every world size.
    assert two["sgd_norms_after_clip"] == pytest.approx([0.5] * 3, rel=1e-5)


@pytest.mark.parametrize("ac", ["full", 2])
def test_activation_checkpointing_changes_no_number(one: dict, two: dict, ac: object) -> None:
    for result in (one, two):
        ref, got = result["ac_none"], result[f"ac_{ac}"]
        assert got["loss"] == ref["loss"]
        for name, grad in ref["grads"].items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=0, atol=1e-6)


def test_bf16_compute_keeps_fp32_master_weights(one: dict, two: dict) -> None:
    for result in (one, two):
        assert result["bf16_loss_dtype"] == "torch.bfloat16"
        assert result["bf16_master_dtypes"] == ["torch.float32"]
        assert all(math.isfinite(x) for x in result["bf16_losses"])
        assert result["bf16_losses"] == pytest.approx(result["sgd_losses"][:2], abs=0.1)


class _Counting(nn.Module):
    def __init__(self, counts: list[int], index: int) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.counts, self.index = counts, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counts[self.index] += 1
        return torch.tanh(self.fc(x))


@pytest.mark.parametrize(
    ("mode", "recomputed"),
    [("none", []), ("full", [0, 1, 2, 3, 4]), (2, [1, 3]), (3, [2]), (1, [0, 1, 2, 3, 4])],
)
def test_checkpointed_blocks_run_forward_again_in_backward(mode: object, recomputed: list) -> None:
    counts = [0] * 5
    model = nn.Sequential(*(_Counting(counts, i) for i in range(5)))
    with distributed_world() as world:
        parallelize(model, list(model), world=world, activation_checkpointing=mode)
        model(torch.ones(2, 4)).sum().backward()
    assert [i for i, c in enumerate(counts) if c == 2] == recomputed
    assert all(c in (1, 2) for c in counts)


@pytest.mark.parametrize("mode", [0, -1, "some", True])
def test_bad_activation_checkpointing_is_refused(mode: object) -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    with distributed_world() as world, pytest.raises(ValueError, match="activation_checkpointing"):
        parallelize(model, list(model), world=world, activation_checkpointing=mode)


def test_parallelize_twice_is_refused() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with distributed_world() as world:
        parallelize(model, list(model), world=world)
        with pytest.raises(RuntimeError, match="already"):
            parallelize(model, list(model), world=world)


def test_clip_grad_norm_without_gradients_is_zero() -> None:
    assert float(clip_grad_norm_(nn.Linear(2, 2).parameters(), 1.0)) == 0.0


@pytest.mark.skipif(
    not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")),
    reason="torch.compile's CPU backend needs a C compiler",
)
def test_compiled_checkpointed_blocks_compute_the_same_as_eager() -> None:
    batch = h.global_batch(0)
    with distributed_world() as world:
        eager = h.build(world, activation_checkpointing="full")
        compiled = h.build(world, activation_checkpointing="full", compile=True)
        expected, got = h.lm_loss(eager, batch), h.lm_loss(compiled, batch)
        expected.backward()
        got.backward()
        grads, expected_grads = h.full_grads(compiled), h.full_grads(eager)
        keys = sorted(compiled.state_dict())
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-5)
    assert keys == sorted(h.TinyLM().state_dict())  # no "_orig_mod." from compile


def test_gpt2_parallelized_matches_plain_gpt2() -> None:
    gpt2 = pytest.importorskip("llm_gym_components.models.gpt2")
    config = dict(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    tokens = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))

    def loss_of(model: nn.Module) -> torch.Tensor:
        logits = model(tokens[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, 64), tokens[:, 1:].reshape(-1))

    torch.manual_seed(0)
    plain = gpt2.GPT2(**config)
    expected = loss_of(plain)
    expected.backward()
    torch.manual_seed(0)
    model = gpt2.GPT2(**config)
    with distributed_world() as world:
        parallelize(model, model.blocks, world=world, activation_checkpointing="full")
        assert model.lm_head.weight is model.transformer.wte.weight
        assert sorted(model.state_dict()) == sorted(plain.state_dict())
        loss = loss_of(model)
        loss.backward()
        norm = float(clip_grad_norm_(model.parameters(), max_norm=float("inf")))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    plain_norm = torch.nn.utils.clip_grad_norm_(plain.parameters(), float("inf"))
    assert norm == pytest.approx(float(plain_norm), rel=1e-5)


def test_one_rank_in_fp32_stays_unwrapped_but_mixed_precision_is_sharded() -> None:
    """FSDP over one fp32 rank would only copy; with a cast it is still needed."""
    from torch.distributed.fsdp import FSDPModule

    with distributed_world() as world:
        plain = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        assert not isinstance(parallelize(plain, list(plain), world=world), FSDPModule)
        mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        wrapped = parallelize(mixed, list(mixed), world=world, param_dtype=torch.bfloat16)
        assert isinstance(wrapped, FSDPModule)


def test_a_weight_shared_by_a_block_and_the_root_is_refused_before_sharding() -> None:
    """A parameter can be sharded in one FSDP group only; say which, on every torch."""
    def shared() -> nn.Module:
        model = h.TinyLM()
        model.h[1].norm.weight = model.ln_f.weight  # cross-group sharing: valid PyTorch
        return model

    with distributed_world() as world:  # one rank, but bf16 compute: FSDP still wraps
        model = shared()
        with pytest.raises(UserError, match=r"used in more than one FSDP group: "
                                            r"'h.1.norm.weight' \(in h.1\), 'ln_f.weight' "
                                            r"\(in the root\)"):
            parallelize(model, list(model.h), world=world, param_dtype=torch.bfloat16)
        # One fp32 rank shards nothing, so nothing stops the shared model there.
        model = shared()
        assert parallelize(model, list(model.h), world=world) is model
