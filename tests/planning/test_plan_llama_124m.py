"""`recipe plan llama-124m --nodes 2 --gpus-per-node 8 --gpu h100` checked by hand: the
parameter count from Llama's formula and every per-GPU memory piece but the activations
(those are measured against autograd in test_agreement.py), from the recipe's sizes."""

from __future__ import annotations

import pytest

from llm_gym.cli.main import main
from llm_gym.planning.plan import make_plan
from llm_gym.recipes.loading import load_recipe

# The recipe's model: recipes/llama-124m/v1.yaml.
V, D, L, H, KV = 50304, 768, 12, 12, 4
HEAD = D // H
RANKS, MICRO, SEQ, ACCUM = 16, 16, 1024, 4
# SwiGLU hidden: 2/3 of 4 x n_embd (2048) x ffn_multiplier 1.125 = 2304, rounded up to a
# multiple of 256 (already one).
HIDDEN = -(-int(1.125 * (2 * 4 * D // 3)) // 256) * 256
BLOCK = (2 * D * D            # q_proj, o_proj
         + 2 * D * KV * HEAD  # k_proj, v_proj: 4 key/value heads
         + 3 * D * HIDDEN     # gate, up, down
         + 2 * D)             # the two RMSNorm weights (no biases anywhere)
ROOT = V * D + D  # the token embedding, tied to the LM head (counted once), final norm
N = ROOT + L * BLOCK
TENSORS = 2 + L * 9  # embedding + final norm; per block 7 projections + 2 norms
GiB = 1 << 30


@pytest.fixture(scope="module")
def plan():  # noqa: ANN201
    loaded = load_recipe("llama-124m", [])
    return make_plan(loaded.recipe, label="llama-124m", nodes=2, gpus_per_node=8, gpu="h100")


def test_the_parameter_count_is_llamas_formula(plan) -> None:  # noqa: ANN001
    assert HIDDEN == 2304 and BLOCK == 6_882_816
    assert plan.shape.num_params == N == 121_228_032
    # Tied: the LM head is the embedding, so the root is one V x D matrix and a norm.
    assert sorted(plan.shape.root) == sorted([(V, D), (D,)])


def test_every_memory_piece_per_gpu_by_hand(plan) -> None:  # noqa: ANN001
    m = plan.memory()
    # Every dim 0 divides by 16 (50304, 768, 256, 2304), so a shard is exactly N / 16.
    local = N // RANKS
    assert N % RANKS == 0
    assert m.params == m.grads == 4 * local  # fp32 master weights and their gradients
    assert m.optimizer == 8 * local + 4 * TENSORS  # AdamW: 2 fp32 moments; a step each
    assert m.gathered == 2 * (ROOT + 2 * BLOCK)  # bf16: root + two blocks in flight
    assert m.grad_buffers == (2 + 4) * BLOCK  # one block's bf16 grads + fp32 copy
    assert m.accumulated == 4 * N  # fp32 unsharded grads over the no-sync micro-batches
    tokens = MICRO * SEQ
    # The loss's fp32 log-prob and logit gradients and their bf16 cast: 10 bytes/entry.
    assert m.working == tokens * V * (4 + 4 + 2)
    # The loss's saved fp32 log-probabilities are part of the activations.
    assert m.activations > tokens * V * 4
    assert m.peak == sum((m.params, m.grads, m.optimizer, m.gathered, m.grad_buffers,
                          m.accumulated, m.activations, m.working))


def test_tokens_and_flops_per_step_by_hand(plan) -> None:  # noqa: ANN001
    assert plan.tokens_per_step == MICRO * SEQ * ACCUM * RANKS == 1_048_576
    # 6 N, plus attention's scores and weighted sum: 12 L H head_dim T (GQA saves none).
    flops_per_token = 6 * N + 12 * L * H * HEAD * SEQ
    assert plan.model_flops_per_step == flops_per_token * plan.tokens_per_step


def test_the_command_prints_the_same(capsys, plan) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "plan", "llama-124m", "--nodes", "2", "--gpus-per-node", "8",
              "--gpu", "h100", "--no-dry-run"])
    out = capsys.readouterr().out
    assert exited.value.code in (0, None), out
    assert "121.2M parameters" in out and "16 ranks" in out
    m = plan.memory()
    assert f"{m.accumulated / GiB:.2f} GiB" in out and f"{m.peak / GiB:.2f} GiB" in out
