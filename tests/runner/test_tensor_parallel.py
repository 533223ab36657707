"""trainer.parallel.tp: tensor parallelism (with sequence parallelism and loss parallel)
trains like one process with the same global batch, for both model families; its
checkpoints keep the unsharded layout, so a run moves between cuts; a degree that does
not fit is refused before any worker starts, naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from tests.runner.family_recipes import family_recipe as _recipe

pytestmark = pytest.mark.usefixtures("use_demo_cache")

BATCH = ["trainer.global_batch_size=8", "trainer.micro_batch_size=2", "trainer.max_steps=3",
         "trainer.eval_every=3", "trainer.sample_prompt=null", "trainer.log_every=1"]
TP2 = "trainer.parallel={tp: 2}"

def _records(run_dir: Path, key: str) -> list[float]:
    return [r[key] for r in read_metrics(run_dir / "metrics.jsonl") if key in r]


def _assert_same_run(run: Path, reference: Path, keys=("loss", "grad_norm", "eval_loss")) -> None:
    for key in keys:
        assert _records(run, key) == pytest.approx(_records(reference, key), abs=1e-5), key


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_two_way_tensor_parallel_trains_like_one_process(tmp_path, family, capfd):
    """2 processes splitting every layer: the same losses, gradient norms and validation
    losses (the two ranks of the group read the same samples and count once). No
    end-of-run sample is drawn (decoding runs whole layers): the trainer says so and
    names the command that samples the checkpoint, and the run ends normally."""
    spec, extra = _recipe(family, tmp_path)
    run_recipe(spec, [*BATCH, *extra], run_dir=tmp_path / "one", allow_drift=True)
    capfd.readouterr()
    run_recipe(spec, [*BATCH, *extra, TP2, "trainer.sample_prompt=The"],
               run_dir=tmp_path / "tp", nproc=2, allow_drift=True)
    _assert_same_run(tmp_path / "tp", tmp_path / "one")
    out = capfd.readouterr().out
    assert "sample: not drawn under tensor parallelism (trainer.parallel.tp > 1)" in out
    assert f"llm_gym generate {tmp_path / 'tp'} --prompt 'The'" in out


@pytest.mark.dist
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_data_parallel_by_tensor_parallel_trains_like_one_process(tmp_path, family):
    """4 processes as 2 data-parallel ranks x 2 tensor-parallel: FSDP2 shards the
    tensor-parallel DTensors further (2-D), each pair reads its own half of the batch.
    (The validation loss reads eval_batches per data-parallel rank, so it is compared
    where there is one, above.)"""
    spec, extra = _recipe(family, tmp_path)
    run_recipe(spec, [*BATCH, *extra], run_dir=tmp_path / "one", allow_drift=True)
    run_recipe(spec, [*BATCH, *extra, TP2], run_dir=tmp_path / "dptp", nproc=4,
               allow_drift=True)
    _assert_same_run(tmp_path / "dptp", tmp_path / "one", keys=("loss", "grad_norm"))


def test_evaluators_score_alike_under_tensor_parallelism(tmp_path):
    """MultipleChoice and TextPerplexity run whole forwards of any length (sequences the
    tensor-parallel ranks cut unevenly) and get the whole logits: the same scores as one
    process, each example counted once."""
    from tests.evaluation.task_data import evaluators_override, write_hellaswag, write_texts

    hellaswag = write_hellaswag(tmp_path / "hellaswag.jsonl", 6, long_contexts=2)
    texts = write_texts(tmp_path / "texts.jsonl", 5)
    steps = [*BATCH, "trainer.eval_every=null", "trainer.max_steps=2",
             evaluators_override(hellaswag, texts, 2)]
    run_recipe("gpt2-debug", steps, run_dir=tmp_path / "one")
    run_recipe("gpt2-debug", [*steps, TP2], run_dir=tmp_path / "tp", nproc=2)
    scores = [k for r in read_metrics(tmp_path / "one" / "metrics.jsonl") for k in r
              if k.startswith("eval/") and not k.endswith("seconds")]
    assert "eval/hellaswag/acc_norm" in scores and "eval/text/loss" in scores
    _assert_same_run(tmp_path / "tp", tmp_path / "one", keys=scores)


def test_a_checkpoint_moves_between_cuts(tmp_path):
    """A tensor-parallel checkpoint holds the whole tensors in their usual layout (GPT-2's
    fused c_attn included): one process resumes a 2-way run, and a 2-way run resumes one
    process's, both on the losses of an uninterrupted run."""
    steps = [*BATCH, "trainer.eval_every=null"]
    run_recipe("gpt2-debug", [*steps, "trainer.max_steps=4"], run_dir=tmp_path / "one")
    run_recipe("gpt2-debug", [*steps, "trainer.max_steps=2", TP2], run_dir=tmp_path / "a",
               nproc=2)
    run_recipe("gpt2-debug", [*steps, "trainer.max_steps=4"], run_dir=tmp_path / "a",
               resume=True)
    run_recipe("gpt2-debug", [*steps, "trainer.max_steps=2"], run_dir=tmp_path / "b")
    run_recipe("gpt2-debug", [*steps, "trainer.max_steps=4", TP2], run_dir=tmp_path / "b",
               nproc=2, resume=True)
    for moved in ("a", "b"):
        assert _records(tmp_path / moved, "loss") == pytest.approx(
            _records(tmp_path / "one", "loss"), abs=1e-5), moved


