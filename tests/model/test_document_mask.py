"""attention_mask: document: a packed block's logits equal each document's run alone."""

from __future__ import annotations

import pytest
import torch

from llm_gym.document_attention import (
    attend_within_documents,
    document_mask,
    positions_in_documents,
)
from llm_gym.errors import UserError
from llm_gym.recipes.loading import load_recipe
from llm_gym.registry import ResolverRegistry
from llm_gym_components.models.gpt2 import GPT2
from llm_gym_components.models.llama import Llama

MODELS = {
    "gpt2": lambda mask: GPT2(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                              attention_mask=mask),
    "llama": lambda mask: Llama(vocab_size=97, max_seq_len=32, n_embd=32, n_layer=2, n_head=4,
                                n_kv_head=2, qk_norm=True, attention_mask=mask),
}
# Two rows packed differently: a row may start mid-document (its first id is 0 anyway).
LAYOUTS = [(5, 9, 3, 7), (12, 1, 11)]


def _packed(lengths: tuple[int, ...], gen: torch.Generator):
    docs = [torch.randint(0, 97, (n,), generator=gen) for n in lengths]
    ids = torch.cat(docs)
    document_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    return docs, ids, document_ids


@pytest.mark.parametrize("name", MODELS)
def test_a_packed_block_gives_the_logits_of_each_document_alone(name):
    torch.manual_seed(0)
    model = MODELS[name]("document").eval()
    gen = torch.Generator().manual_seed(1)
    rows = [_packed(lengths, gen) for lengths in LAYOUTS]
    ids = torch.stack([r[1] for r in rows])
    document_ids = torch.stack([r[2] for r in rows])
    packed = model(ids, document_ids=document_ids)
    for b, (docs, _, _) in enumerate(rows):
        alone = torch.cat([model(d[None])[0] for d in docs])
        torch.testing.assert_close(packed[b], alone, atol=1e-5, rtol=0)
    # Without document ids a row is one document: plain causal attention.
    plain = MODELS[name]("causal").eval()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model(ids), plain(ids))


def test_positions_restart_at_each_document():
    ids = torch.tensor([[0, 0, 1, 1, 1, 2], [0, 1, 2, 2, 2, 2]])
    assert positions_in_documents(ids).tolist() == [[0, 1, 0, 1, 2, 0], [0, 0, 0, 1, 2, 3]]


@pytest.mark.parametrize("gqa", [False, True])
def test_flex_attention_and_masked_sdpa_agree(gqa):
    torch.manual_seed(0)
    B, H, T, D = 2, 4, 64, 8
    q = torch.randn(B, H, T, D)
    k, v = (torch.randn(B, 2 if gqa else H, T, D) for _ in range(2))
    document_ids = torch.sort(torch.randint(0, 5, (B, T)), dim=1).values
    dense = attend_within_documents(q, k, v, document_mask(document_ids, flex=False),
                                    enable_gqa=gqa)
    flex = attend_within_documents(q, k, v, document_mask(document_ids, flex=True),
                                   enable_gqa=gqa)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=0)


def test_a_causal_model_refuses_document_ids_and_shapes_must_match():
    model = MODELS["gpt2"]("causal")
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="attention_mask='document'"):
        model(ids, document_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        MODELS["llama"]("document")(ids, document_ids=torch.zeros(1, 3, dtype=torch.long))


def _problems(overrides: list[str]) -> str:
    with pytest.raises(UserError) as err:
        load_recipe("gpt2-tiny", overrides, registry=ResolverRegistry.from_installed_plugins(),
                    preflight=True)
    return str(err.value.__dict__)


def test_validate_refuses_a_document_mask_without_boundaries_and_the_reverse():
    text = _problems(["model.config.attention_mask=document"])
    assert "model.config.attention_mask: document needs the document boundaries" in text
    assert "train_dataset.config.document_boundaries=true" in text
    text = _problems(["train_dataset.config.document_boundaries=true"])
    assert "train_dataset.config.document_boundaries is true" in text
    # Both on (train and eval datasets) is a valid recipe.
    load_recipe("gpt2-tiny", ["model.config.attention_mask=document",
                              "train_dataset.config.document_boundaries=true",
                              "eval_dataset.config.document_boundaries=true"],
                registry=ResolverRegistry.from_installed_plugins(), preflight=True)
