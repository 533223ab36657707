"""A weighted mixture of datasets as the runner's dataset (the logic: llm_gym.data.mixture)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from llm_gym.data.mixture import CHUNK, MixtureDataset, plural, starved, starved_reason
from llm_gym.registry import Component, ComponentConfig, component, problems_at

Dataset = Component["dataset"]  # an alias: linters would read "dataset" as a type
Weight = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_NAMED_UP_TO = 8  # weights named one by one; past that, counted


@component("dataset", "Mixture", version=1)
class MixtureConfig(ComponentConfig):
    """Samples drawn from several datasets in proportions of tokens, the same for any
    world size; its position, saved in checkpoints, resumes exactly."""

    sources: list[Dataset] = Field(
        min_length=1, description="the datasets to mix; each must number its samples "
        "globally (PackedTokens, DemoCorpus), and none may be a Mixture")
    weights: list[Weight] = Field(
        min_length=1, description="share of the tokens from each source, one per source, "
        "in their order; normalised, so [3, 1] means 75% and 25%")
    seed: int | None = Field(None, ge=0, description="orders the sources' samples; "
                             "default: trainer.seed")
    on_exhausted: Literal["cycle", "stop"] = Field(
        "cycle", description="when a source has given every sample of an epoch: cycle "
        "(it starts its next epoch, reshuffled) or stop (the run ends there)")
    document_boundaries: bool = Field(
        False, description="hand the model, with each block, the index of every input "
        "token's document, each source's from its own pack's document index")

    @field_validator("weights")
    @classmethod
    def _one_weight_per_source(cls, weights: list[float], info: ValidationInfo) -> list[float]:
        sources = info.data.get("sources")  # absent when the sources were refused
        if sources is not None and len(weights) != len(sources):
            raise ValueError(f"{plural(len(weights), 'weight')} given for "
                             f"{plural(len(sources), 'source')}; give one weight per "
                             "source, in the order of sources")
        # What MixtureDataset would refuse when built, refused here at each weight's path.
        if len(weights) > CHUNK:
            raise ValueError(starved_reason(weights))
        too_small = starved(weights)
        if too_small:
            reason = f"would get no sample: {starved_reason(weights)}"
            named = [((i,), reason, weights[i]) for i in too_small[:_NAMED_UP_TO]]
            if len(too_small) > _NAMED_UP_TO:
                named.append(((), f"{len(too_small) - _NAMED_UP_TO} more weights would get "
                              "no sample", weights))
            raise problems_at(named, cls.__name__)
        return weights

    def preflight(self) -> Iterator[str]:
        """Every source is a dataset that can be mixed, judged by the class its ``build``
        declares (one that declares none is checked when it is built)."""
        for i, choice in enumerate(self.sources):
            name = choice.type_hint.name
            if isinstance(choice.config, MixtureConfig):
                yield (f"sources[{i}]: a Mixture cannot be a source of another Mixture; "
                       "list its sources in this one, with their weights multiplied")
                continue
            built = _declared_class(choice.config)
            if built is not None and not _mixable(built):
                yield (f"sources[{i}]: {name} builds a {built.__name__}, which cannot be "
                       "mixed: a mixture source numbers its samples globally "
                       "(samples_per_epoch and sample_tokens, see llm_gym.data.indexed)")
            elif (self.document_boundaries and built is not None
                  and not hasattr(built, "sample_document_ids")):
                yield (f"sources[{i}]: {name} builds a {built.__name__}, which does not say "
                       "where its documents start (sample_document_ids, see "
                       "llm_gym.data.indexed): document_boundaries needs it of every source")
            elif self.document_boundaries:
                # A source checks its document index itself only when its own flag is on.
                problems = getattr(choice.config, "document_boundary_problems", None)
                for line in problems() if problems is not None else ():
                    yield f"sources[{i}].config.{line}"
            if (not self.document_boundaries
                    and getattr(choice.config, "document_boundaries", False) is True):
                # The mixture reads its sources by global sample, never their batches: a
                # source's own flag would be ignored without a word.
                yield (f"sources[{i}].config.document_boundaries: the mixture hands its "
                       "sources' boundaries on only when it is told to: set "
                       "document_boundaries: true on the Mixture")

    def build(self, world: Any, trainer: Any, sources: list[Any]) -> MixtureDataset:
        labels = [source_label(i, choice) for i, choice in enumerate(self.sources)]
        return MixtureDataset(
            sources, self.weights, labels=labels,
            seed=trainer.seed if self.seed is None else self.seed,
            on_exhausted=self.on_exhausted, rank=world.rank, world_size=world.world_size,
            document_boundaries=self.document_boundaries,
        )


def source_label(index: int, choice: Any) -> str:
    """``0:PackedTokens:data/web``: the key of a source's tokens in the metrics."""
    config = choice.config
    where = next((str(getattr(config, f)) for f in ("path", "part")
                  if isinstance(getattr(config, f, None), str)), None)
    return ":".join([str(index), choice.type_hint.name, *([where] if where else [])])


def _declared_class(config: Any) -> type | None:
    try:
        built = typing.get_type_hints(type(config).build).get("return")
    except Exception:  # an annotation that does not resolve declares nothing
        return None
    return built if isinstance(built, type) else None


def _mixable(cls: type) -> bool:
    return all(hasattr(cls, name) for name in ("samples_per_epoch", "sample_tokens"))
