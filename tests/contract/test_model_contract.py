"""The model contract: both built-in families satisfy it, an incomplete model is refused at
validation with what it lacks, and a third-party model (tests/contract/toy_plugin.py) is
planned, sharded, sampled and measured through it with no core edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.model_contract import (
    REQUIRED_PARTS,
    LanguageModel,
    as_language_model,
    contract_problems,
    missing_parts,
)
from llm_gym.planning.memory import activations
from llm_gym.planning.plan import make_plan
from llm_gym.recipes.loading import load_recipe
from llm_gym.registry import ResolverRegistry
from llm_gym.runner.generation import stream_tokens
from llm_gym.runner.launcher import launch_local
from llm_gym_components.models.gpt2 import GPT2
from llm_gym_components.models.llama import Llama

from .toy_plugin import TOY_CONFIG, ToyLM, ToyPlugin, recipe_with_model


@pytest.fixture(scope="module")
def registry() -> ResolverRegistry:
    registry = ResolverRegistry.from_installed_plugins()
    registry.register_plugin(ToyPlugin(), name="toy-plugin")
    return registry


@pytest.mark.parametrize("cls", [GPT2, Llama, ToyLM])
def test_the_model_classes_satisfy_the_contract(cls: type) -> None:
    assert missing_parts(cls) == []


def test_built_models_satisfy_it_too() -> None:
    gpt2 = GPT2(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    llama = Llama(vocab_size=64, max_seq_len=16, n_embd=32, n_layer=2, n_head=4, n_kv_head=2)
    for model in (gpt2, llama):
        assert isinstance(model, LanguageModel) and missing_parts(model) == []
        assert as_language_model(model) is model
        assert (model.vocab_size, model.max_seq_len) == (64, 16)


@pytest.mark.parametrize("name", ["gpt2-tiny", "gpt2-124m", "llama-tiny", "llama-124m"])
def test_shipped_recipes_pass_the_contract_check(name: str) -> None:
    assert list(contract_problems(load_recipe(name, allow_drift=True).recipe)) == []


def test_an_incomplete_model_is_refused_at_validation(registry: ResolverRegistry,
                                                      tmp_path: Path) -> None:
    path = recipe_with_model(tmp_path, "Incomplete")
    with pytest.raises(UserError) as refused:
        load_recipe(str(path), registry=registry, allow_drift=True, preflight=True)
    problems = "\n".join(refused.value.problems)
    assert ("model.type_hint: model Incomplete (class Incomplete) does not satisfy the model "
            "contract (llm_gym.model_contract.LanguageModel): missing flops_per_token, "
            "block_activation_bytes") in problems


def test_a_model_that_declares_no_class_is_refused_at_validation(
        registry: ResolverRegistry, tmp_path: Path) -> None:
    path = recipe_with_model(tmp_path, "Undeclared")
    with pytest.raises(UserError) as refused:
        load_recipe(str(path), registry=registry, allow_drift=True, preflight=True)
    assert any("Undeclared" in p and "declares no model class" in p
               for p in refused.value.problems)


def test_a_built_model_that_breaks_the_contract_is_refused_by_name() -> None:
    with pytest.raises(UserError, match=r"model Linear \(a torch.nn.modules.linear.Linear\) "
                                        r"does not satisfy the model contract.*missing blocks, "
                                        r"init_weights, flops_per_token"):
        as_language_model(torch.nn.Linear(2, 2))
    assert missing_parts(object) == ["torch.nn.Module base", *REQUIRED_PARTS]


def test_the_third_party_model_is_planned_from_its_declarations(
        registry: ResolverRegistry, tmp_path: Path) -> None:
    recipe = load_recipe(str(recipe_with_model(tmp_path, "ToyLM", TOY_CONFIG)),
                         registry=registry, allow_drift=True).recipe
    plan = make_plan(recipe, label="toy", nodes=1, gpus_per_node=2, registry=registry)
    model = ToyLM(257, 32, 3, 32)
    assert plan.shape.flops_per_token == model.flops_per_token(32) == 6 * model.num_params()
    assert plan.shape.num_params == sum(p.numel() for p in model.parameters())
    assert len(plan.shape.blocks) == 3 and plan.shape.recompute_flops_per_token > 0
    # The planned activations against what autograd saves in one forward (+ the loss).
    s = plan.setup
    ids = torch.randint(0, 257, (s.micro_batch_size, s.seq_len))
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in own:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
    measured = sum(saved.values())
    # Within 2%: the toy's root (embedding, head input) alone is 5% of it.
    assert activations(plan.shape, plan.setup) == pytest.approx(measured, rel=0.02)


def test_the_third_party_model_samples(registry: ResolverRegistry) -> None:
    torch.manual_seed(0)
    model = ToyLM(257, 16, 2, 8).eval()
    tokens = list(stream_tokens(model, [1, 2, 3], 12, temperature=0))
    assert len(tokens) == 12 and all(0 <= t < 257 for t in tokens)
    again = list(stream_tokens(model, [1, 2, 3], 12, temperature=1.0, seed=7))
    assert again == list(stream_tokens(model, [1, 2, 3], 12, temperature=1.0, seed=7))


def shard_the_toy(recipe_path: str) -> dict[str, object]:
    """In a launch_local worker: build ToyLM from the recipe, shard it as the trainer does,
    take one step; report what is sharded and the loss."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from llm_gym.runner.distributed import distributed_world
    from llm_gym.runner.parallelize import parallelize_as_configured

    registry = ResolverRegistry.from_installed_plugins()
    registry.register_plugin(ToyPlugin(), name="toy-plugin")
    recipe = load_recipe(recipe_path, registry=registry, allow_drift=True).recipe
    with distributed_world() as world:
        torch.manual_seed(0)
        model = registry.build_component_by_config(recipe.components()["model"])
        model = parallelize_as_configured(model, recipe.trainer, world, compile=False)
        ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(1))
        loss = torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
        loss.backward()
        params = dict(model.named_parameters())
        return {
            "rank": world.rank,
            "sharded": sorted(n for n, p in params.items() if isinstance(p, DTensor)),
            "all": sorted(params),
            "local_rows": params["stack.0.up.weight"].to_local().shape[0],
            # The model's declared blocks are the FSDP units, each sharded on its own.
            "blocks_sharded": [isinstance(b, FSDPModule) for b in model.stack],
            "loss": float(loss),
        }


