"""What a resume may change: the recipe now against the recipe that wrote the checkpoint.

Both recipes are compared as resolved data (every value after interpolation), flattened
to dotted keys down to their leaves, list items included (``model.config.n_layer``,
``train_dataset.config.sources[1].config.path``), so a change is named where it is. Each
changed key is classified by one table, ``RULES``, first match wins; an item of a list
is judged as the list it is in (``optimizer.config.betas[1]`` as
``optimizer.config.betas``):

- ``safe``: applied and recorded (more steps, how often to log, evaluate or save, the
  loggers, the evaluators, the sample);
- ``allowed``: honoured only when named with ``--allow-change KEY`` (the learning rate
  and other optimizer hyperparameters, the loss, the evaluation data, precision);
- ``never``: refused even with ``--allow-change``, because the checkpoint cannot honour
  it (the model's shape, the tokenizer, the training data and batch shape, the seed).

A key no rule names is refused: a change is only accepted once someone has said why it
is safe.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError

SAFE, ALLOWED, NEVER = "safe", "allowed", "never"


@dataclass(frozen=True)
class Rule:
    pattern: str  # a dotted key, ``*`` matching any part
    verdict: str  # SAFE, ALLOWED or NEVER
    why: str


# Keys whose new value goes into the optimizer's parameter groups after its state is
# loaded (load_state_dict would otherwise put the checkpoint's values back).
OPTIMIZER_HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "momentum",
                             "implementation")

RULES: tuple[Rule, ...] = (
    Rule("recipe.*", SAFE, "a description"),
    Rule("pins.*", SAFE, "the pin check compares pins with the installed components"),
    Rule("trainer.max_steps", SAFE, "where the run ends"),
    *(Rule(f"trainer.{key}", SAFE, "how the run is watched, saved or stopped")
      for key in ("log_every", "eval_every", "checkpoint_every", "keep_last",
                  "async_checkpoint", "loggers", "evaluators",
                  "sample_prompt", "sample_tokens", "checkpoint_on_interrupt",
                  "on_nonfinite", "prefetch", "profile", "memory_snapshot_on_oom")),
    Rule("trainer.profile.*", SAFE, "which steps are profiled (runner/profiling.py)"),
    *(Rule(f"trainer.{key}", SAFE, "how the same step is computed")
      for key in ("compile", "activation_checkpointing")),
    Rule("trainer.parallel.*", SAFE, "how the same step is sharded (DCP reshards the "
         "checkpoint onto the new mesh)"),
    Rule("scheduler.type_hint", NEVER, "the checkpoint's scheduler state belongs to the old "
         "scheduler"),
    Rule("scheduler.*", SAFE, "the new schedule applies from the resumed step (with a "
         "warning giving the learning rate before and after)"),
    *(Rule(f"optimizer.config.{key}", ALLOWED, "the checkpoint's optimizer state carries "
           "the old value") for key in OPTIMIZER_HYPERPARAMETERS),
    Rule("optimizer.*", NEVER, "the checkpoint's optimizer state belongs to the old optimizer"),
    Rule("trainer.grad_clip", ALLOWED, "the updates change from the resumed step"),
    Rule("trainer.param_dtype", ALLOWED, "the numerics change from the resumed step"),
    Rule("trainer.reduce_dtype", ALLOWED, "the numerics change from the resumed step"),
    Rule("loss.*", ALLOWED, "the objective changes from the resumed step"),
    Rule("eval_dataset.*", ALLOWED, "eval losses before and after are not comparable"),
    Rule("trainer.eval_batches", ALLOWED, "eval losses before and after are not comparable"),
    Rule("model.*", NEVER, "the checkpoint's weights belong to the old model"),
    Rule("tokenizer.*", NEVER, "the trained embeddings belong to the old token ids"),
    Rule("train_dataset.*", NEVER, "the checkpoint's data position belongs to the old data"),
    *(Rule(f"trainer.{key}", NEVER, "the checkpoint's data position and batches belong to "
           "the old batch shape") for key in ("seq_len", "micro_batch_size",
                                               "grad_accumulation")),
    Rule("trainer.seed", NEVER, "the random states come from the checkpoint, so a new seed "
         "would not take effect"),
    Rule("*", NEVER, "not known to be safe to change on resume"),
)


def rule_for(key: str) -> Rule:
    """The first rule whose pattern matches ``key`` (the last rule matches everything);
    a key inside a list (``trainer.loggers[0].type_hint``) by the list's key."""
    parts = _list_key(key).split(".")
    for rule in RULES:
        pattern = rule.pattern.split(".")
        if pattern == ["*"] or (
            len(pattern) <= len(parts)
            and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern, strict=False))
            and (len(pattern) == len(parts) or pattern[-1] == "*")
        ):
            return rule
    raise AssertionError("RULES ends with a catch-all")


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


_UNSET = object()


