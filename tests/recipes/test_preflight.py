"""``recipe validate`` reports what ``recipe run`` would refuse, without training: data files
missing or of the wrong kind, a vocabulary or sequence length the model cannot hold,
evaluation without an eval dataset. All problems at once, with YAML paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym.data.packed import PackedWriter
from llm_gym.recipes.loading import load_recipe
from llm_gym.recipes.preflight import check_recipe, tokenizer_vocab_size
from llm_gym.registry import ComponentConfig, ResolverRegistry, component, hookimpl
from tests.conftest import REPO

DEBUG = REPO / "recipes" / "gpt2-debug" / "v1.yaml"
DEMO_DATA = """train_dataset:
  type_hint: DemoCorpus
  config: {split: train, val_fraction: 0.1, corpus_mb: 0.5}

eval_dataset:
  type_hint: DemoCorpus
  config: {split: val, val_fraction: 0.1, corpus_mb: 0.5}
"""
PACKED_DATA = """train_dataset:
  type_hint: PackedTokens
  config: {path: "${oc.env:PACK}", split: train, val_fraction: 0.1}

eval_dataset:
  type_hint: PackedTokens
  config: {path: "${oc.env:PACK}", split: val, val_fraction: 0.1}
"""


def _validate(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "validate", *args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.fixture
def packed_recipe(tmp_path: Path) -> Path:
    """gpt2-debug training on the pack at $PACK, unpinned (validated with --allow-drift)."""
    text = DEBUG.read_text()
    assert DEMO_DATA in text
    path = tmp_path / "packed.yaml"
    path.write_text(text.replace(DEMO_DATA, PACKED_DATA).split("\n# Written by")[0])
    return path


def _pack(prefix: Path, n_tokens: int, vocab_size: int = 257) -> Path:
    with PackedWriter(prefix, vocab_size=vocab_size, eod_id=vocab_size - 1,
                      fingerprint="test") as writer:
        writer.add_document([i % (vocab_size - 1) for i in range(n_tokens)])
    return prefix


PREFLIGHT_CASES = {
    "vocabulary below the tokenizer's": (
        ["model.config.vocab_size=100"],
        ["model.config.vocab_size: 100, below the tokenizer's 257 ids",
         "model.config.vocab_size=257"]),
    "sequence longer than the positions": (
        ["model.config.n_positions=16"],
        ["model.config.n_positions: 16, shorter than trainer.seq_len (32)",
         "trainer.seq_len=16"]),
    "evaluation without an eval dataset": (
        ["eval_dataset=null"],
        ["trainer.eval_every: 4, but the recipe has no eval_dataset",
         "trainer.eval_every=null"]),
    "interpolated sequence length": (  # n_positions is ${trainer.seq_len}: no problem
        ["trainer.seq_len=64"], None),
}


@pytest.mark.parametrize("case", sorted(PREFLIGHT_CASES))
def test_validate_refuses_what_run_would(capsys, case):
    overrides, expected = PREFLIGHT_CASES[case]
    code, output = _validate(capsys, "gpt2-debug", *overrides)
    if expected is None:
        assert code == 0, output
        return
    assert code == 2 and "found before training" in output and "Traceback" not in output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from:\n{output}"


def test_all_problems_are_reported_at_once(capsys):
    code, output = _validate(capsys, "gpt2-debug", "model.config.vocab_size=100",
                             "model.config.n_positions=16", "eval_dataset=null")
    assert code == 2 and "3 problems found before training" in output


def test_a_missing_pack_is_named_with_how_to_make_it(capsys, packed_recipe, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv("PACK", str(tmp_path / "nope"))
    code, output = _validate(capsys, str(packed_recipe), "--allow-drift")
    assert code == 2
    assert f"train_dataset.config.path: {tmp_path}/nope.bin: packed token file not found" \
        in output
    assert "llm_gym tools pack" in output and "environment variable PACK" in output
    assert f"eval_dataset.config.path: {tmp_path}/nope.bin" in output


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: str(_pack(d / "c", 400)) + ".bin", "prefix, without .bin/.idx"),
        (lambda d: str(d), "is a directory: path is the PREFIX"),
        (lambda d: (os.mkfifo(d / "f.bin"), str(d / "f"))[1], "f.bin is not a regular file"),
        (lambda d: ((d / "h.bin").write_bytes(b"x" * 10), str(d / "h"))[1],
         "truncated header"),
        (lambda d: (_pack(d / "p", 400), (d / "p.idx").unlink(), str(d / "p"))[2],
         "p.idx: packed token file not found"),
        (lambda d: str(_pack(d / "short", 20)), "has no block of trainer.seq_len + 1 = 33"),
        (lambda d: str(_pack(d / "wide", 400, vocab_size=1000)),
         "packed with a 1000-id tokenizer, more than model.config.vocab_size (257)"),
    ],
    ids=["suffix", "directory", "fifo", "bad header", "no idx", "too short", "wider vocab"],
)
def test_a_pack_that_run_would_refuse(capsys, packed_recipe, tmp_path, monkeypatch, make,
                                      expected):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("PACK", make(data))
    code, output = _validate(capsys, str(packed_recipe), "--allow-drift")
    assert code == 2 and expected in output, output
    assert "Traceback" not in output


def test_a_good_pack_validates(capsys, packed_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("PACK", str(_pack(tmp_path / "corpus", 400)))
    code, output = _validate(capsys, str(packed_recipe), "--allow-drift")
    assert code == 0, output


def test_demo_data_not_built_yet_is_not_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_GYM_DEMO_CACHE", str(tmp_path / "empty-cache"))
    code, output = _validate(capsys, "gpt2-tiny")
    assert code == 0, output
    assert not any((tmp_path / "empty-cache").glob("*.bin"))  # validate built nothing


def test_load_recipe_runs_the_checks_only_when_asked():
    broken = ["model.config.vocab_size=100"]
    assert load_recipe("gpt2-debug", broken).recipe.model.config.vocab_size == 100
    with pytest.raises(Exception, match="found before training"):
        load_recipe("gpt2-debug", broken, preflight=True)


def test_the_tokenizer_declares_its_vocabulary_without_being_built():
    registry = ResolverRegistry.from_installed_plugins()
    byte_level = registry.spec("tokenizer", "ByteLevel").config_cls()
    demo = registry.spec("tokenizer", "DemoBPE").config_cls(vocab_size=1024)
    assert tokenizer_vocab_size(byte_level) == 257  # the class's fixed vocabulary
    assert tokenizer_vocab_size(demo) == 1024  # its config field
    assert tokenizer_vocab_size(None) is None


@component("widget", "Checked", version=1)
class CheckedWidgetConfig(ComponentConfig):
    """A plugin's component with its own preflight check, given the trainer section."""

    limit: int = 10

    def preflight(self, trainer, tokenizer=None):  # noqa: ANN001, ANN201
        if trainer.max_steps > self.limit:
            yield f"limit: {self.limit} is below trainer.max_steps ({trainer.max_steps})"

    def build(self) -> object:
        return object()


