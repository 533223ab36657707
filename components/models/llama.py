"""A Llama-style decoder as a plain torch module: one file, no llm_gym imports.

Rotary positions (RoPE), RMSNorm, a SwiGLU MLP, grouped-query attention (``n_kv_head``
key/value heads shared by ``n_head // n_kv_head`` query heads each), optional QK-norm, no
biases, tied or untied embeddings. Parameter names follow Hugging Face's
``LlamaForCausalLM`` (``model.layers.N.self_attn.q_proj`` ...), and RoPE rotates the two
halves of each head (HF's ``rotate_half``), so weights map one to one.

As for GPT-2, parallelism stays outside: FSDP, checkpointing and compilation wrap
``Llama.blocks``. For sharded initialisation, build under ``torch.device("meta")``, wrap,
then ``to_empty(device=...)`` and ``init_weights()`` (which also recomputes the RoPE
tables, buffers that ``to_empty`` leaves uninitialised).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llm_gym.document_attention import (
    DocumentMask,
    attend_within_documents,
    check_document_ids,
    document_mask,
    positions_in_documents,
)
from llm_gym.kv_cache import CachedDecoding, KVCache, attend
from llm_gym.sampling import sample_tokens
from llm_gym.tensor_parallel_plan import TensorParallelPlan

# Bytes of the fp32 statistics and int64 ids that a forward saves, whatever the dtype.
_F32 = 4
_INDEX = 8


def swiglu_hidden_size(n_embd: int, multiplier: float, multiple_of: int) -> int:
    """The MLP width: two thirds of 4 x n_embd (so SwiGLU's three matrices cost what a
    4x GELU MLP's two do), times ``multiplier``, rounded up to a multiple of ``multiple_of``."""
    hidden = int(multiplier * int(2 * 4 * n_embd / 3))
    return multiple_of * math.ceil(hidden / multiple_of)


def rope_tables(head_dim: int, length: int, theta: float,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[length, head_dim]`` of RoPE: pair i of a head turns by position x
    ``theta ** (-2i / head_dim)``; each frequency serves both halves of the head."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
                         / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x[B, H, T, D]``'s pairs (i, i + D/2) by the angles of ``cos``/``sin[T, D]``
    (or ``[B, 1, T, D]``: positions of each row's own, for document masking)."""
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` without the module call (decoding's per-token cost, see Block.decode)."""
    return F.linear(x, layer.weight, layer.bias)


def _rms_norm(norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without the module call (decoding's per-token cost, see Block.decode)."""
    return F.rms_norm(x, (x.size(-1),), norm.weight, norm.eps)


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, n_kv_head: int, qk_norm: bool,
                 norm_eps: float) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be divisible by n_kv_head ({n_kv_head})")
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = n_embd // n_head
        if self.head_dim % 2:
            raise ValueError(f"the head dimension n_embd / n_head = {self.head_dim} must be "
                             "even: RoPE rotates pairs")
        self.q_proj = nn.Linear(n_embd, n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.v_proj = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_head * self.head_dim, n_embd, bias=False)
        # QK-norm (per head, before RoPE) bounds the attention logits of large models.
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, layer: int = 0,
                documents: DocumentMask | None = None) -> torch.Tensor:
        if kv_cache is not None:
            return self.decode(x, cos, sin, kv_cache, layer)
        B, T, _ = x.shape
        # Heads counted from the width: under tensor parallelism the projections give this
        # rank's heads only (runner/tensor_parallel.py).
        q = self.q_proj(x).view(B, T, -1, self.head_dim)
        k = self.k_proj(x).view(B, T, -1, self.head_dim)
        v = self.v_proj(x).view(B, T, -1, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # heads become a batch dimension
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # enable_gqa lets SDPA share each key/value head among its query heads without
        # materialising the repeated keys and values.
        gqa = self.n_kv_head != self.n_head
        if documents is not None:  # a packed block: each token sees only its own document
            y = attend_within_documents(q, k, v, documents, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def decode(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               kv_cache: KVCache, layer: int) -> torch.Tensor:
        """Attention of new positions over every cached one (see :meth:`Block.decode`):
        only the n_kv_head heads are stored, at their rotated positions."""
        B, T, _ = x.shape
        q = _linear(self.q_proj, x).view(B, T, self.n_head, self.head_dim)
        k = _linear(self.k_proj, x).view(B, T, self.n_kv_head, self.head_dim)
        v = _linear(self.v_proj, x).view(B, T, self.n_kv_head, self.head_dim)
        if self.q_norm is not None:
            q, k = _rms_norm(self.q_norm, q), _rms_norm(self.k_norm, k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        start = kv_cache.length
        k, v = kv_cache.append(layer, k, v)
        y = attend(q, k, v, start, enable_gqa=self.n_kv_head != self.n_head)
        return _linear(self.o_proj, y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, n_embd: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, hidden, bias=False)
        self.up_proj = nn.Linear(n_embd, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` for decoding (see :meth:`Block.decode`)."""
        return _linear(self.down_proj,
                       F.silu(_linear(self.gate_proj, x)) * _linear(self.up_proj, x))


class Block(nn.Module):
    """A pre-RMSNorm block: the unit FSDP shards and checkpointing recomputes."""

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int, hidden: int, qk_norm: bool,
                 norm_eps: float) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(n_embd, norm_eps)
        self.self_attn = Attention(n_embd, n_head, n_kv_head, qk_norm, norm_eps)
        self.post_attention_layernorm = RMSNorm(n_embd, norm_eps)
        self.mlp = MLP(n_embd, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, layer: int = 0,
                documents: DocumentMask | None = None) -> torch.Tensor:
        if kv_cache is not None:
            return self.decode(x, cos, sin, kv_cache, layer)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, layer, documents)
        return x + self.mlp(self.post_attention_layernorm(x))

    def decode(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               kv_cache: KVCache, layer: int) -> torch.Tensor:
        """``forward`` for positions that continue ``kv_cache``: the same arithmetic with
        fewer Python calls. Decoding runs every op once per token on a single position,
        where calling a module costs about what its kernel does, so the layers inside a
        block are applied as functions of their weights (hooks on them do not run; the
        block's own, FSDP's among them, do)."""
        x = x + self.self_attn.decode(_rms_norm(self.input_layernorm, x), cos, sin, kv_cache,
                                      layer)
        return x + self.mlp.decode(_rms_norm(self.post_attention_layernorm, x))


class Llama(nn.Module, CachedDecoding):
    """Llama-style language model: ``forward(input_ids[B, T]) -> logits[B, T, vocab_size]``.

    Satisfies ``llm_gym.model_contract.LanguageModel`` and decodes with a KV cache.
    """

    vocab_size: int
    max_seq_len: int

    def __init__(
        self,
        *,
        vocab_size: int,
        max_seq_len: int,
        n_embd: int,
        n_layer: int,
        n_head: int,
        n_kv_head: int | None = None,
        ffn_multiplier: float = 1.0,
        multiple_of: int = 256,
        rope_theta: float = 10000.0,
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        tie_embeddings: bool = False,
        init_std: float = 0.02,
        attention_mask: str = "causal",
    ) -> None:
        super().__init__()
        if attention_mask not in ("causal", "document"):
            raise ValueError(f"attention_mask must be 'causal' or 'document', "
                             f"got {attention_mask!r}")
        self.attention_mask = attention_mask
        self.vocab_size, self.max_seq_len = vocab_size, max_seq_len
        self.n_embd, self.n_layer, self.n_head = n_embd, n_layer, n_head
        self.n_kv_head = n_kv_head or n_head
        self.hidden = swiglu_hidden_size(n_embd, ffn_multiplier, multiple_of)
        self.rope_theta, self.qk_norm = rope_theta, qk_norm
        self.tie_embeddings, self.init_std = tie_embeddings, init_std
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(vocab_size, n_embd),
            layers=nn.ModuleList(
                Block(n_embd, n_head, self.n_kv_head, self.hidden, qk_norm, norm_eps)
                for _ in range(n_layer)),
            norm=RMSNorm(n_embd, norm_eps),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Not saved with the weights: they follow from the sizes, and init_weights remakes them.
        cos, sin = rope_tables(n_embd // n_head, max_seq_len, rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, in order: the units for FSDP and activation checkpointing."""
        return list(self.model.layers)

    def tensor_parallel_plan(self) -> TensorParallelPlan:
        """Megatron-style cuts (``llm_gym/tensor_parallel_plan.py``): query and key/value
        heads and SwiGLU units per rank, the sequence cut between them."""
        block = {"input_layernorm": "norm", "self_attn": "gather_sequence",
                 "self_attn.q_proj": "colwise", "self_attn.k_proj": "colwise",
                 "self_attn.v_proj": "colwise", "self_attn.o_proj": "rowwise",
                 "post_attention_layernorm": "norm", "mlp": "gather_sequence",
                 "mlp.gate_proj": "colwise", "mlp.up_proj": "colwise",
                 "mlp.down_proj": "rowwise"}
        if self.qk_norm:
            block |= {"self_attn.q_norm": "head_norm", "self_attn.k_norm": "head_norm"}
        tied = (("lm_head.weight", "model.embed_tokens.weight"),) if self.tie_embeddings else ()
        return TensorParallelPlan(
            root={"model.embed_tokens": "vocab_embedding", "model.norm": "norm",
                  "lm_head": "head"},
            block=block,
            divides={"n_head": self.n_head, "n_kv_head": self.n_kv_head},
            tied=tied,
        )

    def init_weights(self) -> None:
        """Normal(0, init_std) weights, the two residual projections of each block scaled by
        1/sqrt(2 n_layer) (so the residual stream's variance does not grow with depth),
        unit norms; and the RoPE tables. A no-op on the meta device."""
        residual_std = self.init_std / math.sqrt(2 * self.n_layer)
        for name, module in self.named_modules():
            if module is self.lm_head and self.tie_embeddings:
                continue  # tied: initialised once, as the embedding
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, std=residual_std if residual else self.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        if self.rope_cos.device.type != "meta":
            cos, sin = rope_tables(self.n_embd // self.n_head, self.max_seq_len,
                                   self.rope_theta, device=self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> Llama:
        # Leaving meta gives every module a fresh Parameter: tie the head again.
        super().to_empty(device=device, recurse=recurse)
        if self.tie_embeddings and self.lm_head.weight is not self.model.embed_tokens.weight:
            self.lm_head.weight = self.model.embed_tokens.weight
        return self

    def forward(self, input_ids: torch.Tensor, kv_cache: KVCache | None = None,
                document_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``input_ids``; with ``kv_cache``, the ids continue the cached positions;
        with ``document_ids[B, T]`` (``attention_mask="document"``), each document is run
        as if alone. Without them a row is one document (evaluation, sampling)."""
        if document_ids is not None:
            return self._forward_documents(input_ids, document_ids)
        T = input_ids.size(1)
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.max_seq_len:
            raise ValueError(f"sequence length {start + T} exceeds the model's max_seq_len="
                             f"{self.max_seq_len}")
        if kv_cache is not None:
            return self._forward_cached(input_ids, kv_cache)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.model.embed_tokens(input_ids)
        for block in self.model.layers:
            x = block(x, cos, sin)
        return self.lm_head(self.model.norm(x))

    def _forward_cached(self, input_ids: torch.Tensor, kv_cache: KVCache) -> torch.Tensor:
        """The ids continue the ``kv_cache.length`` cached positions. Decoding runs this
        once per token, so layers are applied as functions of their weights
        (``Block.decode`` says why)."""
        T, start = input_ids.size(1), kv_cache.length
        cos, sin = self.rope_cos.narrow(0, start, T), self.rope_sin.narrow(0, start, T)
        x = F.embedding(input_ids, self.model.embed_tokens.weight)
        for layer, block in enumerate(self.model.layers):
            x = block(x, cos, sin, kv_cache, layer)
        kv_cache.advance(T)
        return _linear(self.lm_head, _rms_norm(self.model.norm, x))

    def _forward_documents(self, input_ids: torch.Tensor,
                           document_ids: torch.Tensor) -> torch.Tensor:
        check_document_ids(self.attention_mask, input_ids, document_ids)
        if input_ids.size(1) > self.max_seq_len:
            raise ValueError(f"sequence length {input_ids.size(1)} exceeds the model's "
                             f"max_seq_len={self.max_seq_len}")
        pos = positions_in_documents(document_ids)
        # Rotary angles of each token's position in its own document: [B, 1, T, D].
        cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]
        documents = document_mask(document_ids)
        x = self.model.embed_tokens(input_ids)
        for block in self.model.layers:
            x = block(x, cos, sin, None, 0, documents)
        return self.lm_head(self.model.norm(x))

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        weight = self.model.embed_tokens.weight
        return KVCache(n_layer=self.n_layer, batch_size=batch_size, n_kv_head=self.n_kv_head,
                       max_len=max_len, head_dim=self.n_embd // self.n_head,
                       dtype=weight.dtype, device=weight.device)

    def num_params(self) -> int:
        """Parameters, a tied head once; an untied embedding table is left out, since a
        lookup costs no matmul FLOPs (the N of ``6 N``)."""
        n = sum(p.numel() for p in self.parameters())
        return n if self.tie_embeddings else n - self.model.embed_tokens.weight.numel()

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: ``6 N`` plus ``12 L H Q T`` for attention scores and
        their weighted sum (PaLM, appendix B); key/value sharing saves no attention FLOPs."""
        head_dim = self.n_embd // self.n_head
        return 6 * self.num_params() + 12 * self.n_layer * self.n_head * head_dim * seq_len

    def block_activation_bytes(self, dtype: torch.dtype, *, checkpointed: bool) -> int:
        """Bytes one block saves for backward per token, computing in ``dtype``.

        Checkpointed, only its input. Otherwise, in ``dtype``: both RMSNorm outputs (the
        inputs of the projections), the roped q, k and v that SDPA keeps and its output
        (the input of o_proj), and the MLP's gate and up outputs, the SiLU output and the
        product (the input of down_proj), 4 x hidden. In fp32 whatever the dtype, as
        eager ``F.rms_norm`` computes: each RMSNorm's input and normalised input and its
        rstd, QK-norm's alike per head, and SDPA's log-sum-exp per head. (Counted with
        ``saved_tensors_hooks``, tests/model/test_llama.py.)
        """
        b = dtype.itemsize
        if checkpointed:
            return self.n_embd * b
        head_dim = self.n_embd // self.n_head
        qkv = (self.n_head + 2 * self.n_kv_head) * head_dim
        values = 2 * self.n_embd + qkv + self.n_head * head_dim + 4 * self.hidden
        fp32 = 2 * (2 * self.n_embd + 1) + self.n_head
        if self.qk_norm:
            heads = self.n_head + self.n_kv_head
            fp32 += heads * (2 * head_dim + 1)
        return values * b + fp32 * _F32

    def root_activation_bytes(self, dtype: torch.dtype) -> int:
        """Bytes per token outside the blocks: the token id, the final RMSNorm's fp32 input,
        normalised input and rstd, and its output (the head's input) in ``dtype``."""
        return (2 * self.n_embd + 1) * _F32 + self.n_embd * dtype.itemsize + _INDEX

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        *,
        top_p: float | None = None,
        stop_token: int | None = None,
    ) -> torch.Tensor:
        """Append up to ``max_new_tokens`` sampled tokens to ``input_ids[B, T]``
        (``temperature=0``: greedy); the context is cropped to the last ``max_seq_len``
        tokens; ``llm_gym/sampling.py`` says what top_p and stop_token do."""
        return sample_tokens(self, input_ids, max_new_tokens, temperature=temperature,
                             top_k=top_k, top_p=top_p, stop_token=stop_token,
                             generator=generator)
