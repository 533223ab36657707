"""`llm_gym recipe plan`: the arithmetic, the verdict and what the command prints."""

from __future__ import annotations

import pytest

from llm_gym.cli.main import main
from llm_gym.errors import UserError
from llm_gym.planning.memory import Setup, communication, memory, shard_numel
from llm_gym.planning.plan import USABLE, alternatives, make_plan
from llm_gym.planning.report import verdict
from llm_gym.recipes.loading import load_recipe
from llm_gym.runner.flops import gpu_part, gpu_spec


def plan(spec: str, *overrides: str, nodes: int = 1, gpus: int = 8, gpu: str = "h100"):
    loaded = load_recipe(spec, overrides)
    return make_plan(loaded.recipe, label=spec, nodes=nodes, gpus_per_node=gpus, gpu=gpu)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["recipe", "plan", *args])
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def test_shards_round_up_per_rank() -> None:
    # 257 rows over 2 ranks: rank 0 holds 129 of them, as FSDP2 pads the last rank.
    assert shard_numel(((257, 64), (64,)), 2) == 129 * 64 + 32
    assert shard_numel(((257, 64), (64,)), 1) == 257 * 64 + 64


def test_states_shard_and_communication_grows_with_ranks() -> None:
    p = plan("gpt2-124m")
    one = p.setup.with_(ranks=1, param_dtype="fp32", reduce_dtype="fp32")
    assert not one.sharded  # parallelize leaves one fp32 rank unwrapped
    plain, sharded = memory(p.shape, one, p.optimizer), p.memory()
    assert plain.params == p.shape.num_params * 4
    assert plain.gathered == plain.grad_buffers == plain.accumulated == 0
    assert communication(p.shape, one).total == 0
    assert sharded.params == pytest.approx(plain.params / 8, rel=1e-3)
    assert sharded.optimizer == pytest.approx(2 * sharded.params, rel=1e-3)  # AdamW
    assert sharded.accumulated == p.shape.num_params * 4  # no-sync micro-batches, fp32
    assert communication(p.shape, p.setup).total > 0


def test_tokens_flops_and_step_time() -> None:
    p = plan("gpt2-124m", nodes=2)
    assert p.tokens_per_step == 16 * 1024 * 4 * 16
    assert p.model_flops_per_step == p.shape.flops_per_token * p.tokens_per_step
    assert p.hardware_flops_per_step == p.model_flops_per_step  # no checkpointing
    assert p.step_seconds == pytest.approx(
        p.model_flops_per_step / (16 * 989e12 * 0.4))  # H100 SXM: 989 TFLOP/s bf16 dense
    full = plan("gpt2-124m", "trainer.activation_checkpointing=full", nodes=2)
    assert full.hardware_flops_per_step > full.model_flops_per_step
    assert full.memory().activations < p.memory().activations


def test_gpus_by_name() -> None:
    assert gpu_spec("a100-40gb") == ("A100-40GB", 312e12, int(39.4 * 2**30))
    assert gpu_spec("H200")[2] > gpu_spec("h100")[2]
    # --gpu takes torch's device name too: the same lookup as the runner's
    assert gpu_spec("NVIDIA L40S")[:2] == ("L40S", 362e12) != gpu_spec("l4")[:2]
    assert gpu_spec("h100") == gpu_spec("NVIDIA H100 80GB HBM3")
    with pytest.raises(UserError, match=r"unknown GPU 'tpu' \(--gpu\); known: h200, "):
        gpu_spec("tpu")
    assert gpu_part("tpu") is None


def test_a_plan_that_does_not_fit_says_what_to_change() -> None:
    p = plan("gpt2-xl", "trainer.activation_checkpointing=none", gpus=1, gpu="a100-40gb")
    assert verdict(p).status == "does not fit"
    options = alternatives(p)
    assert options
    assert all(m.peak <= USABLE * p.gpu_bytes for _, m, _ in options)
    assert any("trainer.micro_batch_size=" in change for change, _, _ in options)


def test_setup_is_what_the_recipe_says() -> None:
    p = plan("gpt2-xl")
    assert p.setup == Setup(ranks=8, micro_batch_size=16, seq_len=1024, grad_accumulation=4,
                            param_dtype="bf16", reduce_dtype="fp32",
                            activation_checkpointing="full")
    assert len(p.shape.blocks) == 48 and p.shape.num_params == pytest.approx(1.558e9, rel=1e-3)


