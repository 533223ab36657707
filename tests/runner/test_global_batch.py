"""A fixed global batch (trainer.global_batch_size / global_batch_tokens): accumulation is
derived from the world size, so 1, 2 and 4 processes train on the same samples per step
and give the same losses, and a checkpoint resumes on another world size (4 processes:
tests/runner/test_mesh.py's dist test); a size that does not split is refused before
any work."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from llm_gym.errors import UserError
from llm_gym.runner.batch_layout import batch_layout
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("use_demo_cache")

FIXED = ["trainer.global_batch_size=8", "trainer.micro_batch_size=2", "trainer.max_steps=4",
         "trainer.eval_every=null", "trainer.sample_prompt=null", "trainer.log_every=1"]


def _settings(**kw):  # noqa: ANN003, ANN202
    base = dict(seq_len=32, micro_batch_size=2, grad_accumulation=1, global_batch_size=None,
                global_batch_tokens=None)
    return SimpleNamespace(**{**base, **kw})


def _train(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize(("ranks", "accumulation"), [(1, 4), (2, 2), (4, 1)])
def test_accumulation_is_derived_from_the_world_size(ranks, accumulation):
    layout = batch_layout(_settings(global_batch_size=8), ranks)
    assert (layout.grad_accumulation, layout.global_batch_size) == (accumulation, 8)
    tokens = batch_layout(_settings(global_batch_tokens=8 * 32), ranks)
    assert tokens == layout


def test_without_a_fixed_batch_it_grows_with_the_world():
    layout = batch_layout(_settings(grad_accumulation=3), 4)
    assert (layout.grad_accumulation, layout.global_batch_size) == (3, 2 * 3 * 4)


def test_a_batch_that_does_not_split_names_the_nearest_that_do():
    with pytest.raises(UserError) as err:
        batch_layout(_settings(global_batch_size=12, micro_batch_size=4), 2)
    message = err.value.message
    assert message.startswith("trainer.global_batch_size: 12 sequences")
    assert "nearest that do: 8 or 16" in message and "fits 1, 3 ranks" in message
    with pytest.raises(UserError, match=r"trainer.global_batch_tokens: 384 tokens .* "
                                        r"nearest that do: 256 or 512"):
        batch_layout(_settings(global_batch_tokens=12 * 32, micro_batch_size=4), 2)


def test_a_size_that_does_not_split_is_refused_before_any_worker_or_directory(
        tmp_path, monkeypatch):
    import llm_gym.runner.launcher as launcher

    def no_workers(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("workers were started for a batch that cannot split")

    monkeypatch.setattr(launcher, "launch_local", no_workers)
    with pytest.raises(UserError, match="trainer.global_batch_size: 6 sequences"):
        run_recipe("gpt2-debug", ["trainer.global_batch_size=6", "trainer.micro_batch_size=2"],
                   run_dir=tmp_path / "run", nproc=2)
    assert not (tmp_path / "run").exists()


def test_two_processes_train_like_one_and_resume_on_one(tmp_path, capsys):
    """With the same global batch, 2 processes train like 1 (steps 1-2), and their
    checkpoint continues on 1 process (steps 3-4) as if nothing had moved: all 4 losses
    within 1e-5 of one process throughout, and the same tokens per step (8 sequences of
    gpt2-debug's 32, not 8 per rank)."""
    args = [a for a in FIXED if not a.startswith("trainer.max_steps")]
    run_recipe("gpt2-debug", [*args, "trainer.max_steps=4"], run_dir=tmp_path / "one")
    run_recipe("gpt2-debug", [*args, "trainer.max_steps=2"], run_dir=tmp_path / "moved",
               nproc=2)
    capsys.readouterr()
    run_recipe("gpt2-debug", [*args, "trainer.max_steps=4"], run_dir=tmp_path / "moved",
               resume=True)
    assert "from a checkpoint written by 2: model and optimizer resharded" in (
        capsys.readouterr().out)
    one, moved = _train(tmp_path / "one"), _train(tmp_path / "moved")
    assert [r["step"] for r in moved] == [1, 2, 3, 4]
    assert [r["loss"] for r in moved] == pytest.approx([r["loss"] for r in one], abs=1e-5)
    assert [r["tokens"] for r in moved] == [r["tokens"] for r in one] == [256 * s for s in
                                                                          (1, 2, 3, 4)]


def test_without_a_fixed_global_batch_another_world_size_is_refused(tmp_path):
    args = ["trainer.micro_batch_size=2", "trainer.eval_every=null", "trainer.sample_prompt=null"]
    run_recipe("gpt2-debug", [*args, "trainer.max_steps=2"], run_dir=tmp_path / "run", nproc=2)
    with pytest.raises(UserError, match="written by 2 processes but this run has 1; resume "
                                        "with 2 processes .*trainer.global_batch_size"):
        run_recipe("gpt2-debug", [*args, "trainer.max_steps=4"], run_dir=tmp_path / "run",
                   resume=True)