class WidgetPlugin:
    @hookimpl
    def llm_gym_components(self) -> list[type]:
        return [CheckedWidgetConfig]

    @hookimpl
    def llm_gym_recipe_checks(self):  # noqa: ANN201
        return [lambda recipe: ["widget: the plugin's own cross-slot check ran"]]


def test_a_plugin_declares_its_own_checks_with_injected_dependencies():
    registry = ResolverRegistry.from_installed_plugins()
    registry.register_plugin(WidgetPlugin(), name="widget-plugin")
    loaded = load_recipe("gpt2-debug", ["widget=Checked"], registry=registry,
                         allow_drift=True)
    problems = check_recipe(loaded.recipe, registry)
    assert "widget.config.limit: 10 is below trainer.max_steps (8)" not in problems
    loaded = load_recipe("gpt2-debug", ["widget=Checked", "trainer.max_steps=20"],
                         registry=registry, allow_drift=True)
    problems = check_recipe(loaded.recipe, registry)
    assert "widget.config.limit: 10 is below trainer.max_steps (20)" in problems
    assert "widget: the plugin's own cross-slot check ran" in problems


def test_a_documents_file_must_be_a_regular_file(tmp_path):
    config_cls = ResolverRegistry.from_installed_plugins().spec("documents", "JSONL").config_cls
    assert list(config_cls(path=str(tmp_path / "none.jsonl")).preflight()) == [
        f"path: {tmp_path}/none.jsonl does not exist"]
    assert "is not a regular file" in list(config_cls(path=str(tmp_path)).preflight())[0]
    (tmp_path / "docs.jsonl").write_text('{"text": "x"}\n')
    assert list(config_cls(path=str(tmp_path / "docs.jsonl")).preflight()) == []


def test_run_refuses_what_validate_refuses_before_making_a_run_dir(tmp_path):
    from llm_gym.errors import UserError
    from llm_gym.runner.entry import run_recipe

    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match="vocab_size"):
        run_recipe("gpt2-debug", ["model.config.vocab_size=100"], run_dir=run_dir)
    assert not run_dir.exists()