def test_cli_prints_tables_verdict_and_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "gpt2-124m", "--nodes", "2", "--gpus-per-node", "8",
                         "--gpu", "h100")
    assert code == 0, err
    for text in ("Memory per GPU", "peak (estimate)", "tokens per step", "1,048,576",
                 "all-gather, backward", "reduce-scatter", "verdict: fits",
                 "dry run: OK (built, sharded over 16 ranks, one forward/backward traced)"):
        assert text in out


def test_cli_gpt2_xl_on_one_a100_node(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "gpt2-xl", "--nodes", "1", "--gpus-per-node", "8",
                         "--gpu", "a100")
    assert code == 0, err
    assert "AC full (recipe)" in out and "hardware FLOPs per step" in out
    assert "verdict: fits" in out and "sharded over 8 ranks" in out
    assert "312 TFLOP/s" in out and "A100-80GB bf16 dense" in out


def test_cli_v100_plans_with_its_fp16_rate_and_says_so(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per table row, where it is honoured
    code, out, err = cli(capsys, "gpt2-tiny", "--gpus-per-node", "8", "--gpu",
                         "Tesla V100-SXM2-32GB", "--no-dry-run")
    assert code == 0, err
    # A narrow console wraps a cell onto the next row: read the table as one text.
    flat = " ".join(out.replace("│", " ").split())
    assert "125 TFLOP/s" in flat and "fp16 dense" in flat and "no bf16 tensor cores" in flat


def test_cli_exits_2_when_it_will_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "gpt2-xl", "--gpus-per-node", "1", "--gpu", "4090",
                         "--no-dry-run")
    assert code == 2
    assert "verdict: will not fit" in out and "what to change" in out
    assert "dry run" not in out
    assert "will not fit on 1 x 1 RTX-4090" in err


def test_hsdp_shards_states_within_a_replica_and_all_reduces_across() -> None:
    """2 nodes x 8 GPUs as 2 replicas of 8: each rank holds what 8-way FSDP2 holds, the
    gathers and reduce-scatters are those of 8 ranks, and the gradient shards cross the
    nodes once per step (a ring all-reduce: 2 (R-1)/R of a shard)."""
    hsdp = plan("gpt2-124m", "trainer.parallel={dp_replicate: 2}", nodes=2)
    fsdp8, fsdp16 = plan("gpt2-124m"), plan("gpt2-124m", nodes=2)
    assert (hsdp.setup.ranks, hsdp.setup.replicas, hsdp.setup.shard_ranks) == (16, 2, 8)
    assert hsdp.memory().params == fsdp8.memory().params > fsdp16.memory().params
    assert hsdp.comm.reduce_scatter == fsdp8.comm.reduce_scatter
    assert fsdp16.comm.all_reduce_replicas == 0
    shard_bytes = fsdp8.comm.reduce_scatter * 8 // 7  # the fp32 gradients over 8 ranks / 8
    assert hsdp.comm.all_reduce_replicas == pytest.approx(shard_bytes / 8, rel=1e-6)
    assert hsdp.tokens_per_step == fsdp16.tokens_per_step


def test_hsdp_that_does_not_fit_the_gpus_is_refused(capsys) -> None:
    code, out, err = cli(capsys, "gpt2-124m", "--nodes", "1", "--gpus-per-node", "8",
                         "trainer.parallel={dp_replicate: 3}")
    assert code == 2 and "trainer.parallel.dp_replicate: 3 replicas do not divide" in out + err


def test_background_checkpoints_plan_a_host_copy_of_the_sharded_states(capsys) -> None:
    """trainer.async_checkpoint copies each rank's parameters and optimizer state to host
    memory while a save is written: the plan says how much, per rank and per node."""
    sync = plan("gpt2-124m", gpus=8)
    background = plan("gpt2-124m", "trainer.async_checkpoint=true", gpus=8)
    assert sync.checkpoint_host_bytes() == 0
    m = background.memory()
    assert background.checkpoint_host_bytes() == m.params + m.optimizer > 0
    # Sharded: twice the ranks, about half the copy on each.
    wider = plan("gpt2-124m", "trainer.async_checkpoint=true", gpus=8, nodes=2)
    assert wider.checkpoint_host_bytes() == pytest.approx(
        background.checkpoint_host_bytes() / 2, rel=0.01)
    _, out, _ = cli(capsys, "gpt2-124m", "--nodes", "1", "--gpus-per-node", "8", "--gpu",
                    "h100", "trainer.async_checkpoint=true")
    per_rank = background.checkpoint_host_bytes() / 2**30
    assert (f"a host-memory copy of {per_rank:,.2f} GiB per rank, {8 * per_rank:,.2f} GiB per "
            "node") in " ".join(out.split())
    _, out, _ = cli(capsys, "gpt2-124m", "--nodes", "1", "--gpus-per-node", "8", "--gpu",
                    "h100")
    assert "background checkpoints" not in out


