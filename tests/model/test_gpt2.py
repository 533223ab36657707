"""Behaviour of the GPT-2 module: shapes, tying, causality, init, counts, meta init, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llm_gym_components.models import GPT2

TINY = dict(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4)


def tiny(seed: int = 0, **overrides: object) -> GPT2:
    torch.manual_seed(seed)
    return GPT2(**{**TINY, **overrides})


def random_ids(batch: int = 2, seq: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (batch, seq), generator=g)


def test_forward_returns_logits_for_every_position() -> None:
    model = tiny()
    logits = model(random_ids(batch=3, seq=7))
    assert logits.shape == (3, 7, TINY["vocab_size"])
    assert logits.dtype == torch.float32


def test_sequence_longer_than_n_positions_raises() -> None:
    with pytest.raises(ValueError, match="n_positions=16"):
        tiny()(random_ids(seq=17))


def test_n_embd_not_divisible_by_n_head_raises() -> None:
    with pytest.raises(ValueError, match="divisible"):
        GPT2(vocab_size=8, n_positions=4, n_embd=30, n_layer=1, n_head=4)


def test_head_is_tied_to_token_embedding() -> None:
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_parameter_names_follow_hugging_face() -> None:
    names = set(tiny().state_dict())
    for suffix in (
        "ln_1.weight",
        "attn.c_attn.weight",
        "attn.c_proj.bias",
        "ln_2.bias",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    ):
        assert f"transformer.h.1.{suffix}" in names
    assert {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"} <= names
    assert {"transformer.ln_f.weight", "transformer.ln_f.bias"} <= names


def test_blocks_are_the_transformer_layers_in_order() -> None:
    model = tiny()
    assert len(model.blocks) == TINY["n_layer"]
    assert all(a is b for a, b in zip(model.blocks, model.transformer.h, strict=True))


def test_future_tokens_do_not_change_earlier_logits() -> None:
    model = tiny().eval()
    ids = random_ids(batch=1)
    changed = ids.clone()
    changed[0, 9] = (changed[0, 9] + 1) % TINY["vocab_size"]
    before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_gpt2_initialisation_statistics() -> None:
    torch.manual_seed(0)
    model = GPT2(vocab_size=512, n_positions=64, n_embd=256, n_layer=4, n_head=4)
    block = model.transformer.h[0]
    residual_std = 0.02 / math.sqrt(2 * 4)
    for weight, std in [
        (model.transformer.wte.weight, 0.02),
        (model.transformer.wpe.weight, 0.02),
        (block.attn.c_attn.weight, 0.02),
        (block.mlp.c_fc.weight, 0.02),
        (block.attn.c_proj.weight, residual_std),
        (block.mlp.c_proj.weight, residual_std),
    ]:
        assert weight.mean().abs().item() < std / 10
        assert weight.std().item() == pytest.approx(std, rel=0.05)
    for linear in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
        assert torch.count_nonzero(linear.bias) == 0
    for ln in (block.ln_1, block.ln_2, model.transformer.ln_f):
        assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)


def test_num_params_matches_a_hand_count() -> None:
    V, P, C, L = 64, 16, 32, 2
    per_block = (
        2 * C  # ln_1
        + C * 3 * C
        + 3 * C  # attn.c_attn
        + C * C
        + C  # attn.c_proj
        + 2 * C  # ln_2
        + C * 4 * C
        + 4 * C  # mlp.c_fc
        + 4 * C * C
        + C  # mlp.c_proj
    )
    total = V * C + P * C + L * per_block + 2 * C  # the tied head adds nothing
    assert total == 28_032
    model = tiny()
    assert model.num_params(exclude_position_embeddings=False) == total
    assert model.num_params() == total - P * C


def test_num_params_without_bias() -> None:
    V, C, L = 64, 32, 2  # no biases: LayerNorms keep only their gain
    per_block = C + 3 * C * C + C * C + C + 4 * C * C + 4 * C * C
    assert tiny(bias=False).num_params() == V * C + L * per_block + C


def test_gpt2_small_has_124m_parameters() -> None:
    with torch.device("meta"):  # counts only: no memory, no init time
        model = GPT2(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    assert model.num_params(exclude_position_embeddings=False) == 124_439_808
    assert model.num_params() == 124_439_808 - 1024 * 768


def test_flops_per_token_matches_a_hand_count() -> None:
    N = 28_032 - 16 * 32
    L, H, Q, T = 2, 4, 8, 16
    assert tiny().flops_per_token(T) == 6 * N + 12 * L * H * Q * T == 177_408


def test_meta_construction_then_to_empty_and_init_weights() -> None:
    with torch.device("meta"):
        model = GPT2(**TINY)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    assert model.lm_head.weight is model.transformer.wte.weight
    torch.manual_seed(3)
    model.init_weights()

    reference = tiny()
    torch.manual_seed(3)
    reference.init_weights()
    expected = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, expected[name]), name
    logits = model(random_ids())
    assert torch.isfinite(logits).all()


def test_same_seed_gives_same_model_and_logits() -> None:
    a, b = tiny(seed=5), tiny(seed=5)
    expected = b.state_dict()
    for name, p in a.state_dict().items():
        assert torch.equal(p, expected[name]), name
    assert torch.equal(a(random_ids()), b(random_ids()))
    assert not torch.equal(a.transformer.wte.weight, tiny(seed=6).transformer.wte.weight)


def test_greedy_generate_is_deterministic_and_follows_argmax() -> None:
    model = tiny().eval()
    prompt = random_ids(batch=2, seq=4)
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert out.shape == (2, 10)
    assert torch.equal(out[:, :4], prompt)
    assert torch.equal(out, model.generate(prompt, max_new_tokens=6, temperature=0))
    assert torch.equal(out[:, 4], model(prompt)[:, -1].argmax(-1))


def test_generate_crops_context_and_sampling_follows_the_generator() -> None:
    model = tiny().eval()
    prompt = random_ids(batch=1, seq=16)  # already n_positions long

    def sample(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 5, temperature=0.8, top_k=10, generator=g)

    out = sample(0)
    assert out.shape == (1, 21)
    assert torch.equal(out, sample(0))
    assert ((out >= 0) & (out < TINY["vocab_size"])).all()


def test_top_k_one_is_greedy() -> None:
    model = tiny().eval()
    prompt = random_ids(batch=2, seq=3)
    g = torch.Generator().manual_seed(0)
    sampled = model.generate(prompt, 4, temperature=1.5, top_k=1, generator=g)
    assert torch.equal(sampled, model.generate(prompt, 4, temperature=0))


def test_overfits_a_tiny_batch() -> None:
    model = tiny()
    ids = random_ids(batch=4, seq=16)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(TINY["vocab_size"]), rel=0.05)
    assert losses[-1] < 0.5 * losses[0]


def test_logits_match_hugging_face_gpt2() -> None:
    transformers = pytest.importorskip(
        "transformers", reason="transformers is an optional dependency, not installed"
    )
    model = tiny().eval()
    config = transformers.GPT2Config(
        **TINY,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,  # the default, 50256, is outside the tiny vocabulary
        eos_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    ours = dict(model.named_parameters())
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    with torch.no_grad():
        for name, param in hf.named_parameters():
            src = ours[name]
            # nn.Linear stores (out, in); HF's Conv1D stores (in, out).
            param.copy_(src.t() if name.endswith(conv1d) else src)
    ids = random_ids(batch=2, seq=16)
    with torch.no_grad():
        expected = hf(ids).logits
        actual = model(ids)
    assert (actual - expected).abs().max().item() < 1e-4


def test_gelu_tanh_is_the_default_and_exact_gelu_an_opt_in() -> None:
    ids = random_ids()
    default, exact = tiny(), tiny(activation="gelu")
    assert all(b.mlp.act.approximate == "tanh" for b in default.transformer.h)
    # Same weights (same seed), different activation: the logits must differ, and the
    # exact model's MLP must be the erf GELU.
    assert not torch.equal(default(ids), exact(ids))
    h = torch.randn(3, TINY["n_embd"] * 4)
    torch.testing.assert_close(exact.transformer.h[0].mlp.act(h), F.gelu(h), rtol=0, atol=0)
    with pytest.raises(ValueError, match="activation must be one of"):
        tiny(activation="relu")
