"""dataset/Mixture in a recipe: bad weights and sources are refused by ``recipe validate``
with their YAML paths and exit code 2; a built mixture labels its sources."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from llm_gym.cli.main import main
from llm_gym.config.validation_errors import describe_errors
from llm_gym.data.mixture import CHUNK
from llm_gym.data.packed import PackedWriter
from llm_gym.registry import ResolverRegistry
from llm_gym_components.datasets.mixture import MixtureConfig, source_label

RECIPE = """\
recipe: {{description: a mixture to validate}}
trainer: {{max_steps: 2, seq_len: 16, micro_batch_size: 2, seed: 0, loggers: []}}
model:
  type_hint: GPT2
  config: {{vocab_size: 257, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2}}
tokenizer: ByteLevel
train_dataset:
  type_hint: Mixture
  config:
    weights: {weights}
    sources:
      - {{type_hint: PackedTokens, config: {{path: "{pack}"}}}}
      - {second}
loss: CrossEntropy
optimizer: {{type_hint: AdamW, config: {{lr: 1.0e-3}}}}
"""


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp("mixcfg") / "p"
    with PackedWriter(prefix, vocab_size=257, eod_id=256, fingerprint="c" * 64) as w:
        w.add_documents(np.arange(1000, dtype=np.int64) % 256, np.array([1000]))
    return prefix


def _validate(capsys, tmp_path: Path, pack: Path, *, weights: str = "[3, 1]",
              second: str | None = None) -> tuple[int, str]:
    second = second or f'{{type_hint: PackedTokens, config: {{path: "{pack}"}}}}'
    path = tmp_path / "mix.yaml"
    path.write_text(RECIPE.format(weights=weights, pack=pack, second=second))
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "validate", str(path), "--allow-drift"])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.mark.parametrize(("weights", "expected"), [
    ("[3, -1]", "train_dataset.config.weights[1]: input should be greater than 0"),
    ("[3, 0]", "train_dataset.config.weights[1]: input should be greater than 0"),
    ("[3, .nan]", "train_dataset.config.weights[1]"),
    ("[3]", "train_dataset.config.weights: 1 weight given for 2 sources; "),
    ("[3, 1, 1]", "train_dataset.config.weights: 3 weights given for 2 sources; "),
    # What MixtureDataset refuses when built is refused by `validate`, at the weight's path.
    ("[1.0e-9, 1]", "train_dataset.config.weights[0]: would get no sample: a weight must "
                    "be at least 1/4096 of their sum"),
    ("[1, 1.0e-9]", "train_dataset.config.weights[1]: would get no sample"),
])
def test_bad_weights_are_named_by_their_yaml_path(capsys, tmp_path, pack, weights,
                                                  expected) -> None:
    code, out = _validate(capsys, tmp_path, pack, weights=weights)
    assert code == 2 and expected in out and "Traceback" not in out


@pytest.mark.parametrize("weights", ["[3, 1]", "[1.0e308, 1.0e308]"])  # a sum past floats
def test_a_good_mixture_validates(capsys, tmp_path, pack, weights) -> None:
    code, out = _validate(capsys, tmp_path, pack, weights=weights)
    assert code == 0, out


@pytest.mark.parametrize(("n_sources", "weights", "expected"), [
    (1, [1, 1], ["config.weights: 2 weights given for 1 source; give one"]),
    (CHUNK + 1, [1] * (CHUNK + 1),
     ["config.weights: a mixture gives each source a share of every 4096 "
      "samples, so it mixes at most 4096 sources, not 4097"]),
    (3, [1e-9, 1, 1e-9], ["config.weights[0]: would get no sample",
                          "config.weights[2]: would get no sample"]),
    (12, [1e-9] * 11 + [1], [f"config.weights[{i}]: would get no sample" for i in range(8)]
     + ["config.weights: 3 more weights would get no sample"]),
])
def test_weights_the_mixture_would_refuse_are_refused_by_the_config(n_sources, weights,
                                                                    expected) -> None:
    registry = ResolverRegistry.from_installed_plugins()
    data = {"type_hint": "Mixture", "config": {"weights": weights,
                                               "sources": ["DemoCorpus"] * n_sources}}
    with registry.active(), pytest.raises(ValidationError) as caught:
        registry.kind("dataset").adapter.validate_python(data)
    lines = describe_errors(caught.value, data)
    assert len(lines) == len(expected)
    assert all(line.startswith(fragment) for line, fragment in zip(lines, expected,
                                                                    strict=True)), lines


@pytest.mark.parametrize(("second", "expected"), [
    # A Mixture inside a Mixture: refused before anything is built.
    ('{type_hint: Mixture, config: {weights: [1], sources: [{type_hint: PackedTokens, '
     'config: {path: "PACK"}}]}}',
     "train_dataset.config.sources[1]: a Mixture cannot be a source of another Mixture"),
    # A nested source's own checks run at its own path.
    ('{type_hint: PackedTokens, config: {path: "PACK-missing"}}',
     "train_dataset.config.sources[1].config.path: "),
    # Not a dataset at all: the registry's own error, at the nested path.
    ("{type_hint: JSONL, config: {path: x.jsonl}}", "train_dataset.config.sources[1]"),
])
def test_bad_sources_are_named_by_their_yaml_path(capsys, tmp_path, pack, second,
                                                  expected) -> None:
    code, out = _validate(capsys, tmp_path, pack, second=second.replace("PACK", str(pack)))
    assert code == 2 and expected in out and "Traceback" not in out


class Unmixable:
    """A dataset class without global sample access."""

    def next_batch(self, batch_size: int) -> None: ...


class UnmixableConfig:
    def build(self) -> Unmixable: ...


class UndeclaredConfig:
    def build(self):  # noqa: ANN201 -- declares nothing: checked when built
        ...


def test_preflight_refuses_a_source_whose_build_declares_an_unmixable_class() -> None:
    def choice(config: object) -> SimpleNamespace:
        return SimpleNamespace(type_hint=SimpleNamespace(name="Custom"), config=config)

    mixture = SimpleNamespace(sources=[choice(UndeclaredConfig()), choice(UnmixableConfig())],
                              document_boundaries=False)
    problems = list(MixtureConfig.preflight(mixture))
    assert problems == [
        "sources[1]: Custom builds a Unmixable, which cannot be mixed: a mixture source "
        "numbers its samples globally (samples_per_epoch and sample_tokens, see "
        "llm_gym.data.indexed)"
    ]


def test_source_labels_name_the_index_type_and_path_or_part() -> None:
    def choice(name: str, **config: object) -> SimpleNamespace:
        return SimpleNamespace(type_hint=SimpleNamespace(name=name),
                               config=SimpleNamespace(**config))

    assert source_label(0, choice("PackedTokens", path="data/web")) == "0:PackedTokens:data/web"
    assert source_label(1, choice("DemoCorpus", part="stdlib")) == "1:DemoCorpus:stdlib"
    assert source_label(2, choice("Custom")) == "2:Custom"


def test_an_error_building_a_source_is_named_at_its_yaml_path(tmp_path, pack) -> None:
    from llm_gym.errors import UserError
    from llm_gym.recipes.loading import load_recipe
    from llm_gym_components.tokenizers import ByteLevelTokenizer

    path = tmp_path / "mix.yaml"
    second = f'{{type_hint: PackedTokens, config: {{path: "{pack}"}}}}'
    path.write_text(RECIPE.format(weights="[3, 1]", pack=pack, second=second))
    registry = ResolverRegistry.from_installed_plugins()
    recipe = load_recipe(str(path), registry=registry, allow_drift=True).recipe
    given = {"world": SimpleNamespace(rank=0, world_size=1),
             "trainer": SimpleNamespace(seq_len=16, seed=0),
             "tokenizer": ByteLevelTokenizer()}  # not the tokenizer the pack was made with
    with pytest.raises(UserError, match=r"^train_dataset\.config\.sources\[0\]: .*p\.bin: "
                                        "packed with tokenizer fingerprint"):
        registry.build_components({"train_dataset": recipe.train_dataset}, given)
