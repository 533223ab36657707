"""GPT-2 as a plain torch module: one file, no device assumptions; it samples with the
sampler every contract model shares (``llm_gym/sampling.py``), with a KV cache.

Parameter names match Hugging Face's ``GPT2LMHeadModel`` so checkpoints map one to one,
with one difference: every projection here is an ``nn.Linear``, whose weight is stored
``(out_features, in_features)``, the transpose of HF's ``Conv1D`` ``(in, out)``. Export and
import transpose ``c_attn``, ``c_proj`` and ``c_fc`` weights; nothing else changes.

Model code stays free of parallelism: FSDP, activation checkpointing and compilation wrap
``GPT2.blocks`` from outside. For sharded initialisation, build under
``torch.device("meta")``, wrap, then ``to_empty(device=...)`` and ``init_weights()``.
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


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` without the module call (decoding's per-token cost)."""
    return F.linear(x, layer.weight, layer.bias)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without the module call (decoding's per-token cost)."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head = n_head
        self.dropout = dropout
        # One matmul for q, k and v together: fewer, larger kernels.
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0,
                documents: DocumentMask | None = None) -> torch.Tensor:
        if kv_cache is not None:
            return self.decode(x, kv_cache, layer)
        B, T, C = x.shape
        head_dim = C // self.n_head
        # Thirds, and heads counted from the width: under tensor parallelism c_attn gives
        # this rank's heads of q, k and v only (runner/tensor_parallel.py).
        q, k, v = self.c_attn(x).chunk(3, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): heads become a batch dimension for SDPA.
        q, k, v = (t.view(B, T, -1, head_dim).transpose(1, 2) for t in (q, k, v))
        dropout_p = self.dropout if self.training else 0.0
        if documents is not None:  # a packed block: each token sees only its own document
            y = attend_within_documents(q, k, v, documents, dropout_p=dropout_p)
        else:
            # is_causal lets SDPA pick a fused (flash / memory-efficient) kernel and spares
            # us a (T, T) mask buffer, which would also need special care on meta.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.resid_dropout(self.c_proj(y))

    def decode(self, x: torch.Tensor, kv_cache: KVCache, layer: int) -> torch.Tensor:
        """Attention of new positions over every cached one (see :meth:`Block.decode`)."""
        B, T, C = x.shape
        # (B, T, 3 C) -> 3 x (B, n_head, T, head_dim) in three ops, not split's seven.
        q, k, v = _linear(self.c_attn, x).view(B, T, 3, self.n_head, C // self.n_head).permute(
            2, 0, 3, 1, 4).unbind(0)
        start = kv_cache.length
        k, v = kv_cache.append(layer, k, v)
        y = attend(q, k, v, start, dropout_p=self.dropout if self.training else 0.0)
        y = _linear(self.c_proj, y.transpose(1, 2).reshape(B, T, C))
        return self.resid_dropout(y) if self.training else y  # dropout: identity in eval


