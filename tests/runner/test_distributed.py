"""distributed_world(), the collectives helpers and seeding."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from llm_gym.runner.distributed import (
    FAILED_AT_ATTR,
    World,
    all_reduce_mean,
    distributed_world,
    is_main,
    seed_everything,
)

from . import dist_helpers as h


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_plain_process_gets_a_one_rank_group_that_is_gone_afterwards() -> None:
    with distributed_world() as world:
        assert world == World(0, 0, 1, torch.device("cpu"), "gloo")
        assert dist.is_initialized() and dist.get_world_size() == 1
        assert is_main(world)
        assert all_reduce_mean(3.5, world) == 3.5
        assert torch.equal(
            all_reduce_mean(torch.tensor([1.0, 2.0]), world), torch.tensor([1.0, 2.0])
        )
    assert not dist.is_initialized()


def test_leaving_restores_the_excepthook_torch_replaced() -> None:
    before = sys.excepthook
    with distributed_world():
        assert sys.excepthook is not before  # torch's "[rank0]: " prefixing hook
    assert sys.excepthook is before


def test_a_failing_body_still_destroys_the_group_and_is_timestamped() -> None:
    with pytest.raises(ValueError, match="boom") as info, distributed_world():
        raise ValueError("boom")
    assert not dist.is_initialized()
    assert isinstance(getattr(info.value, FAILED_AT_ATTR), float)


def test_an_existing_group_is_reused_and_left_alone() -> None:
    with distributed_world() as outer:
        with distributed_world() as inner:
            assert inner == outer
        assert dist.is_initialized()
    assert not dist.is_initialized()


def test_two_ranks_see_their_world_and_average_across_it() -> None:
    results = h.suite_results(2)
    assert sorted(results) == [0, 1]
    world = results[0]["world"]
    assert (world.rank, world.world_size, world.backend) == (0, 2, "gloo")
    assert results[0]["mean_of_ranks"] == 0.5
    assert results[0]["mean_tensor"] == [0.5, 2.0]


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_same_seed_and_rank_give_the_same_streams() -> None:
    seed_everything(7, 1)
    first = _draws()
    seed_everything(7, 1)
    assert _draws() == first
    seed_everything(7, 0)
    other_rank = _draws()
    seed_everything(8, 1)
    other_seed = _draws()
    # Every generator differs, not just one of them.
    assert all(a != b for a, b in zip(first, other_rank, strict=True))
    assert all(a != b for a, b in zip(first, other_seed, strict=True))
    # (seed, rank) is mixed, not added: (7, 1) and (8, 0) are different streams.
    seed_everything(8, 0)
    assert _draws() != first


# --- stopping together ---------------------------------------------------------------------


def test_ranks_stop_together_one_call_after_any_rank_asks() -> None:
    """Rank 1 alone sees Ctrl-C from call 3; both ranks answer True from call 4 on, the
    same call, although they run out of step (the all-reduce is read one call late)."""
    traces = {rank: r["stop_trace"] for rank, r in h.session_results(2).items()}
    assert traces == {0: [False] * 4 + [True] * 3, 1: [False] * 4 + [True] * 3}


def test_one_rank_stops_at_once() -> None:
    from llm_gym.runner.stop_agreement import StopAgreement

    assert h.session_results(1)[0]["stop_trace"] == [False] * 7  # rank 1 does not exist
    agreement = StopAgreement(World(rank=0, local_rank=0, world_size=1,
                                    device=torch.device("cpu"), backend="gloo"))
    assert agreement.agreed(False) is False and agreement.agreed(True) is True
