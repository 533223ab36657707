"""Attention that stays inside each document of a packed sequence, and positions that
restart at every document start (a model's ``attention_mask: document``).

A packed block holds the end of one document, whole documents and the start of another;
plain causal attention lets each token see the documents before its own. Given
``document_ids[B, T]`` (``llm_gym/data/batch.py``: the index of each token's document in
its row, non-decreasing), a token attends only to earlier tokens of its own document, and
its position counts from its document's first token, so every document is seen as if it
were run alone.

Two implementations of the one mask, which agree (tests/model/test_document_mask.py): on
CUDA, FlexAttention (compiled; it skips the blocks the mask empties, so masking costs
about what it saves); elsewhere, SDPA with a boolean ``[B, 1, T, T]`` mask.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def positions_in_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` positions counted from each token's document start."""
    T = document_ids.size(1)
    index = torch.arange(T, device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - first


def check_document_ids(attention_mask: str, input_ids: torch.Tensor,
                       document_ids: torch.Tensor) -> None:
    """Refuse document ids a model cannot use: a causal model's, or of another shape."""
    if attention_mask != "document":
        raise ValueError("document_ids were given to a model with attention_mask="
                         f"{attention_mask!r}: set attention_mask='document'")
    if document_ids.shape != input_ids.shape:
        raise ValueError(f"document_ids {tuple(document_ids.shape)} must have the shape "
                         f"of input_ids {tuple(input_ids.shape)}")


def document_causal_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T, T]``: query t may see key s when s <= t and both share a document."""
    T = document_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()
    same = document_ids[:, :, None] == document_ids[:, None, :]
    return (same & causal)[:, None]


@dataclass(frozen=True)
class DocumentMask:
    """The mask of one batch, made once per forward and shared by every layer."""

    document_ids: torch.Tensor
    dense: torch.Tensor | None  # the SDPA path's boolean mask
    block_mask: Any = None  # FlexAttention's BlockMask (CUDA)


def document_mask(document_ids: torch.Tensor, *, flex: bool | None = None) -> DocumentMask:
    """The mask for ``document_ids``; ``flex`` picks FlexAttention (default: on CUDA)."""
    if document_ids.dim() != 2:
        raise ValueError(f"document_ids must be [batch, seq], got shape "
                         f"{tuple(document_ids.shape)}")
    use_flex = document_ids.is_cuda if flex is None else flex
    if not use_flex:
        return DocumentMask(document_ids, document_causal_mask(document_ids))
    from torch.nn.attention.flex_attention import create_block_mask

    ids = document_ids

    def same_document_causal(b, h, q, k):  # noqa: ANN001, ANN202 (FlexAttention's mask_mod)
        return (q >= k) & (ids[b, q] == ids[b, k])

    B, T = ids.shape
    block = create_block_mask(same_document_causal, B, None, T, T, device=ids.device)
    return DocumentMask(ids, None, block)


def attend_within_documents(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            mask: DocumentMask, *, enable_gqa: bool = False,
                            dropout_p: float = 0.0) -> torch.Tensor:
    """Attention of ``q, k, v[B, H, T, D]`` under ``mask``."""
    if mask.block_mask is not None and dropout_p == 0.0:
        return _flex()(q, k, v, block_mask=mask.block_mask, enable_gqa=enable_gqa)
    dense = mask.dense if mask.dense is not None else document_causal_mask(mask.document_ids)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=dense, dropout_p=dropout_p,
                                          enable_gqa=enable_gqa)


@functools.cache
def _flex():  # noqa: ANN202
    from torch.nn.attention.flex_attention import flex_attention

    if torch.cuda.is_available():
        return torch.compile(flex_attention)  # eager FlexAttention materialises the scores

    def eager(*args: Any, **kwargs: Any) -> torch.Tensor:
        with warnings.catch_warnings():  # CPU: for the agreement test only
            warnings.simplefilter("ignore")
            return flex_attention(*args, **kwargs)

    return eager
