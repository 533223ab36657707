"""Export, import and generate on a real (tiny) run directory; no transformers needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from llm_gym.cli.main import cli
from llm_gym.errors import UserError
from llm_gym.hf.export import export_hf
from llm_gym.hf.importing import import_hf
from llm_gym.runner.generation import stream_text, stream_tokens
from llm_gym.runner.loading_model import load_run_model
from llm_gym_components.tokenizers import ByteLevelTokenizer
from tests.conftest import run_cli
from tests.hf.conftest import max_diff, random_ids


def test_run_dir_and_its_checkpoint_load_the_same_trained_model(debug_run: Path) -> None:
    run = load_run_model(debug_run)
    assert run.checkpoint == debug_run / "checkpoints" / "step_00000002"
    assert isinstance(run.tokenizer, ByteLevelTokenizer) and not run.model.training
    again = load_run_model(run.checkpoint, tokenizer=False)
    assert again.run_dir == debug_run and again.tokenizer is None
    for a, b in zip(run.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert run.model.lm_head.weight is run.model.transformer.wte.weight
    # Trained, not freshly initialised: the checkpoint's weights were read.
    fresh = run.registry.build_component_by_config(run.recipe.model)
    assert not torch.equal(fresh.transformer.wpe.weight, run.model.transformer.wpe.weight)


def test_what_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such directory"):
        load_run_model(tmp_path / "nope")
    with pytest.raises(UserError, match="neither a run directory"):
        load_run_model(tmp_path)
    (tmp_path / "recipe.resolved.yaml").write_text("trainer: {max_steps: 1}\n")
    with pytest.raises(UserError, match="problem"):
        load_run_model(tmp_path)


def test_export_import_round_trip_has_identical_logits(debug_run: Path, tmp_path: Path) -> None:
    result = export_hf(debug_run, tmp_path / "hf")
    assert result.files == ["config.json", "model.safetensors"]
    assert any("ByteLevel" in n and "no Hugging Face equivalent" in n for n in result.notes)
    (tmp_path / "hf" / "tokenizer.json").write_text("{}")  # not the export's
    with pytest.raises(UserError, match="is not empty.*--force"):
        export_hf(debug_run, tmp_path / "hf")
    again = export_hf(debug_run, tmp_path / "hf", force=True)
    assert again.files == result.files
    assert (tmp_path / "hf" / "tokenizer.json").read_text() == "{}"  # never deleted
    assert any("kept" in n and "tokenizer.json" in n for n in again.notes)
    (tmp_path / "hf" / "tokenizer.json").unlink()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["eos_token_id"] == config["bos_token_id"] == 256
    imported = import_hf(tmp_path / "hf", tmp_path / "run", base="gpt2-debug")
    assert any("no tokenizer files" in n for n in imported.notes)
    original, back = load_run_model(debug_run), load_run_model(tmp_path / "run")
    assert back.checkpoint is None and back.recipe.model.type_hint.name == "GPT2Pretrained"
    ids = random_ids(vocab_size=257, seq=32)
    with torch.no_grad():
        assert max_diff(original.model(ids), back.model(ids)) == 0.0
    with pytest.raises(UserError, match="already a run directory"):
        import_hf(tmp_path / "hf", tmp_path / "run", base="gpt2-debug")
    with pytest.raises(UserError, match=r"longest sequence \(32\)"):
        import_hf(tmp_path / "hf", tmp_path / "long", base="gpt2-debug",
                  overrides=["trainer.seq_len=64"])


def test_an_imported_run_trains_from_the_imported_weights(
    debug_run: Path, demo_cache: Path, tmp_path: Path, monkeypatch
) -> None:
    from llm_gym.runner.entry import run_recipe
    from llm_gym.runner.metrics import read_metrics

    monkeypatch.setenv("LLM_GYM_DEMO_CACHE", str(demo_cache))
    export_hf(debug_run, tmp_path / "hf")
    imported = import_hf(tmp_path / "hf", tmp_path / "run", base="gpt2-debug")
    run_recipe(str(imported.recipe_path), ["trainer.max_steps=1"], run_dir=tmp_path / "run")
    scratch = tmp_path / "scratch"
    run_recipe("gpt2-debug", ["trainer.max_steps=1"], run_dir=scratch)
    loss = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    fresh = [r["loss"] for r in read_metrics(scratch / "metrics.jsonl") if "loss" in r]
    assert loss[0] < fresh[0]  # it started from the trained weights, not from scratch
    assert load_run_model(tmp_path / "run").checkpoint is not None


def test_streaming_draws_exactly_what_generate_draws(debug_run: Path) -> None:
    model = load_run_model(debug_run, tokenizer=False).model
    prompt = [ord(c) for c in "Return the"]
    for temperature, top_k in ((0.0, None), (1.0, None), (0.8, 5)):
        streamed = list(stream_tokens(model, prompt, 20, temperature=temperature, top_k=top_k,
                                      seed=7))
        generator = torch.Generator().manual_seed(7)
        whole = model.generate(torch.tensor([prompt]), 20, temperature=temperature,
                               top_k=top_k, generator=generator)
        assert streamed == whole[0, len(prompt):].tolist()


def test_stream_text_waits_for_whole_characters() -> None:
    tok = ByteLevelTokenizer()
    ids = list("é€ ok".encode())
    pieces = list(stream_text(tok, tok.encode("x"), ids))
    assert "".join(pieces) == "é€ ok"
    assert all("\ufffd" not in p for p in pieces) and len(pieces) == 5


def _generate(source: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["generate", str(source), "--prompt", "Return the",
                                      "--max-new-tokens", "24", *args], catch_exceptions=False)
    assert result.exit_code == 0
    return result.output


@pytest.mark.usefixtures("one_registry")
def test_generate_is_deterministic_and_greedy_at_temperature_zero(debug_run: Path) -> None:
    greedy = _generate(debug_run, "--temperature", "0")
    assert greedy == _generate(debug_run, "--temperature", "0", "--seed", "5")
    assert greedy.startswith("Return the") and greedy.endswith("\n")
    sampled = _generate(debug_run, "--seed", "1", "--top-k", "20")
    assert sampled == _generate(debug_run, "--seed", "1", "--top-k", "20")
    assert sampled != _generate(debug_run, "--seed", "2", "--top-k", "20")


def test_cli_errors_are_short(tmp_path: Path) -> None:
    result = run_cli("generate", str(tmp_path), "--prompt", "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "neither a run directory" in result.stderr


def test_a_run_carries_its_tokenizer_to_machines_without_its_source(
    tmp_path: Path, demo_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's tokenizer.json is gone afterwards (another machine, a cleaned cache):
    generate and export still rebuild the same tokenizer, from RUN_DIR/tokenizer/."""
    from llm_gym.data.tokenizer_training import train_bpe_tokenizer
    from llm_gym.runner.entry import run_recipe
    from llm_gym_components.tokenizers import HFJsonTokenizer

    monkeypatch.setenv("LLM_GYM_DEMO_CACHE", str(demo_cache))
    source = tmp_path / "elsewhere"
    source.mkdir()
    words = "the value of a function returns an object with its name and type".split()
    with open(source / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(200):
            f.write(json.dumps({"text": " ".join(words[i % 7:]) + f" {i}."}) + "\n")
    tokenizer_json = train_bpe_tokenizer(source / "corpus.jsonl", 300, source / "tok.json")
    original = HFJsonTokenizer(tokenizer_json)
    run_dir = tmp_path / "run"
    run_recipe("gpt2-debug", ["tokenizer.type_hint=HFJson",
                              f"tokenizer.config.path={tokenizer_json}",
                              "model.config.vocab_size=300", "trainer.max_steps=2",
                              "trainer.eval_every=null"], run_dir=run_dir)
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()
    tokenizer_json.unlink()

    carried = load_run_model(run_dir).tokenizer
    text = "the name of the object returns 12."
    assert carried.encode(text) == original.encode(text)
    assert carried.eod_id == original.eod_id and carried.vocab_size == original.vocab_size
    result = export_hf(run_dir, tmp_path / "export")
    assert "tokenizer.json" in result.files
    generated = run_cli("generate", str(run_dir), "--prompt", "the value",
                        "--max-new-tokens", "4", "--temperature", "0")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("the value")