def _show(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    return json.dumps(value, separators=(", ", ": ")) if not isinstance(value, str) else value


def diff(old: Any, new: Any, key: str = "") -> list[Change]:
    """Every difference, at the deepest key where the two still have the same shape:
    mappings key by key (one only one side has, leaf by leaf), lists of both sides item
    by item (an item only one side has is one change, the item whole), anything else
    as a whole."""
    if isinstance(old, Mapping) or isinstance(new, Mapping):
        if (isinstance(old, Mapping) or old is _UNSET) and (isinstance(new, Mapping)
                                                           or new is _UNSET):
            before = old if isinstance(old, Mapping) else {}
            after = new if isinstance(new, Mapping) else {}
            changes = []
            for name in sorted(set(before) | set(after), key=str):
                changes += diff(before.get(name, _UNSET), after.get(name, _UNSET),
                                f"{key}.{name}" if key else str(name))
            return changes
    elif isinstance(old, list) and isinstance(new, list):
        changes = []
        for i in range(min(len(old), len(new))):
            changes += diff(old[i], new[i], f"{key}[{i}]")
        for i in range(len(new), len(old)):
            changes.append(Change(f"{key}[{i}]", old[i], _UNSET))
        for i in range(len(old), len(new)):
            changes.append(Change(f"{key}[{i}]", _UNSET, new[i]))
        return changes
    return [Change(key, old, new)] if old != new else []


def _list_key(key: str) -> str:
    """``a.b[1].c`` -> ``a.b``: the key of the outermost list a key is inside."""
    return key.split("[", 1)[0]


def _named(key: str, allowed: Sequence[str]) -> bool:
    """``--allow-change optimizer.config`` names every key under it (list items too:
    ``optimizer.config.betas`` names ``optimizer.config.betas[1]``)."""
    return any(key == a or key.startswith((a.rstrip(".") + ".", a + "[")) for a in allowed)


def _check_allowed_names(allow_changes: Sequence[str], changes: Sequence[Change],
                         old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """``--allow-change NAME`` naming no changed key and no key of either recipe is a typo
    (``optimizer.config.lrr``), which would otherwise be ignored without a word."""
    if not allow_changes:
        return
    from llm_gym.config.loading import walk_paths

    keys = list(dict.fromkeys(key for data in (old, new)
                              for key, _ in walk_paths(data) if key))
    unknown = [name for name in allow_changes
               if not any(_named(c.key, [name]) for c in changes)
               and not any(_named(key, [name]) for key in keys)]
    if unknown:
        from llm_gym.registry.kinds import closest_name

        problems = []
        for name in unknown:
            closest = closest_name(name, keys)
            hint = f"; did you mean {closest!r}?" if closest else ""
            problems.append(f"--allow-change {name}: no key of the recipe is named so{hint}")
        raise UserError("--allow-change names a key the recipe does not have; nothing was "
                        "written", problems)


@dataclass(frozen=True)
class ResumePlan:
    """What a run starting at ``step`` does with the recipe it was given."""

    step: int = 0
    checkpoint: Path | None = None
    checkpoint_recipe: Path | None = None  # the resolved recipe that wrote the checkpoint
    applied: tuple[Change, ...] = ()  # safe changes, and allowed ones named by the user
    nothing_left: bool = False
    max_steps: int = 0

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None

    def changed(self, prefix: str) -> list[Change]:
        return [c for c in self.applied if _named(c.key, [prefix])]


@dataclass
class _Verdicts:
    applied: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_resume(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    step: int,
    checkpoint: Path,
    checkpoint_recipe: Path,
    allow_changes: Sequence[str] = (),
) -> ResumePlan:
    """Compare the recipe that wrote ``checkpoint`` (``old``) with this run's (``new``);
    raise one UserError listing every change that cannot be applied."""
    verdicts = _Verdicts()
    changes = diff(old, new)
    _check_allowed_names(allow_changes, changes, old, new)
    for change in changes:
        rule = rule_for(change.key)
        if rule.verdict == SAFE or (rule.verdict == ALLOWED and _named(change.key,
                                                                       allow_changes)):
            verdicts.applied.append(change)
        elif rule.verdict == ALLOWED:
            verdicts.problems.append(
                f"{change} ({rule.why}; not applied unless asked: pass --allow-change "
                f"{change.key} to train with the new value from step {step + 1})")
        else:
            verdicts.problems.append(
                f"{change} ({rule.why}: cannot be changed on resume, even with "
                "--allow-change)")
    max_steps = int((new.get("trainer") or {}).get("max_steps", 0))
    if max_steps < step:
        verdicts.problems.append(
            f"trainer.max_steps={max_steps} is below the checkpoint's step {step}: nothing "
            f"would be trained; pass trainer.max_steps greater than {step} to continue")
    if verdicts.problems:
        count = len(verdicts.problems)
        raise UserError(
            f"resuming from {checkpoint} would change the run it continues (the recipe "
            f"that wrote it: {checkpoint_recipe}); {count} "
            f"{'change' if count == 1 else 'changes'} refused, nothing was written. Resume "
            "with the recipe and overrides the run used, or start a new --run-dir",
            verdicts.problems)
    return ResumePlan(step=step, checkpoint=checkpoint, checkpoint_recipe=checkpoint_recipe,
                      applied=tuple(verdicts.applied), nothing_left=max_steps == step,
                      max_steps=max_steps)