@pytest.mark.dist
def test_the_third_party_model_shards_over_two_processes(tmp_path: Path) -> None:
    path = recipe_with_model(tmp_path, "ToyLM", TOY_CONFIG)
    results = launch_local(2, shard_the_toy, (str(path),))
    for result in results.values():
        assert result["sharded"] == result["all"]  # every parameter is a DTensor shard
        assert result["local_rows"] == 32  # 64 rows of stack.0.up over 2 ranks
        assert result["blocks_sharded"] == [True, True, True]
    assert results[0]["loss"] == results[1]["loss"]  # the same step on both ranks


def test_the_third_party_model_trains_with_mfu(registry: ResolverRegistry, tmp_path: Path,
                                               use_demo_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_gym.runner.entry import run_recipe

    monkeypatch.setattr(ResolverRegistry, "from_installed_plugins",
                        classmethod(lambda cls: registry))
    path = recipe_with_model(tmp_path, "ToyLM", TOY_CONFIG)
    run_dir = tmp_path / "run"
    run_recipe(str(path), ["trainer.max_steps=3", "trainer.eval_every=null"], run_dir=run_dir,
               allow_drift=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    mfu = [r["mfu"] for r in rows if r.get("mfu") is not None]
    assert mfu and all(0 < m <= 1 for m in mfu)


def test_recipe_validate_exits_2_naming_the_missing_parts(
        registry: ResolverRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from llm_gym.cli.main import main

    monkeypatch.setattr(ResolverRegistry, "from_installed_plugins",
                        classmethod(lambda cls: registry))
    path = recipe_with_model(tmp_path, "Incomplete")
    with pytest.raises(SystemExit) as exit_:
        main(["recipe", "validate", str(path), "--allow-drift"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "model Incomplete" in err and "missing flops_per_token, block_activation_bytes" in err


def test_a_gpt2_checkpoint_does_not_resume_into_a_llama_recipe(
        tmp_path: Path, use_demo_cache: Path) -> None:
    from llm_gym.runner.entry import run_recipe

    run_dir = tmp_path / "run"
    quick = ["trainer.max_steps=1", "trainer.eval_every=null"]
    run_recipe("gpt2-debug", quick, run_dir=run_dir)
    llama = recipe_with_model(tmp_path, "Llama", '{vocab_size: 257, max_seq_len: '
                              '"${trainer.seq_len}", n_embd: 32, n_layer: 2, n_head: 2}')
    with pytest.raises(UserError) as refused:
        run_recipe(str(llama), ["trainer.max_steps=2", "trainer.eval_every=null"],
                   run_dir=run_dir, resume=True, allow_drift=True)
    text = str(refused.value) + "\n".join(refused.value.problems)
    assert "model.type_hint" in text and "belong to the old model" in text, text
