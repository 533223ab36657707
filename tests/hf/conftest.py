"""One tiny trained run shared by the module's tests, and a small GPT2 to convert."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llm_gym_components.models import GPT2

SIZES = dict(vocab_size=67, n_positions=16, n_embd=32, n_layer=2, n_head=4)


@pytest.fixture(scope="session")
def shared_registry():
    from llm_gym.registry import ResolverRegistry

    return ResolverRegistry.from_installed_plugins()


@pytest.fixture
def one_registry(monkeypatch: pytest.MonkeyPatch, shared_registry) -> None:
    """Commands in this process share one registry: collecting plugins costs ~1 s a time."""
    from llm_gym.registry import ResolverRegistry

    monkeypatch.setattr(ResolverRegistry, "from_installed_plugins",
                        classmethod(lambda cls: shared_registry))


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Path:
    """gpt2-debug trained for 2 steps (byte-level tokens)."""
    from llm_gym.runner.entry import run_recipe

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_GYM_DEMO_CACHE", str(demo_cache))
        run_dir = tmp_path_factory.mktemp("hf-runs") / "debug"
        run_recipe("gpt2-debug", ["trainer.max_steps=2", "trainer.eval_every=null"],
                   run_dir=run_dir)
    return run_dir


def small_gpt2(seed: int = 0, **overrides: object) -> GPT2:
    """A GPT2 with every weight random (biases and norms too), so no mapping error hides."""
    torch.manual_seed(seed)
    model = GPT2(**{**SIZES, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def random_ids(vocab_size: int = SIZES["vocab_size"], batch: int = 3, seq: int = 16,
               seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq), generator=g)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach() - b.detach()).abs().max().item()
