"""The dry run: the sharded model built over a simulated world and one step traced."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from pydantic import PositiveInt

from llm_gym.errors import UserError
from llm_gym.planning.dry_run import _main, dry_run
from llm_gym.recipes.loading import load_recipe
from llm_gym.registry import ComponentConfig, ResolverRegistry, component, hookimpl
from llm_gym.runner.distributed import distributed_world


def test_gpt2_124m_over_16_ranks_leaves_no_process_group() -> None:
    hook = sys.excepthook
    result = dry_run(load_recipe("gpt2-124m"), ranks=16, gpus_per_node=8)
    assert (result.ranks, result.rank, result.no_grad) == (16, 15, ())
    assert result.message == (
        "dry run: OK (built, sharded over 16 ranks, one forward/backward traced)")
    assert not dist.is_initialized()
    assert sys.excepthook is hook


def test_a_sequence_longer_than_the_positions_is_caught() -> None:
    # Validation accepts it (nothing ties seq_len to n_positions); the traced forward does not.
    loaded = load_recipe("gpt2-124m", ["trainer.seq_len=2048"])
    with pytest.raises(UserError, match=r"over 16 simulated ranks failed in the forward pass"
                                        r".*exceeds the model's n_positions=1024"):
        dry_run(loaded, ranks=16, gpus_per_node=8)
    assert not dist.is_initialized()


def test_the_cli_reports_it_as_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_gym.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["recipe", "plan", "gpt2-124m", "--nodes", "2", "trainer.seq_len=2048"])
    captured = capsys.readouterr()
    assert exit_.value.code == 2
    assert "verdict: fits" in captured.out  # the memory plan alone cannot see it
    assert "error: dry run over 16 simulated ranks failed" in captured.err
    assert "Traceback" not in captured.err


# A model whose last block reuses the first block's MLP weight (cross-layer sharing):
# valid PyTorch, and it trains on one device, but FSDP2 cannot shard one parameter in
# two groups. Only building the sharded model finds that out.
@component("model", "SharedLayerGPT2", version=1)
class SharedLayerGPT2Config(ComponentConfig):
    vocab_size: PositiveInt
    n_positions: PositiveInt
    n_embd: PositiveInt
    n_layer: PositiveInt
    n_head: PositiveInt

    def build(self):  # noqa: ANN201
        from llm_gym_components.models.gpt2 import GPT2

        model = GPT2(**self.model_dump())
        model.blocks[-1].mlp.c_fc.weight = model.blocks[0].mlp.c_fc.weight
        return model


class SharedLayerPlugin:
    @hookimpl
    def llm_gym_components(self) -> list[type]:
        return [SharedLayerGPT2Config]


def test_a_parameter_shared_across_blocks_is_caught(tmp_path: Path) -> None:
    registry = ResolverRegistry.from_installed_plugins()
    registry.register_plugin(SharedLayerPlugin(), name="shared-layer")
    recipe = tmp_path / "shared.yaml"
    debug = Path(load_recipe("gpt2-debug").ref.path).read_text()
    recipe.write_text(debug.replace("type_hint: GPT2\n", "type_hint: SharedLayerGPT2\n"))
    loaded = load_recipe(str(recipe), registry=registry, allow_drift=True)
    # parallelize() checks before sharding (torch itself only does from 2.12 or so, at the
    # first forward), so the dry run finds it whatever the installed release.
    with pytest.raises(UserError, match=r"one parameter is used in more than one FSDP group: "
                                        r"'transformer.h.0.mlp.c_fc.weight' \(in "
                                        r"transformer.h.0\), 'transformer.h.1.mlp.c_fc.weight' "
                                        r"\(in transformer.h.1\)"):
        dry_run(loaded, ranks=4, gpus_per_node=4, registry=registry)


def test_inside_a_process_group_it_runs_in_a_subprocess() -> None:
    loaded = load_recipe("gpt2-debug")
    with distributed_world() as world:
        result = dry_run(loaded, ranks=4, gpus_per_node=2)
        assert result.subprocess and result.ranks == 4
        assert dist.is_initialized() and dist.get_world_size() == world.world_size == 1


def test_the_subprocess_reports_a_failure_as_data(monkeypatch, capsys) -> None:  # noqa: ANN001
    # What the subprocess's entry point prints for the parent, run here without a group.
    broken = load_recipe("gpt2-debug", ["trainer.seq_len=64", "model.config.n_positions=32"])
    payload = {"data": broken.data, "label": "debug", "ranks": 2, "gpus_per_node": 2}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(payload)))
    _main()
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "n_positions=32" in result["error"] and result["problems"] == []
