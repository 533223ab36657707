"""The recipe's ``trainer`` section: how long, how big, how precise, how often."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llm_gym.registry import Component
from llm_gym.registry.component import StrictModel

Precision = Literal["fp32", "bf16", "fp16"]
# A registered component of kind logger, validated against the registry like a slot.
LoggerChoice = Component["logger"]
EvaluatorChoice = Component["evaluator"]
# The largest seed every consumer takes: torch.manual_seed and torch.Generator (unsigned
# 64 bits); numpy's SeedSequence and default_rng take any non-negative integer.
MAX_SEED = 2**64 - 1


class ProfileSettings(StrictModel):
    """``trainer.profile``: which optimizer steps torch.profiler records (runner/profiling.py)."""

    start_step: PositiveInt = Field(description="first profiled step (1 is the first step)")
    steps: PositiveInt = Field(description="how many consecutive steps to profile")


class ParallelSettings(StrictModel):
    """``trainer.parallel``: the device mesh (runner/mesh.py): data parallel, and tensor
    parallel inside each data-parallel rank."""

    dp_replicate: PositiveInt = Field(
        1, description="copies of the sharded model (HSDP when > 1: shard within a copy, "
        "e.g. a node, and average gradients across copies)")
    dp_shard: int = Field(
        -1, ge=-1, description="ranks each copy shards over; -1: the rest of the world")
    tp: PositiveInt = Field(
        1, description="tensor-parallel degree: ranks that split each layer (heads, MLP "
        "units) and the sequence between layers; keep it within a node")

    @field_validator("dp_shard")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("dp_shard must be a number of ranks (>= 1) or -1 for the rest")
        return value


class TrainerSettings(StrictModel):
    """Settings of the training loop (not a component: there is one runner)."""

    max_steps: PositiveInt = Field(description="optimizer steps to train for")
    seq_len: PositiveInt = Field(description="tokens per training sequence")
    micro_batch_size: PositiveInt = Field(8, description="sequences per rank per forward pass")
    grad_accumulation: PositiveInt = Field(
        1, description="micro-batches per optimizer step; derived from the world size when "
        "global_batch_size or global_batch_tokens is set (then leave it at 1)")
    global_batch_size: PositiveInt | None = Field(
        None, description="sequences per optimizer step, all ranks together, whatever the "
        "world size (grad_accumulation is derived; a checkpoint then resumes on another "
        "world size); null: micro_batch_size x grad_accumulation x ranks")
    global_batch_tokens: PositiveInt | None = Field(
        None, description="the fixed global batch in tokens instead (a multiple of seq_len)")
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; null: no clip")
    eval_every: PositiveInt | None = Field(None, description="steps between evaluations")
    eval_batches: PositiveInt = Field(8, description="micro-batches per evaluation")
    log_every: PositiveInt = Field(10, description="steps between metric records")
    checkpoint_every: PositiveInt | None = Field(None, description="steps between checkpoints")
    keep_last: PositiveInt = Field(3, description="complete checkpoints to keep")
    async_checkpoint: bool = Field(
        False, description="write checkpoints in the background while training goes on "
        "(a copy of the state in host memory; at most one save in flight)")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="same seed and world size give identical losses")
    param_dtype: Precision = Field("fp32", description="dtype of parameters in compute")
    reduce_dtype: Precision = Field("fp32", description="dtype of gradient reduction")
    activation_checkpointing: Literal["none", "full"] | PositiveInt = Field(
        "none", description="'none', 'full' (every block) or k (every k-th block)"
    )
    parallel: ParallelSettings = Field(
        default_factory=ParallelSettings,
        description="how ranks split the model: {dp_replicate: copies, dp_shard: ranks per "
        "copy (-1: the rest), tp: ranks that split every layer}; the default shards over "
        "every rank (FSDP2)")
    compile: bool = Field(False, description="torch.compile each transformer block, and "
                          "the loss (it fuses the fp32 upcast of the logits)")
    prefetch: int | None = Field(
        None, ge=0, description="batches read ahead on a thread; default 2 on GPU, 0 on CPU"
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="a non-finite loss or grad norm: stop the run, or skip the update "
        "(the LR schedule still advances); with a fused optimizer it is noticed at the "
        "next logging step or checkpoint, without a per-step host sync",
    )
    checkpoint_on_interrupt: bool = Field(True, description="save a checkpoint on Ctrl-C")
    sample_prompt: str | None = Field(None, description="text to continue after training")
    sample_tokens: PositiveInt = Field(48, description="tokens to generate for the sample")
    profile: ProfileSettings | None = Field(
        None, description="torch.profiler trace of steps start_step .. start_step+steps-1, "
        "one Chrome/Perfetto JSON per rank under RUN_DIR/profile/ (TensorBoard reads it); "
        "null: no profiling",
    )
    memory_snapshot_on_oom: bool = Field(
        True, description="on CUDA, record allocations so an out-of-memory step writes "
        "RUN_DIR/profile/oom-snapshot.pickle (pytorch.org/memory_viz reads it)",
    )
    loggers: list[LoggerChoice] = Field(
        default_factory=lambda: ["Console"], validate_default=True,
        description="metric subscribers (kind 'logger') besides RUN_DIR/metrics.jsonl, "
        "which is always written; e.g. [Console, TensorBoard]",
    )

    evaluators: list[EvaluatorChoice] = Field(
        default_factory=list,
        description="downstream evaluations (kind 'evaluator'), each run every its own "
        "`every` steps and logged as eval/<name>/<metric>; e.g. MultipleChoice on a "
        "HellaSwag file, TextPerplexity on held-out texts (docs/evaluation.md)",
    )

    @field_validator("evaluators")
    @classmethod
    def _names_unique(cls, evaluators: list[Any]) -> list[Any]:
        repeat = _first_repeat([choice.config.name for choice in evaluators])
        if repeat:
            name, first, i = repeat
            raise ValueError(f"two evaluators are named {name!r} ([{first}] and [{i}]): give "
                             "one another name, their records' keys are eval/<name>/<metric>")
        return evaluators

    # Field validators (not one model validator) so each refusal is reported at the YAML
    # path of the setting to change, e.g. trainer.global_batch_tokens.
    @field_validator("global_batch_size", "global_batch_tokens")
    @classmethod
    def _fixed_batch_derives_accumulation(cls, value: int | None,
                                          info: ValidationInfo) -> int | None:
        accumulation = info.data.get("grad_accumulation", 1)
        if value is not None and accumulation != 1:
            raise ValueError("a fixed global batch derives grad_accumulation from itself, "
                             "micro_batch_size and the world size: set "
                             f"trainer.grad_accumulation=1 (it is {accumulation})")
        return value

    @field_validator("global_batch_tokens")
    @classmethod
    def _whole_sequences(cls, tokens: int | None, info: ValidationInfo) -> int | None:
        if tokens is None:
            return None
        if info.data.get("global_batch_size") is not None:
            raise ValueError("global_batch_size is set too: fix the global batch in "
                             "sequences or in tokens, not both")
        seq_len = info.data.get("seq_len")
        if seq_len and tokens % seq_len:
            below = tokens // seq_len * seq_len
            nearest = " or ".join(str(n) for n in (below, below + seq_len) if n > 0)
            raise ValueError(f"{tokens} tokens are not whole sequences of seq_len "
                             f"{seq_len}; the nearest that are: {nearest}")
        return tokens

    @model_validator(mode="after")
    def _profile_within_run(self) -> TrainerSettings:
        if self.profile is not None and self.profile.start_step > self.max_steps:
            raise ValueError(f"profile.start_step {self.profile.start_step} is past max_steps "
                             f"{self.max_steps}: no step would be profiled")
        return self

    @field_validator("loggers")
    @classmethod
    def _each_logger_once(cls, loggers: list[Any]) -> list[Any]:
        repeat = _first_repeat([choice.type_hint.name for choice in loggers])
        if repeat:
            name, first, i = repeat
            raise ValueError(f"{name} is listed twice ([{first}] and [{i}]): each logger "
                             "subscribes once")
        return loggers


def _first_repeat(names: list[str]) -> tuple[str, int, int] | None:
    """``(name, first index, repeated index)`` of the first name listed twice, if any."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            return name, seen[name], i
        seen[name] = i
    return None
