"""trainer.parallel: the run's device mesh. HSDP (copies of a sharded model) trains like
one process with the same global batch; a split that does not multiply out to the world
size is refused before any worker starts, naming the setting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from llm_gym.errors import UserError
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.mesh import mesh_shape
from llm_gym.runner.metrics import read_metrics
from tests.runner.family_recipes import family_recipe

pytestmark = pytest.mark.usefixtures("use_demo_cache")

BATCH = ["trainer.global_batch_size=8", "trainer.micro_batch_size=2", "trainer.max_steps=3",
         "trainer.eval_every=null", "trainer.sample_prompt=null", "trainer.log_every=1"]


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def _parallel(replicate: int, shard: int) -> SimpleNamespace:
    return SimpleNamespace(dp_replicate=replicate, dp_shard=shard, tp=1)


@pytest.mark.parametrize(("replicate", "shard", "world", "sizes"), [
    (1, -1, 4, (1, 4)), (2, -1, 4, (2, 2)), (4, 1, 4, (4, 1)), (2, 3, 6, (2, 3))])
def test_the_rest_of_the_world_fills_dp_shard(replicate, shard, world, sizes):
    assert mesh_shape(_parallel(replicate, shard), world).sizes == (*sizes, 1)


def test_a_split_that_does_not_multiply_out_is_refused_by_its_setting():
    with pytest.raises(UserError, match=r"trainer.parallel.dp_replicate: 3 replicas do not "
                                        r"divide the 4 ranks; .* 1, 2, 4"):
        mesh_shape(_parallel(3, -1), 4)
    with pytest.raises(UserError, match=r"trainer.parallel: dp_replicate 2 x dp_shard 3 = 6 "
                                        r"ranks, but the run has 4"):
        mesh_shape(_parallel(2, 3), 4)


def test_the_launcher_refuses_it_before_any_worker(tmp_path, monkeypatch):
    import llm_gym.runner.launcher as launcher

    def no_workers(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("workers were started for a mesh that does not fit")

    monkeypatch.setattr(launcher, "launch_local", no_workers)
    with pytest.raises(UserError, match="trainer.parallel: dp_replicate 2 x dp_shard 2"):
        run_recipe("gpt2-debug", [*BATCH, "trainer.parallel={dp_replicate: 2, dp_shard: 2}"],
                   run_dir=tmp_path / "run", nproc=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("family", "nproc"), [
    ("gpt2", 2), ("llama", 2), pytest.param("llama", 4, marks=pytest.mark.dist)])
def test_two_replicas_train_like_one_process(tmp_path, family, nproc):
    """HSDP's CPU twin: 2 copies, each sharded over nproc / 2 ranks, gradients averaged
    across (GPT-2's 2 x 2 layout runs in the resume test below)."""
    spec, _ = family_recipe(family, tmp_path)
    run_recipe(spec, BATCH, run_dir=tmp_path / "one", allow_drift=True)
    run_recipe(spec, [*BATCH, "trainer.parallel={dp_replicate: 2}"],
               run_dir=tmp_path / "hsdp", nproc=nproc, allow_drift=True)
    assert _losses(tmp_path / "hsdp") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)


@pytest.mark.dist
def test_two_processes_resume_on_four_as_two_by_two_hsdp(tmp_path):
    """Issue 18's elastic test on 4 ranks, in one scenario (4 gloo processes on a 2-core
    machine are dear): 2 processes (FSDP2) train 2 steps, then 4 processes as 2 replicas x
    2 shards resume for 2 more; every loss within 1e-5 of 1 process with the same global
    batch. DCP reshards 2-way shards onto the 2 x 2 mesh, the cursor carries the data."""
    run_recipe("gpt2-debug", [*BATCH, "trainer.max_steps=4"], run_dir=tmp_path / "one")
    run_recipe("gpt2-debug", [*BATCH, "trainer.max_steps=2"], run_dir=tmp_path / "moved",
               nproc=2)
    run_recipe("gpt2-debug", [*BATCH, "trainer.max_steps=4",
                              "trainer.parallel={dp_replicate: 2}"],
               run_dir=tmp_path / "moved", nproc=4, resume=True)
    assert _losses(tmp_path / "moved") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