@pytest.mark.parametrize(("setting", "nproc", "message"), [
    ("trainer.parallel={tp: 3}", 2,
     r"trainer.parallel.tp: a tensor-parallel degree of 3 does not divide the 2 ranks; "
     r"with 2 ranks it can be 1, 2"),
    ("trainer.parallel={tp: 4}", 4,
     r"trainer.parallel.tp: 4 does not fit model GPT2: n_head = 2 is not divisible by 4; "
     r"it can be 1, 2"),
    ("trainer.parallel={tp: 2, dp_replicate: 2, dp_shard: 2}", 2,
     r"trainer.parallel: dp_replicate 2 x dp_shard 2 x tp 2 = 8 ranks, but the run has 2"),
])
def test_a_cut_that_does_not_fit_is_refused_before_any_worker(tmp_path, monkeypatch,
                                                              setting, nproc, message):
    import llm_gym.runner.launcher as launcher

    def no_workers(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("workers were started for a cut that does not fit")

    monkeypatch.setattr(launcher, "launch_local", no_workers)
    with pytest.raises(UserError, match=message):
        run_recipe("gpt2-debug", [*BATCH, setting], run_dir=tmp_path / "run", nproc=nproc)
    assert not (tmp_path / "run").exists()


def test_a_degree_the_key_value_heads_do_not_take_is_refused(tmp_path, monkeypatch):
    import llm_gym.runner.launcher as launcher

    monkeypatch.setattr(launcher, "launch_local", lambda *a, **k: pytest.fail("launched"))
    spec, _ = _recipe("llama", tmp_path)
    with pytest.raises(UserError, match=r"trainer.parallel.tp: 4 does not fit model Llama: "
                                        r"n_kv_head = 2 is not divisible by 4; it can be 1, 2"):
        run_recipe(spec, [*BATCH, "trainer.parallel={tp: 4}"], run_dir=tmp_path / "run",
                   nproc=4, allow_drift=True)


def test_a_model_without_a_plan_is_refused(tmp_path, monkeypatch):
    import llm_gym.runner.launcher as launcher
    import llm_gym_components.models.gpt2 as gpt2

    monkeypatch.delattr(gpt2.GPT2, "tensor_parallel_plan")
    monkeypatch.setattr(launcher, "launch_local", lambda *a, **k: pytest.fail("launched"))
    with pytest.raises(UserError, match=r"trainer.parallel.tp: 2 asks for tensor "
                                        r"parallelism, but model GPT2 declares no "
                                        r"tensor_parallel_plan\(\)"):
        run_recipe("gpt2-debug", [*BATCH, TP2], run_dir=tmp_path / "run", nproc=2)
