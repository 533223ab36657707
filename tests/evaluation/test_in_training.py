"""gpt2-debug trains with a MultipleChoice and a TextPerplexity evaluator: their records
are in metrics.jsonl and the plot, and MultipleChoice's choices are those of a direct,
unbatched computation with transformers on the run's Hugging Face export."""

from __future__ import annotations

import math

import pytest
import torch

from llm_gym.evaluation.multiple_choice import encode_examples, score_example
from llm_gym.evaluation.task_files import read_choice_examples
from tests.evaluation.conftest import EXAMPLES, cli
from tests.evaluation.task_data import evaluators_override, write_hellaswag, write_texts


def test_records_of_both_evaluators_at_their_steps(run) -> None:
    records = [r for r in run["records"] if "eval/hellaswag/acc" in r]
    assert [r["step"] for r in records] == [4, 8]
    for r in records:
        assert r["eval/hellaswag/examples"] == EXAMPLES
        assert r["eval/hellaswag/truncated"] == 2
        assert 0 <= r["eval/hellaswag/acc"] <= 1 and 0 <= r["eval/hellaswag/acc_norm"] <= 1
        assert r["eval/hellaswag/seconds"] > 0 and r["eval/text/seconds"] > 0
        # Byte-level: a token is a byte, so bits per byte is the loss in bits.
        assert r["eval/text/tokens"] == r["eval/text/bytes"]
        assert r["eval/text/bits_per_byte"] == pytest.approx(r["eval/text/loss"] / math.log(2))
        assert r["eval/text/perplexity"] == pytest.approx(math.exp(r["eval/text/loss"]))
    # trainer.eval_every's records are as they were, and the ValidationLoss evaluator
    # with the same batches gives the same numbers.
    legacy = [r for r in run["records"] if "eval_loss" in r]
    assert [sorted(r) for r in legacy] == [["eval_loss", "eval_perplexity", "step"]] * 2
    assert [(r["eval_loss"], r["eval_perplexity"]) for r in legacy] == [
        (r["eval/validation/loss"], r["eval/validation/perplexity"]) for r in records]


def test_the_plot_draws_a_panel_per_evaluator_metric(run, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from llm_gym.plotting import draw_curves, plot_runs, read_run

    curves = read_run(run["run_dir"])
    assert list(curves.evaluators) == ["eval/hellaswag/acc", "eval/hellaswag/acc_norm",
                                       "eval/text/loss", "eval/text/perplexity",
                                       "eval/text/bits_per_byte", "eval/validation/loss",
                                       "eval/validation/perplexity"]
    assert curves.evaluators["eval/hellaswag/acc"][0] == [4, 8]
    titles = [ax.get_title() for ax in draw_curves([curves]).axes if ax.get_visible()]
    assert "hellaswag/acc_norm vs steps" in titles and "text/bits_per_byte vs steps" in titles
    assert plot_runs([run["run_dir"]], tmp_path / "curves.png").stat().st_size > 0


def test_choices_agree_with_transformers_on_the_export(run, tmp_path) -> None:
    """Per example, the choice (and the choice per byte) that a plain loop over
    transformers' GPT2LMHeadModel picks, one unpadded sequence per choice."""
    transformers = pytest.importorskip("transformers")
    from llm_gym.hf.export import export_hf
    from llm_gym.runner.loading_model import load_run_model

    export_hf(run["run_dir"], tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    loaded = load_run_model(run["run_dir"])
    examples = read_choice_examples(run["hellaswag"])
    tok, max_len = loaded.tokenizer, hf.config.n_positions
    ours, theirs = [], []
    for example, encoded in zip(examples, encode_examples(examples, tok), strict=True):
        score = score_example(loaded.model, encoded, max_len, torch.device("cpu"))
        ours.append((score.predicted, score.predicted_norm))
        lls = []
        for choice in example.choices:
            context, continuation = tok.encode(example.context), tok.encode(" " + choice)
            full = (context + continuation)[-(max_len + 1):]
            with torch.no_grad():
                logp = hf(torch.tensor([full[:-1]])).logits[0].float().log_softmax(-1)
            start = len(full) - 1 - len(continuation)
            lls.append(sum(float(logp[start + j, t]) for j, t in enumerate(continuation)))
        per_byte = [ll / len(c.encode()) for ll, c in zip(lls, example.choices, strict=True)]
        theirs.append((lls.index(max(lls)), per_byte.index(max(per_byte))))
        assert score.logprobs == pytest.approx(lls, abs=1e-4)
    assert ours == theirs
    last = [r for r in run["records"] if r["step"] == 8 and "eval/hellaswag/acc" in r][0]
    answers = [e.answer for e in examples]
    assert last["eval/hellaswag/acc"] == sum(
        p == a for (p, _), a in zip(theirs, answers, strict=True)) / EXAMPLES
    assert last["eval/hellaswag/acc_norm"] == sum(
        p == a for (_, p), a in zip(theirs, answers, strict=True)) / EXAMPLES


def test_recipe_validate_names_a_bad_task_file_by_yaml_path_and_line(tmp_path, capsys) -> None:
    bad = write_hellaswag(tmp_path / "bad.jsonl", 3)
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1].replace('"label": ', '"labl": '),
                              "not json"]) + "\n")
    texts = write_texts(tmp_path / "texts.jsonl", 2)
    code, out = cli(capsys, "recipe", "validate", "gpt2-debug", evaluators_override(bad, texts))
    assert code == 2, out
    assert (f"trainer.evaluators[0].config.path: {bad}:2: missing field label "
            "(hellaswag format)") in out
    assert f"trainer.evaluators[0].config.path: {bad}:3: not a JSON object" in out
    assert "Traceback" not in out


def test_two_evaluators_of_one_name_or_one_without_a_tokenizer_are_refused(
        tmp_path, capsys) -> None:
    hs = write_hellaswag(tmp_path / "hs.jsonl", 2)
    texts = write_texts(tmp_path / "texts.jsonl", 2)
    same = evaluators_override(hs, texts).replace("config: {path", "config: {name: x, path")
    code, out = cli(capsys, "recipe", "validate", "gpt2-debug", same)
    assert code == 2 and "two evaluators are named 'x' ([0] and [1])" in out, out
    # A recipe whose other components need no tokenizer: the evaluators' check says why.
    from llm_gym.core_plugin import evaluators_ask_for_what_the_run_has
    from llm_gym.recipes.loading import load_recipe
    from llm_gym.registry import ResolverRegistry

    recipe = load_recipe("gpt2-debug", [evaluators_override(hs, texts)],
                         registry=ResolverRegistry.from_installed_plugins()).recipe

    class NoTokenizer:
        trainer = recipe.trainer

        def components(self) -> dict:
            return {k: v for k, v in recipe.components().items() if k != "tokenizer"}

    assert list(evaluators_ask_for_what_the_run_has(NoTokenizer())) == [
        f"trainer.evaluators[{i}]: evaluator/{name} needs the recipe's tokenizer, and the "
        "recipe has none: add a tokenizer entry"
        for i, name in enumerate(("MultipleChoice", "TextPerplexity"))]
