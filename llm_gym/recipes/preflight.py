"""What ``recipe run`` would refuse, found before training: every component's own static
checks (``ComponentConfig.preflight``) and the plugins' cross-slot checks
(``llm_gym_recipe_checks``; the runner's are in ``core_plugin``).

``load_recipe`` runs them, so ``validate``, ``run`` (before a run directory exists),
``plan`` and ``show`` all report the same problems, all at once, with YAML paths. The
checks stat files and read headers; they never build a component or read a corpus, so
data that a component prepares on first use (the demo corpus) is not refused.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from llm_gym.errors import UserError
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.component import spec_of
from llm_gym.registry.nesting import iter_choices


def check_recipe(recipe: Any, registry: ResolverRegistry) -> list[str]:
    """Every problem the preflight checks find, as ``"yaml.path: message"`` lines."""
    slots = recipe.components()
    available: dict[str, Any] = {slot: choice.config for slot, choice in slots.items()}
    for section in registry.sections():
        available.setdefault(section, getattr(recipe, section, None))
    problems: list[str] = []
    # Every component at any depth: slots, those nested in them, those a section holds.
    for path, choice in iter_choices(recipe, ""):
        slot = path.split(".")[0].split("[")[0]
        spec = spec_of(choice.type_hint.value)
        given = {k: v for k, v in available.items() if k != slot and v is not None}
        wanted = spec.preflight_dependencies
        if any(d.required and d.name not in given for d in wanted):
            continue  # build_order names the missing dependency; nothing to check against
        kwargs = {d.name: given[d.name] for d in wanted if d.name in given}
        try:
            found = list(choice.config.preflight(**kwargs))
        except UserError as exc:  # a check may raise instead of yielding
            found = [exc.message]
        problems += [f"{path}.config.{line}" for line in found]
    for _, check in registry.recipe_checks():
        problems += list(check(recipe))
    return problems


def embedding_covers_tokenizer(vocab_size: int, tokenizer_config: Any) -> Iterator[str]:
    """A model config's check that its ``vocab_size`` embeds every id the tokenizer
    declares (see ``tokenizer_vocab_size``); one ``"vocab_size: ..."`` problem, or none."""
    vocab = tokenizer_vocab_size(tokenizer_config)
    if vocab is not None and vocab_size < vocab:
        yield (f"vocab_size: {vocab_size}, below the tokenizer's {vocab} ids: token ids"
               f" {vocab_size}..{vocab - 1} would index past the embedding; set "
               f"model.config.vocab_size={vocab} (or more)")


def tokenizer_vocab_size(tokenizer_config: Any) -> int | None:
    """The vocabulary size a tokenizer config declares without being built, if any.

    A tokenizer config declares it as a ``vocab_size`` attribute (a field, a ClassVar or a
    property that reads a file's header); failing that, a tokenizer class with a fixed
    vocabulary (``ByteLevelTokenizer.vocab_size = 257``) declares it on the class that
    ``build`` is annotated to return. None: unknown until built, so not checked.
    """
    if tokenizer_config is None:
        return None
    declared = getattr(tokenizer_config, "vocab_size", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    try:
        built = typing.get_type_hints(type(tokenizer_config).build).get("return")
    except Exception:  # an annotation that does not resolve: nothing declared
        return None
    fixed = getattr(built, "vocab_size", None) if isinstance(built, type) else None
    return fixed if isinstance(fixed, int) and not isinstance(fixed, bool) else None


def document_mask_matches_datasets(attention_mask: str, train_dataset: Any,
                                   eval_dataset: Any) -> Iterator[str]:
    """A model's ``attention_mask: document`` needs ``document_boundaries`` on the datasets
    it trains and is validated on, and boundaries need a model that uses them (a dataset
    component offers them through its ``document_boundaries`` field)."""
    for slot, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
        if dataset is None:
            continue
        given = bool(getattr(dataset, "document_boundaries", False))
        if attention_mask == "document" and not given:
            yield (f"attention_mask: document needs the document boundaries from "
                   f"{slot}, which does not hand them over: set "
                   f"{slot}.config.document_boundaries=true")
        elif attention_mask == "causal" and given:
            yield (f"attention_mask: causal, but {slot}.config.document_boundaries is true: "
                   "the boundaries would go unused; set model.config.attention_mask="
                   f"document, or {slot}.config.document_boundaries=false")