def test_tensor_parallel_cuts_states_and_activations_and_adds_its_collectives() -> None:
    """tp=2 on 8 GPUs: each parameter the plan cuts is halved and then sharded over the 4
    data-parallel ranks (about what 8-way FSDP2 holds; the position embedding and the
    norms stay whole), activations and the loss's logits halve, the batch is that of 4
    data-parallel ranks, and the activations' gathers and reduce-scatters are counted."""
    tp = plan("gpt2-124m", "trainer.parallel={tp: 2}")
    fsdp4, fsdp8 = plan("gpt2-124m", gpus=4), plan("gpt2-124m")
    s = tp.setup
    assert (s.tp, s.data_parallel, s.shard_ranks) == (2, 4, 4)
    assert tp.tokens_per_step == fsdp4.tokens_per_step
    whole = 124 * 10**6 * 4 // 8  # fp32 parameters over 8 ranks, about
    assert fsdp8.memory().params < tp.memory().params < fsdp8.memory().params * 1.02
    assert tp.memory().params == pytest.approx(whole, rel=0.02)
    assert tp.memory().activations == pytest.approx(fsdp4.memory().activations / 2, rel=1e-6)
    assert tp.memory().working == pytest.approx(fsdp4.memory().working / 2, rel=1e-6)
    # Per micro-batch: 8 per block (12 blocks), 4 at the embedding and the head; each
    # moves half of 16 x 1024 tokens x 768 wide in bf16 to each rank.
    per_micro = (8 * 12 + 4) * 16 * 1024 * 768 * 2 // 2
    assert tp.comm.tensor_parallel == s.grad_accumulation * per_micro
    # Half the gradient elements over 4 ranks ((4 - 1) / 4 of them) against all of them
    # over 8 ((8 - 1) / 8): 3 / 7 of FSDP2's reduce-scatter, the whole parameters aside.
    assert tp.comm.reduce_scatter == pytest.approx(fsdp8.comm.reduce_scatter * 3 / 7, rel=0.02)
    assert fsdp8.comm.tensor_parallel == 0


def test_cli_shows_tensor_parallel_layouts_and_dry_runs_them(capsys, monkeypatch) -> None:
    """HSDP x TP for gpt2-124m and TP for gpt2-xl (25 heads: a degree of 5): the mesh,
    the cut and the tp row, and the dry run cuts the model over the simulated ranks."""
    monkeypatch.setenv("COLUMNS", "200")  # one line per table row, where it is honoured
    code, out, err = cli(capsys, "gpt2-124m", "--nodes", "2", "--gpus-per-node", "8",
                         "trainer.parallel={dp_replicate: 2, tp: 4}")
    flat = " ".join(out.replace("│", " ").split())
    assert code == 0, err
    for text in ("HSDP: 2 replicas x FSDP2 over 2 x tensor parallel 4; mesh 2 x 2 x 4",
                 "data-parallel 4", "1/4 cut x 1/2 shard", "tp: all-gather + reduce-scatter",
                 "dp_replicate: all-reduce across", "sharded over 16 ranks"):
        assert text in flat, text
    code, out, err = cli(capsys, "gpt2-xl", "--nodes", "5", "--gpus-per-node", "8",
                         "trainer.parallel={tp: 5}", "--no-dry-run")
    assert code == 0, err
    assert "tensor parallel 5; mesh 1 x 8 x 5" in " ".join(out.replace("│", " ").split())


def test_a_tensor_parallel_degree_the_heads_do_not_take_is_refused(capsys) -> None:
    code, out, err = cli(capsys, "gpt2-xl", "--gpus-per-node", "8", "trainer.parallel={tp: 4}")
    assert code == 2
    assert ("trainer.parallel.tp: 4 does not fit model GPT2: n_head = 25 is not divisible "
            "by 4; it can be 1, 5, 25") in out + err
