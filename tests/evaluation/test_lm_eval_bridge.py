"""The lm-evaluation-harness bridge against lm-eval's own ``hf`` backend on the run's
Hugging Face export, and against llm_gym's own evaluators: the same log-likelihood per
request (within 1e-4), the same acc/acc_norm, the same greedy generations, the same bits
per byte; and ``llm_gym eval --lm-eval`` writing its tasks beside ``--task``'s.

Needs the eval extra (lm-eval, and accelerate for the hf backend): ``nox -s eval``.
"""

from __future__ import annotations

import json
import math

import pytest

pytestmark = pytest.mark.lmeval
pytest.importorskip("lm_eval", reason="the eval extra is not installed (nox -s eval)")

from llm_gym.data.tokenizer_training import train_bpe_tokenizer  # noqa: E402
from llm_gym.evaluation.lm_eval_run import evaluate_lm_eval  # noqa: E402
from llm_gym.evaluation.multiple_choice import encode_examples, score_example  # noqa: E402
from llm_gym.evaluation.offline import evaluate_checkpoint  # noqa: E402
from llm_gym.evaluation.task_files import read_choice_examples  # noqa: E402
from llm_gym.hf.export import export_hf  # noqa: E402
from llm_gym.runner.entry import run_recipe  # noqa: E402
from llm_gym.runner.loading_model import load_run_model  # noqa: E402
from tests.evaluation.conftest import cli  # noqa: E402
from tests.evaluation.lm_eval_tasks import (  # noqa: E402
    CHOICE_TASK,
    EXAMPLES,
    GENERATE_TASK,
    ROLLING_TASK,
    TEXTS,
    write_tasks,
)
from tests.evaluation.task_data import WORDS  # noqa: E402

TASKS = [CHOICE_TASK, ROLLING_TASK, GENERATE_TASK]
TOLERANCE = 1e-4  # per request, fp32 on the CPU (measured: about 2e-6)
STEPS = 40


@pytest.fixture(scope="module")
def bridged(tmp_path_factory, demo_cache) -> dict:
    """A gpt2-debug run with a small BPE tokenizer (so a context and its continuation can
    merge across their boundary), its HF export, the tasks, and both backends' results."""
    import random

    root = tmp_path_factory.mktemp("lm-eval")
    rng = random.Random(0)
    with open(root / "corpus.jsonl", "w") as f:
        for _ in range(400):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(20))
                                + "."}) + "\n")
    tokenizer = train_bpe_tokenizer(root / "corpus.jsonl", 320, root / "tokenizer.json")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_GYM_DEMO_CACHE", str(demo_cache))
        run_recipe("gpt2-debug", [
            f"tokenizer={{type_hint: HFJson, config: {{path: '{tokenizer}'}}}}",
            "model.config.vocab_size=320", f"trainer.max_steps={STEPS}",
            "trainer.loggers=[]"], run_dir=root / "run")
    export_hf(root / "run", root / "hf")
    files = write_tasks(root)
    ours = evaluate_lm_eval(root / "run", TASKS, include_path=[files["tasks"]],
                            batch_size=4, log_samples=True)
    return {"root": root, "run": root / "run", "hf": root / "hf", "ours": ours, **files}


@pytest.fixture(scope="module")
def hf_backend(bridged) -> dict:
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(bridged["tasks"]), include_defaults=False)
    # logits_cache off: with it (the default) the hf backend shares one forward pass among
    # requests whose tokens are the same but split differently between context and
    # continuation, and scores all but one at the wrong positions (lm-eval 0.4.13; here
    # ('Cat', ' slowly blue.') and ('Cat slowly', ' blue.'), off by 2e-3).
    return simple_evaluate(model=HFLM(pretrained=str(bridged["hf"]), device="cpu",
                                      batch_size=4, logits_cache=False),
                           tasks=TASKS, task_manager=manager, log_samples=True)


def _responses(results: dict, task: str) -> list:
    """Per document, its requests' responses: (loglikelihood, is_greedy) pairs, rolling
    log-likelihoods or generated strings."""
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [[r[0] for r in s["resps"]] for s in samples]


