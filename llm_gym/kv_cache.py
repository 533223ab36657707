"""The key/value cache for decoding one token at a time, and how a model declares it.

Without a cache every new token runs the whole context through the model again, so
``n`` tokens cost ``O(n^2)`` positions. With one, the prompt is run once (prefill) and each
new token runs only itself, attending to the keys and values stored for the positions
before it.

A model offers cached decoding by deriving from :class:`CachedDecoding` (a declaration,
not a probe: the sampler in ``llm_gym/sampling.py`` checks ``isinstance``) and accepting
``forward(input_ids, kv_cache=cache)``: its positions start at ``cache.length``, each
attention layer stores its new keys and values with :meth:`KVCache.append` and attends to
what it returns, and the model calls :meth:`KVCache.advance` once at the end. A model that
does not declare it samples through the uncached path of the same sampler.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values ``[layer][B, n_kv_head, max_len, head_dim]`` for positions
    ``0 .. length - 1`` of a batch of sequences."""

    def __init__(self, *, n_layer: int, batch_size: int, n_kv_head: int, max_len: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device) -> None:
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        # Each layer's view, taken once: indexing ``[layer, :, :, a:b]`` anew costs more per
        # decoded token (Python parsing the index, several views) than the copy itself.
        # (select, not unbind: autograd refuses in-place writes into unbind's views.)
        self._layer_keys = [self.keys.select(0, i) for i in range(n_layer)]
        self._layer_values = [self.values.select(0, i) for i in range(n_layer)]
        self.max_len = max_len
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v[B, n_kv_head, T, head_dim]`` at positions ``length .. length+T-1``
        of ``layer``; return that layer's keys and values for positions ``0 .. length+T-1``."""
        start, n = self.length, k.size(2)
        end = start + n
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions; "
                             f"{start} + {n} do not fit")
        keys, values = self._layer_keys[layer], self._layer_values[layer]
        keys.narrow(2, start, n).copy_(k)
        values.narrow(2, start, n).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def advance(self, n: int) -> None:
        """The model ran ``n`` more positions through every layer."""
        self.length += n


class CachedDecoding:
    """Derive a model from this (beside ``nn.Module``) to declare cached decoding."""

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` positions, on
        the model's device and in its dtype."""
        raise NotImplementedError


def cached_attention_mask(start: int, length: int, device: torch.device) -> torch.Tensor | None:
    """The boolean mask ``[length, start + length]`` for ``length`` new queries at
    positions ``start ..`` over all keys so far, or None where SDPA needs none (a single
    new query sees every key). ``start == 0`` is the training case: use ``is_causal``."""
    if length == 1:
        return None
    queries = torch.arange(start, start + length, device=device)[:, None]
    return torch.arange(start + length, device=device)[None, :] <= queries


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, *,
           enable_gqa: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention of queries at positions ``start ..`` over keys from position 0:
    the training call (``is_causal``) when ``start == 0``, masked otherwise."""
    if start == 0:
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=enable_gqa)
    # A single new query (every decoded token) sees every key: no mask to build.
    mask = None if q.size(2) == 1 else cached_attention_mask(start, q.size(2), q.device)
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=enable_gqa)
