"""trainer.profile traces, mem/* keys in metrics.jsonl, the out-of-memory message."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from llm_gym.errors import ReportedError
from llm_gym.runner import trainer as trainer_module
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.memory_telemetry import current_rss_bytes
from llm_gym.runner.metrics import read_metrics
from llm_gym.runner.profiling import trace_path
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("use_demo_cache")

BASE = ["trainer.max_steps=4", "trainer.log_every=1", "trainer.eval_every=null"]


def _train_records(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_the_trace_names_modules_and_phases_and_changes_no_loss(tmp_path):
    run_recipe("gpt2-debug", BASE, run_dir=tmp_path / "plain")
    run_recipe("gpt2-debug", [*BASE, "trainer.profile={start_step: 2, steps: 2}"],
               run_dir=tmp_path / "profiled")
    trace = trace_path(tmp_path / "profiled", 0)
    assert trace == tmp_path / "profiled" / "profile" / "rank0.pt.trace.json"
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    for phase in ("llm_gym/data", "llm_gym/forward_backward", "llm_gym/optimizer"):
        # once per profiled step: exactly steps 2 and 3, not 1 or 4
        assert sum(e.get("name") == phase for e in events) == 2, phase
    # with_stack names each module call by class and index
    assert {"nn.Module: GPT2_0", "nn.Module: Block_0", "nn.Module: CausalSelfAttention_0"} <= names
    assert not (tmp_path / "plain" / "profile").exists()
    plain = [r["loss"] for r in _train_records(tmp_path / "plain")]
    profiled = [r["loss"] for r in _train_records(tmp_path / "profiled")]
    assert len(plain) == 4
    assert profiled == plain  # bitwise


@pytest.mark.parametrize("override, expected", [
    ("trainer.profile={start_step: 0, steps: 1}", "trainer.profile.start_step"),
    ("trainer.profile={start_step: 1, steps: 0}", "trainer.profile.steps"),
    ("trainer.profile={start_step: 1}", "trainer.profile.steps"),
    ("trainer.profile={start_step: 9, steps: 1}", "profile.start_step 9 is past max_steps 4"),
])
def test_a_bad_profile_setting_is_refused_by_its_path(tmp_path, override, expected):
    result = run_cli("recipe", "run", "gpt2-debug", *BASE, override,
                     "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_cpu_records_carry_plausible_rss(tmp_path):
    rss_before = current_rss_bytes()
    run_recipe("gpt2-debug", BASE, run_dir=tmp_path / "run")
    records = _train_records(tmp_path / "run")
    assert len(records) == 4
    for r in records:
        assert r["mem/rss_mib"] > 0
        assert r["mem/peak_rss_mib"] >= r["mem/rss_mib"]
        assert "mem/cuda_peak_allocated_gib" not in r
    # The process held at least what it held before the run at some point of it.
    assert max(r["mem/peak_rss_mib"] for r in records) >= rss_before / (1 << 20)


def test_an_out_of_memory_step_names_the_plan_and_writes_no_snapshot_on_cpu(tmp_path,
                                                                            monkeypatch):
    calls = {"n": 0}
    real_step = trainer_module.Trainer._train_step

    def failing_step(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self)

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", failing_step)
    with pytest.raises(ReportedError) as caught:
        run_recipe("gpt2-debug", BASE, run_dir=tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("step 3: CUDA ran out of memory (CUDA out of memory. Tried")
    assert "no memory snapshot was written" in message
    assert "recipe plan predicted a peak of" in message and "GiB per GPU on 1 GPU(s)" in message
    assert f"llm_gym recipe plan {tmp_path / 'run' / 'recipe.resolved.yaml'}" in message
    assert not (tmp_path / "run" / "profile").exists()


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_cuda_records_and_an_oom_snapshot(tmp_path, monkeypatch):
    run_recipe("gpt2-debug", BASE, run_dir=tmp_path / "ok")
    records = _train_records(tmp_path / "ok")
    for r in records:
        assert 0 < r["mem/cuda_peak_allocated_gib"] <= r["mem/cuda_peak_reserved_gib"]

    real_step = trainer_module.Trainer._train_step

    def huge_step(self):
        if self.step == 1:
            total = torch.cuda.get_device_properties(self.world.device).total_memory
            torch.empty(2 * total, dtype=torch.uint8, device=self.world.device)
        return real_step(self)

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", huge_step)
    with pytest.raises(ReportedError) as caught:
        run_recipe("gpt2-debug", BASE, run_dir=tmp_path / "oom")
    snapshot = tmp_path / "oom" / "profile" / "oom-snapshot.pickle"
    assert f"the memory snapshot is {snapshot}" in str(caught.value)
    with snapshot.open("rb") as handle:
        assert "segments" in pickle.load(handle)


def test_a_resumed_run_may_start_profiling_and_says_when_it_is_too_late(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_recipe("gpt2-debug", [*BASE, "trainer.max_steps=2"], run_dir=run_dir)
    # Profiling is not part of what a checkpoint computes: turning it on is no change.
    run_recipe("gpt2-debug", [*BASE, "trainer.max_steps=3",
                              "trainer.profile={start_step: 3, steps: 1}"],
               run_dir=run_dir, resume=True)
    assert trace_path(run_dir, 0).is_file()
    trace_path(run_dir, 0).unlink()
    capsys.readouterr()
    run_recipe("gpt2-debug", [*BASE, "trainer.max_steps=4",
                              "trainer.profile={start_step: 3, steps: 1}"],
               run_dir=run_dir, resume=True)
    assert ("note: trainer.profile starts at step 3 but the run resumes after step 3: "
            "nothing is profiled") in capsys.readouterr().out
    assert not trace_path(run_dir, 0).exists()