# The MLP's activation: "gelu_tanh" is GPT-2's (the default), "gelu" the exact one.
GELU_APPROXIMATION = {"gelu_tanh": "tanh", "gelu": "none"}


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool,
                 activation: str = "gelu_tanh") -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        # GPT-2 was trained with the tanh approximation ("gelu_new" in HF); using it keeps
        # pretrained GPT-2 weights exact here. It is dearer than the exact (erf) GELU that
        # nanoGPT uses: on a CPU about 10 ms of a 300 ms gpt2-tiny step on one thread
        # (docs/benchmarks.md, 2026-12-02); it stays the default: switching changes every
        # recipe's losses and imported weights; activation="gelu" is the opt-in.
        self.act = nn.GELU(approximate=GELU_APPROXIMATION[activation])
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` for decoding (see :meth:`Block.decode`)."""
        h = _linear(self.c_proj, F.gelu(_linear(self.c_fc, x), approximate=self.act.approximate))
        return self.dropout(h) if self.training else h  # dropout: identity in eval


class Block(nn.Module):
    """A pre-LayerNorm transformer block: the unit FSDP shards and checkpointing recomputes."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool,
                 activation: str = "gelu_tanh") -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias, activation)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0,
                documents: DocumentMask | None = None) -> torch.Tensor:
        if kv_cache is not None:
            return self.decode(x, kv_cache, layer)
        # Normalising only the branch input leaves the residual stream an identity path,
        # which is what lets deep stacks train without warm-up tricks.
        x = x + self.attn(self.ln_1(x), kv_cache, layer, documents)
        return x + self.mlp(self.ln_2(x))

    def decode(self, x: torch.Tensor, kv_cache: KVCache, layer: int) -> torch.Tensor:
        """``forward`` for positions that continue ``kv_cache``: the same arithmetic with
        fewer Python calls. Decoding runs every op once per token on a single position,
        where calling a module costs about what its kernel does, so the layers inside a
        block are applied as functions of their weights (hooks on them do not run; the
        block's own, FSDP's among them, do)."""
        x = x + self.attn.decode(_layer_norm(self.ln_1, x), kv_cache, layer)
        return x + self.mlp.decode(_layer_norm(self.ln_2, x))


# "causal": every token sees all before it; "document": only those of its own document,
# positions counted from the document's start (needs document_ids from the dataset).
ATTENTION_MASKS = ("causal", "document")

# Bytes of the fp32 statistics and int64 ids that a forward saves, whatever the dtype.
_F32 = 4
_INDEX = 8


class GPT2(nn.Module, CachedDecoding):
    """GPT-2 language model: ``forward(input_ids[B, T]) -> logits[B, T, vocab_size]``.

    Satisfies ``llm_gym.model_contract.LanguageModel`` and decodes with a KV cache.
    """

    vocab_size: int

    def __init__(
        self,
        *,
        vocab_size: int,
        n_positions: int,
        n_embd: int,
        n_layer: int,
        n_head: int,
        dropout: float = 0.0,
        bias: bool = True,
        activation: str = "gelu_tanh",
        attention_mask: str = "causal",
    ) -> None:
        super().__init__()
        if activation not in GELU_APPROXIMATION:
            raise ValueError(f"activation must be one of {sorted(GELU_APPROXIMATION)}, "
                             f"got {activation!r}")
        if attention_mask not in ATTENTION_MASKS:
            raise ValueError(f"attention_mask must be one of {ATTENTION_MASKS}, "
                             f"got {attention_mask!r}")
        self.attention_mask = attention_mask
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.dropout = dropout
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(n_positions, n_embd),
                drop=nn.Dropout(dropout),
                h=nn.ModuleList(Block(n_embd, n_head, dropout, bias, activation)
                                for _ in range(n_layer)),
                ln_f=nn.LayerNorm(n_embd, bias=bias),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        # Tying the head to the token embedding saves vocab_size * n_embd parameters (a
        # third of GPT-2 small) and is how GPT-2 was trained.
        self.lm_head.weight = self.transformer.wte.weight
        self.init_weights()

    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, in order: the units for FSDP and activation checkpointing."""
        return list(self.transformer.h)

    @property
    def max_seq_len(self) -> int:
        return self.n_positions

    def tensor_parallel_plan(self) -> TensorParallelPlan:
        """Megatron-style cuts (``llm_gym/tensor_parallel_plan.py``): heads and MLP units
        per rank, the sequence cut between them; c_attn's q, k and v each cut by heads."""
        return TensorParallelPlan(
            root={"transformer.wte": "vocab_embedding", "transformer.wpe": "replicate",
                  "transformer.ln_f": "norm", "lm_head": "head"},
            block={"ln_1": "norm", "attn": "gather_sequence", "attn.c_attn": "colwise",
                   "attn.c_proj": "rowwise", "ln_2": "norm", "mlp": "gather_sequence",
                   "mlp.c_fc": "colwise", "mlp.c_proj": "rowwise"},
            fused={"attn.c_attn": 3},
            divides={"n_head": self.n_head},
            tied=(("lm_head.weight", "transformer.wte.weight"),),
        )

    def init_weights(self) -> None:
        """(Re-)apply GPT-2's initialisation in place; a no-op on the meta device.

        Public so that a model built on ``meta`` and sharded can be initialised after
        ``to_empty``; the ``nn.init`` calls work on FSDP's DTensor shards as well.
        """
        residual_std = 0.02 / math.sqrt(2 * self.n_layer)
        for name, module in self.named_modules():
            if module is self.lm_head:
                continue  # tied: initialised once, as the embedding
            if isinstance(module, (nn.Linear, nn.Embedding)):
                # Each block adds two c_proj outputs to the residual stream; scaling them down
                # keeps its variance from growing with depth (GPT-2 paper, section 2.3).
                std = residual_std if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> GPT2:
        # Leaving the meta device creates a fresh Parameter per module, which would silently
        # give the head its own (uninitialised) copy of the embedding; tie them again.
        super().to_empty(device=device, recurse=recurse)
        if self.lm_head.weight is not self.transformer.wte.weight:
            self.lm_head.weight = self.transformer.wte.weight
        return self

    def forward(self, input_ids: torch.Tensor, kv_cache: KVCache | None = None,
                document_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``input_ids``; with ``kv_cache``, the ids continue the cached positions;
        with ``document_ids[B, T]`` (``attention_mask="document"``), each document is run
        as if alone. Without them a row is one document (evaluation, sampling)."""
        if document_ids is not None:
            return self._forward_documents(input_ids, document_ids)
        if kv_cache is not None:
            return self._forward_cached(input_ids, kv_cache)
        T = input_ids.size(1)
        if T > self.n_positions:
            raise ValueError(
                f"sequence length {T} exceeds the model's n_positions={self.n_positions}")
        pos = torch.arange(0, T, device=input_ids.device)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def _forward_cached(self, input_ids: torch.Tensor, kv_cache: KVCache) -> torch.Tensor:
        """The ids continue the ``kv_cache.length`` cached positions. Decoding runs this
        once per token: ops that do nothing here (eval-mode dropout, a positions arange)
        are left out and layers are applied as functions of their weights (``Block.decode``
        says why)."""
        T = input_ids.size(1)
        start = kv_cache.length
        if start + T > self.n_positions:
            raise ValueError(
                f"sequence length {start + T} exceeds the model's n_positions={self.n_positions}"
            )
        transformer = self.transformer
        # The positions are a run: a slice of the table equals looking each one up.
        x = F.embedding(input_ids, transformer.wte.weight) + transformer.wpe.weight.narrow(
            0, start, T)
        if self.training:  # dropout is the identity in eval mode
            x = transformer.drop(x)
        for layer, block in enumerate(transformer.h):
            x = block(x, kv_cache, layer)
        kv_cache.advance(T)
        return _linear(self.lm_head, _layer_norm(transformer.ln_f, x))

    def _forward_documents(self, input_ids: torch.Tensor,
                           document_ids: torch.Tensor) -> torch.Tensor:
        check_document_ids(self.attention_mask, input_ids, document_ids)
        T = input_ids.size(1)
        if T > self.n_positions:
            raise ValueError(
                f"sequence length {T} exceeds the model's n_positions={self.n_positions}")
        pos = positions_in_documents(document_ids)
        documents = document_mask(document_ids)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, None, 0, documents)
        return self.lm_head(self.transformer.ln_f(x))

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        weight = self.transformer.wte.weight
        return KVCache(n_layer=self.n_layer, batch_size=batch_size, n_kv_head=self.n_head,
                       max_len=max_len, head_dim=self.n_embd // self.n_head,
                       dtype=weight.dtype, device=weight.device)

    def num_params(self, exclude_position_embeddings: bool = True) -> int:
        """Number of parameters, the tied head counted once.

        Position embeddings are excluded by default because they cost no matmul FLOPs,
        which makes this the N of the ``6 * N`` compute estimate.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied one once
        if exclude_position_embeddings:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs (forward + backward) per token at sequence length ``seq_len``.

        ``6 * N`` for the weight matmuls plus ``12 * L * H * Q * T`` for attention scores and
        their weighted sum (PaLM, appendix B), ignoring the causal mask's savings.
        """
        head_dim = self.n_embd // self.n_head
        attention = 12 * self.n_layer * self.n_head * head_dim * seq_len
        return 6 * self.num_params(exclude_position_embeddings=True) + attention

    def block_activation_bytes(self, dtype: torch.dtype, *, checkpointed: bool) -> int:
        """Bytes one block saves for backward per token, computing in ``dtype``.

        Checkpointed, only its input. Otherwise 16 x n_embd values in ``dtype`` (the block
        input and the residual after attention, which the LayerNorms keep; both LayerNorm
        outputs, the inputs of c_attn and c_fc; q, k, v; the attention output, of which
        c_proj's input is a view; the 4x-wide MLP hidden before and after GELU), the fp32
        mean and rstd of both LayerNorms and the fp32 log-sum-exp per head of fused
        attention, which saves no T x T matrix. Dropout adds a 1-byte mask per element of
        both residual branches. (Checked against ``saved_tensors_hooks``, tests/planning.)
        """
        b = dtype.itemsize
        if checkpointed:
            return self.n_embd * b
        per_token = 16 * self.n_embd * b + 4 * _F32 + self.n_head * _F32
        return per_token + (2 * self.n_embd if self.dropout > 0 else 0)

    def root_activation_bytes(self, dtype: torch.dtype) -> int:
        """Bytes per token the layers outside the blocks save: the token id, the final
        LayerNorm's input, output (the head's input) and fp32 statistics, and the
        embedding dropout's mask."""
        per_token = 2 * self.n_embd * dtype.itemsize + 2 * _F32 + _INDEX
        return per_token + (self.n_embd if self.dropout > 0 else 0)

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
        """Append up to ``max_new_tokens`` sampled tokens to ``input_ids[B, T]``.

        ``temperature=0`` picks the argmax (greedy). The context is cropped to the last
        ``n_positions`` tokens; ``llm_gym/sampling.py`` says what top_p and stop_token do.
        Call ``eval()`` first if the model has dropout.
        """
        return sample_tokens(self, input_ids, max_new_tokens, temperature=temperature,
                             top_k=top_k, top_p=top_p, stop_token=stop_token,
                             generator=generator)
