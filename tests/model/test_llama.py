"""The Llama-style model's numerics: RoPE, grouped-query attention, causality, its
declared FLOPs and saved activations, meta-device initialisation, bad sizes."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llm_gym_components.models.llama import Llama, apply_rope, rope_tables, swiglu_hidden_size
from llm_gym_components.models.llama_component import LlamaConfig

TINY = dict(vocab_size=64, max_seq_len=16, n_embd=32, n_layer=2, n_head=4, multiple_of=16)


def tiny(**changes: object) -> Llama:
    torch.manual_seed(0)
    return Llama(**{**TINY, **changes})


def test_rope_scores_depend_only_on_the_distance() -> None:
    # The point of RoPE: <R(m) q, R(n) k> is a function of m - n, and rotation keeps norms.
    cos, sin = rope_tables(8, 12, theta=500.0)
    q, k = torch.randn(8), torch.randn(8)

    def at(x: torch.Tensor, pos: int) -> torch.Tensor:
        return apply_rope(x.view(1, 1, 1, 8), cos[pos:pos + 1], sin[pos:pos + 1]).view(8)

    assert torch.allclose(at(q, 3) @ at(k, 1), at(q, 9) @ at(k, 7), atol=1e-5)
    assert torch.allclose(at(q, 5).norm(), q.norm(), atol=1e-5)
    assert not torch.allclose(at(q, 3) @ at(k, 1), at(q, 3) @ at(k, 2), atol=1e-3)
    assert torch.equal(at(q, 0), q)  # position 0 is not rotated


def test_rope_theta_changes_the_rotation() -> None:
    a, b = rope_tables(8, 4, theta=10000.0), rope_tables(8, 4, theta=100.0)
    assert torch.equal(a[0][0], b[0][0]) and not torch.allclose(a[0][3], b[0][3])


def test_grouped_query_attention_equals_mha_with_repeated_key_value_heads() -> None:
    gqa = tiny(n_kv_head=2)
    mha = tiny(n_kv_head=4)
    state = gqa.state_dict()
    head_dim = 32 // 4
    for name, weight in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            # Each of the 2 key/value heads serves 2 query heads: repeat it for each.
            heads = weight.view(2, head_dim, 32)
            state[name] = heads.repeat_interleave(2, dim=0).reshape(4 * head_dim, 32)
    mha.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 16))
    assert torch.allclose(gqa(ids), mha(ids), atol=1e-5)


def test_it_is_causal() -> None:
    model = tiny(qk_norm=True)
    ids = torch.randint(0, 64, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 64
    a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-3)


def test_swiglu_hidden_size() -> None:
    assert swiglu_hidden_size(4096, 1.0, 256) == 11008  # Llama-7B's
    assert swiglu_hidden_size(128, 1.0, 32) == 352
    assert swiglu_hidden_size(768, 1.125, 256) == 2304


def test_tied_and_untied_embeddings() -> None:
    tied, untied = tiny(tie_embeddings=True), tiny()
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    n_embedding = 64 * 32
    total = sum(p.numel() for p in untied.parameters())
    assert untied.num_params() == total - n_embedding  # a lookup costs no FLOPs
    assert tied.num_params() == total - n_embedding  # the tied table is the head's
    assert not any(name.endswith("bias") for name, _ in untied.named_parameters())


def test_meta_build_then_init_weights_matches_a_direct_build() -> None:
    direct = tiny(tie_embeddings=True)
    torch.manual_seed(0)
    direct.init_weights()  # from the same RNG state as the meta model's below
    with torch.device("meta"):
        meta = Llama(**TINY, tie_embeddings=True)
    meta.to_empty(device="cpu")
    torch.manual_seed(0)
    meta.init_weights()
    assert meta.lm_head.weight is meta.model.embed_tokens.weight  # tied again
    ids = torch.randint(0, 64, (1, 16))
    # Same RNG state, same init order: identical weights, and the RoPE tables were remade.
    assert torch.equal(direct(ids), meta(ids))


def test_flops_per_token_match_the_counter() -> None:
    model = tiny(n_kv_head=2)
    ids = torch.randint(0, 64, (2, 16))
    # The counter has no formula for the CPU's fused attention; it sees the math backend's
    # matmuls (which repeat the key/value heads: the same FLOPs as full attention).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(ids).float().sum().backward()
    counted = counter.get_total_flops() / ids.numel()
    assert model.flops_per_token(16) == pytest.approx(counted, rel=0.05)


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_declared_activation_bytes_match_what_autograd_saves(qk_norm: bool,
                                                              dtype: torch.dtype) -> None:
    model = tiny(n_kv_head=2, qk_norm=qk_norm).to(dtype)
    block, tokens = model.blocks[0], 2 * 16
    x = torch.randn(2, 16, 32, dtype=dtype, requires_grad=True)
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in own:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, model.rope_cos[:16], model.rope_sin[:16])
    assert sum(saved.values()) == tokens * model.block_activation_bytes(
        dtype, checkpointed=False)
    assert model.block_activation_bytes(dtype, checkpointed=True) == 32 * dtype.itemsize


def test_a_sequence_longer_than_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match="sequence length 17 exceeds the model's max_seq_len=16"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_head": 4, "n_kv_head": 3}, r"n_head \(4\) must be divisible by n_kv_head \(3\)"),
    ({"n_embd": 36, "n_head": 4}, "head dimension n_embd / n_head = 9 is odd"),
    ({"n_embd": 30, "n_head": 4}, r"n_embd \(30\) must be divisible by n_head \(4\)"),
])
def test_bad_sizes_are_refused_by_the_config(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LlamaConfig(**{**TINY, **changes})


def test_generate_is_greedy_at_temperature_zero_and_crops_the_context() -> None:
    model = tiny().eval()
    ids = torch.randint(0, 64, (1, 14))
    out = model.generate(ids, 5, temperature=0)
    assert out.shape == (1, 19) and torch.equal(out[:, :14], ids)
    expected = model(out[:, -17:-1])[:, -1].argmax(-1)  # the last 16 tokens before it
    assert out[0, -1] == expected[0]
