"""Checkpoints: resume equals an uninterrupted run; saves are atomic; damage is a UserError."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xxhash

from llm_gym.errors import UserError
from llm_gym.runner import checkpoint as ckpt
from llm_gym.runner.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from llm_gym.runner.checkpoint_dirs import run_id, temp_path
from llm_gym.runner.distributed import distributed_world
from llm_gym.runner.launcher import launch_local

from . import dist_helpers as h

K = h.RESUME_K  # save at step K, resume, train to 2K


def _copy_checkpoint(src_run: Path, step: int, dst_run: Path) -> None:
    (dst_run / ckpt.CHECKPOINTS).mkdir(parents=True)
    shutil.copytree(checkpoint_path(src_run, step), checkpoint_path(dst_run, step))


def _assert_same_run(full: dict, resumed: dict) -> None:
    assert resumed["resumed_from"]["step"] == K
    assert list(resumed["losses"]) == list(range(K + 1, 2 * K + 1))
    # Bitwise: the resumed run is the same computation, not an approximation of it.
    assert {s: full["losses"][s] for s in resumed["losses"]} == resumed["losses"]
    assert resumed["data_position"] == full["data_position"]


def _assert_same_state(full: dict, resumed: dict) -> None:
    assert full["state"].keys() == resumed["state"].keys()
    for name, value in full["state"].items():
        assert torch.equal(resumed["state"][name], value), name


def test_resume_in_one_process_is_bitwise_identical(tmp_path: Path) -> None:
    session = h.session_results(1)[0]
    full = session["full_run"]
    _copy_checkpoint(Path(session["run_dir"]), K, tmp_path / "resumed")
    # The RNG streams have moved on in this process; the checkpoint must bring them back.
    random.random(), np.random.rand(), torch.rand(1)
    resumed = h.train_with_checkpoints(str(tmp_path / "resumed"), 2 * K, K, resume=True)
    _assert_same_run(full, resumed)
    _assert_same_state(full, resumed)


def _damage(path: Path, how: str) -> None:
    if how == "missing shard":
        (path / "__1_0.distcp").unlink()
    elif how == "truncated metadata":
        (path / ".metadata").write_bytes((path / ".metadata").read_bytes()[:40])
    elif how == "corrupt shard":
        (path / "__0_0.distcp").write_bytes(b"not a shard")
    elif how == "corrupt rank file":
        (path / "rank1.pt").write_bytes(b"garbage")
    elif how == "flipped bytes":  # same size: only the digest can tell
        data = bytearray((path / "__1_0.distcp").read_bytes())
        data[-100:-96] = bytes(b ^ 0xFF for b in data[-100:-96])
        (path / "__1_0.distcp").write_bytes(bytes(data))


DAMAGES = ["missing shard", "truncated metadata", "corrupt shard", "corrupt rank file",
           "flipped bytes"]
# The file each damage must be named by, on every rank (each rank digests only some of
# the files: the names reach the others through the reduction).
DAMAGED_FILE = {"missing shard": "__1_0.distcp", "truncated metadata": ".metadata",
                "corrupt shard": "__0_0.distcp", "corrupt rank file": "rank1.pt",
                "flipped bytes": "__1_0.distcp"}


def test_resume_in_two_processes_and_damage_is_reported_on_every_rank(tmp_path: Path) -> None:
    sessions = h.session_results(2)
    full = {rank: s["full_run"] for rank, s in sessions.items()}
    full_dir = Path(sessions[0]["run_dir"])
    _copy_checkpoint(full_dir, K, tmp_path / "resumed")
    damaged = []
    for how in DAMAGES:
        path = tmp_path / how.replace(" ", "_")
        shutil.copytree(checkpoint_path(full_dir, K), path)
        _damage(path, how)
        damaged.append(str(path))

    resumed = launch_local(
        2, h.train_with_checkpoints, (str(tmp_path / "resumed"), 2 * K, K, True, tuple(damaged))
    )
    for rank in (0, 1):
        _assert_same_run(full[rank], resumed[rank])
        for how, path, probe in zip(DAMAGES, damaged, resumed[rank]["probes"], strict=True):
            assert probe["error"] == "UserError", (path, probe)
            assert path in probe["message"]
            assert f"{path}/{DAMAGED_FILE[how]}" in probe["message"], (rank, probe)
    _assert_same_state(full[0], resumed[0])
    # Ranks see different data: the per-rank position really is per rank.
    assert full[0]["data_position"] != full[1]["data_position"]
    # Each rank's files are recorded, with their digests.
    saved = checkpoint_path(full_dir, K)
    files = json.loads((saved / ckpt.MARKER).read_text())["files"]
    assert set(files) == {p.name for p in saved.iterdir()} - {ckpt.MARKER}
    assert {"__0_0.distcp", "__1_0.distcp", "rank0.pt", "rank1.pt", ".metadata"} <= set(files)
    for name, digest in files.items():
        data = (saved / name).read_bytes()
        assert digest == {"bytes": len(data), "xxh3_128": xxhash.xxh3_128(data).hexdigest()}

    # The 2-process checkpoint cannot be resumed by 1 process.
    with distributed_world() as world, pytest.raises(UserError) as info:
        model = h.build(world)
        load_checkpoint(
            checkpoint_path(full_dir, K),
            model=model,
            optimizer=h.make_optimizer(model, "adamw"),
            world=world,
        )
    assert "2 processes" in str(info.value) and "has 1" in str(info.value)
    assert str(checkpoint_path(full_dir, K)) in str(info.value)


def _save_steps(run_dir: Path, steps: list[int], keep_last: int | None = 3) -> None:
    with distributed_world() as world:
        model = h.build(world)
        optimizer = h.make_optimizer(model, "sgd")
        for step in steps:
            save_checkpoint(
                run_dir,
                step,
                model=model,
                optimizer=optimizer,
                world=world,
                extra={"step": step},
                keep_last=keep_last,
            )


def _steps_on_disk(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / ckpt.CHECKPOINTS).iterdir())


def test_keep_last_prunes_older_complete_checkpoints(tmp_path: Path) -> None:
    _save_steps(tmp_path, [1, 2, 3, 4, 5], keep_last=2)
    assert _steps_on_disk(tmp_path) == ["step_00000004", "step_00000005"]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 5)
    marker = json.loads((checkpoint_path(tmp_path, 5) / ckpt.MARKER).read_text())
    assert marker["step"] == 5 and marker["world_size"] == 1


def test_keep_last_none_keeps_everything_and_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    _save_steps(tmp_path, [1, 2, 2], keep_last=None)
    assert _steps_on_disk(tmp_path) == ["step_00000001", "step_00000002"]


def test_incomplete_checkpoints_are_ignored_and_only_this_runs_are_cleaned_up(
    tmp_path: Path,
) -> None:
    _save_steps(tmp_path, [1])
    root = tmp_path / ckpt.CHECKPOINTS
    final = checkpoint_path(tmp_path, 9)
    crashed = temp_path(final, run_id(tmp_path), "123-0000abcd")  # this run's crashed save
    shutil.copytree(checkpoint_path(tmp_path, 1), crashed)  # even with a marker inside
    foreign = [root / "step_00000009.tmp",  # whose? (an older llm_gym, another run)
               temp_path(final, run_id(tmp_path / ckpt.CHECKPOINTS), "123-0000abcd")]
    for other in foreign:
        shutil.copytree(checkpoint_path(tmp_path, 1), other)
    (root / "step_00000008").mkdir()  # no marker: not complete
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1)

    _save_steps(tmp_path, [2])
    assert not crashed.exists()
    assert all(other.is_dir() for other in foreign)
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 2)


def test_a_crash_mid_save_leaves_the_previous_checkpoint_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save_steps(tmp_path, [1])

    def dying_save(state: dict, checkpoint_id: Path, **_: object) -> None:
        (Path(checkpoint_id) / "__0_0.distcp").write_bytes(b"half written")
        # What DCP raises on every rank: each failed rank's (exception, traceback).
        raise ckpt.dcp.CheckpointException("write", {0: (OSError("disk full"), [])})

    monkeypatch.setattr(ckpt.dcp, "save", dying_save)
    with pytest.raises(RuntimeError, match="OSError: disk full"):
        _save_steps(tmp_path, [2])
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1)
    with distributed_world() as world:
        model = h.build(world)
        extra = load_checkpoint(
            latest_checkpoint(tmp_path),
            model=model,
            optimizer=h.make_optimizer(model, "sgd"),
            world=world,
        )
    assert extra == {"step": 1}


def test_an_unwritable_run_dir_is_a_user_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "a_file"
    run_dir.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write checkpoints under"):
        _save_steps(run_dir, [1])


def test_no_checkpoint_yet(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("damage", ["no marker", "truncated metadata", "no rank file"])
def test_damaged_checkpoint_is_a_user_error_naming_it(tmp_path: Path, damage: str) -> None:
    _save_steps(tmp_path, [1])
    path = checkpoint_path(tmp_path, 1)
    if damage == "no marker":
        (path / ckpt.MARKER).unlink()
    elif damage == "truncated metadata":
        (path / ".metadata").write_bytes(b"\x80\x04")
    else:
        (path / "rank0.pt").unlink()
    with distributed_world() as world, pytest.raises(UserError, match=str(path)):
        model = h.build(world)
        load_checkpoint(path, model=model, optimizer=h.make_optimizer(model, "sgd"), world=world)


def test_extra_that_weights_only_load_would_refuse_fails_at_save_time(tmp_path: Path) -> None:
    with distributed_world() as world:
        model = h.build(world)
        with pytest.raises(TypeError, match="weights_only"):
            save_checkpoint(
                tmp_path,
                1,
                model=model,
                optimizer=None,
                world=world,
                extra={"sampler": object()},
            )
    assert latest_checkpoint(tmp_path) is None


def test_model_only_checkpoint_round_trips(tmp_path: Path) -> None:
    with distributed_world() as world:
        model = h.build(world)
        saved = h.full_state(model)
        save_checkpoint(tmp_path, 3, model=model, optimizer=None, world=world, extra={"a": [1]})
        other = h.build(world)
        with torch.no_grad():
            for p in other.parameters():
                p.zero_()
        extra = load_checkpoint(
            checkpoint_path(tmp_path, 3), model=other, optimizer=None, world=world
        )
        loaded = h.full_state(other)
    assert extra == {"a": [1]}
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # cached gaussians are state too
    state = capture_rng_state()
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3), torch.rand(3))
    torch.save(state, tmp_path / "rng.pt")
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), random.gauss(0, 1), np.random.rand(3), torch.rand(3))
    assert got[:2] == expected[:2]
    np.testing.assert_array_equal(got[2], expected[2])
    assert torch.equal(got[3], expected[3])