def test_loglikelihoods_agree_with_the_hf_backend_request_by_request(bridged, hf_backend):
    for task in (CHOICE_TASK, ROLLING_TASK):
        ours = _responses(bridged["ours"].raw[task], task)
        theirs = _responses(hf_backend, task)
        assert len(ours) == len(theirs) == (EXAMPLES if task == CHOICE_TASK else TEXTS)
        for doc, (mine, hf) in enumerate(zip(ours, theirs, strict=True)):
            for a, b in zip(mine, hf, strict=True):
                a, b = (a[0], b[0]) if task == CHOICE_TASK else (a, b)
                assert abs(a - b) <= TOLERANCE, (task, doc, a, b)
    for task in (CHOICE_TASK, ROLLING_TASK):
        mine, hf = bridged["ours"].tasks[task], hf_backend["results"][task]
        for metric in ("acc", "acc_norm") if task == CHOICE_TASK else ("bits_per_byte",):
            assert mine[metric] == pytest.approx(hf[f"{metric},none"], abs=1e-9), metric


def test_greedy_generations_are_the_hf_backends(bridged, hf_backend):
    ours = _responses(bridged["ours"].raw[GENERATE_TASK], GENERATE_TASK)
    assert ours == _responses(hf_backend, GENERATE_TASK)
    # Not all one string: the check would pass for a model that writes nothing.
    assert len({text for (text,) in ours}) > 1, ours


def test_multiple_choice_accuracy_is_the_evaluators(bridged):
    """The bridge on the task and llm_gym's MultipleChoice on its file: the same choice
    scores, the same acc/acc_norm, the contexts cut to fit counted by both."""
    ours = bridged["ours"].tasks[CHOICE_TASK]
    own = evaluate_checkpoint(bridged["run"], "hellaswag", bridged["hellaswag"]).metrics
    assert (ours["acc"], ours["acc_norm"]) == (own["acc"], own["acc_norm"])
    assert ours["samples"] == own["examples"] == EXAMPLES
    assert own["truncated"] == 3 and ours["truncated"] >= 3  # requests; 4 per example
    assert ours["requests"] == 4 * EXAMPLES
    run = load_run_model(bridged["run"])
    encoded = encode_examples(read_choice_examples(bridged["hellaswag"], "hellaswag"),
                              run.tokenizer)
    responses = _responses(bridged["ours"].raw[CHOICE_TASK], CHOICE_TASK)
    for example, choices in zip(encoded, responses, strict=True):
        score = score_example(run.model, example, run.model.max_seq_len, "cpu")
        for mine, (theirs, _) in zip(score.logprobs, choices, strict=True):
            assert abs(mine - theirs) <= TOLERANCE


def test_bits_per_byte_is_text_perplexitys(bridged):
    ours = bridged["ours"].tasks[ROLLING_TASK]
    own = evaluate_checkpoint(bridged["run"], "perplexity", bridged["texts"]).metrics
    assert math.isclose(ours["bits_per_byte"], own["bits_per_byte"], rel_tol=1e-6)


def test_the_command_writes_its_tasks_beside_the_task_entries(bridged, capsys):
    run_dir = bridged["run"]
    code, out = cli(capsys, "eval", str(run_dir), "--task", "perplexity",
                    "--data", str(bridged["texts"]))
    assert code == 0, out
    code, out = cli(capsys, "eval", str(run_dir), "--lm-eval", f"{CHOICE_TASK}",
                    "--include-path", str(bridged["tasks"]), "--limit", "5")
    assert code == 0, out
    assert f"lm-eval at step {STEPS}" in out and f"{CHOICE_TASK} acc_norm" in out
    results = json.loads((run_dir / "eval" / f"{STEPS}.json").read_text())
    entry = results["tasks"][f"lm-eval/{CHOICE_TASK}"]
    assert entry["samples"] == 5 and entry["limit"] == 5 and entry["requests"] == 20
    assert {"acc", "acc_stderr", "acc_norm", "truncated", "seconds"} <= set(entry)
    assert "perplexity" in results["tasks"]  # --task's entry stays


def test_an_unknown_task_or_one_that_does_not_load_is_refused(bridged, tmp_path, capsys):
    code, out = cli(capsys, "eval", str(bridged["run"]), "--lm-eval", "tiny_hellaswg",
                    "--include-path", str(bridged["tasks"]))
    assert code == 2 and "no task named tiny_hellaswg" in out, out
    assert "did you mean tiny_hellaswag" in out and "Traceback" not in out
    broken = tmp_path / "broken"
    broken.mkdir()
    missing = tmp_path / "gone.jsonl"
    (broken / "gone.yaml").write_text(
        (bridged["tasks"] / f"{CHOICE_TASK}.yaml").read_text()
        .replace(str(bridged["hellaswag"]), str(missing)).replace(CHOICE_TASK, "gone"))
    code, out = cli(capsys, "eval", str(bridged["run"]), "--lm-eval", "gone",
                    "--include-path", str(broken))
    assert code == 2 and "task gone does not load" in out and "Traceback" not in out, out
    assert not (bridged["run"] / "eval" / "0.json").exists()

