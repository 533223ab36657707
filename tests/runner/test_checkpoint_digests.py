"""Every file of a checkpoint has its digest in the marker; a changed file is named on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import xxhash

from llm_gym.errors import UserError
from llm_gym.runner import checkpoint as ckpt
from llm_gym.runner.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from llm_gym.runner.distributed import distributed_world

from . import dist_helpers as h


def _xxh3(data: bytes) -> str:
    """XXH3-128 of the whole file, computed independently."""
    return xxhash.xxh3_128(data).hexdigest()


def _tree_sha256(data: bytes) -> str:
    """SHA-256 of the SHA-256 digests of the 8 MiB chunks (older checkpoints)."""
    chunks = range(0, len(data), 8 << 20)
    return hashlib.sha256(b"".join(hashlib.sha256(data[i:i + (8 << 20)]).digest()
                                   for i in chunks)).hexdigest()


def test_the_digest_is_xxh3_128_of_the_file_and_older_ones_still_compute(
        tmp_path: Path) -> None:
    from llm_gym.runner.checkpoint_digests import digest_bytes, digest_file

    for size in (0, 5, 8 << 20, (8 << 20) + 1, 3 * (8 << 20) + 7):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        (tmp_path / "f").write_bytes(data)
        expected = {"bytes": size, "xxh3_128": _xxh3(data)}
        assert digest_file(tmp_path / "f") == expected == digest_bytes(data), size
        assert digest_file(tmp_path / "f", "sha256_tree") == {
            "bytes": size, "sha256_tree": _tree_sha256(data)}
        assert digest_file(tmp_path / "f", "sha256") == {
            "bytes": size, "sha256": hashlib.sha256(data).hexdigest()}


def _save(run_dir: Path, step: int = 1) -> Path:
    with distributed_world() as world:
        model = h.build(world)
        save_checkpoint(run_dir, step, model=model, optimizer=h.make_optimizer(model, "adamw"),
                        world=world, extra={"step": step})
    return checkpoint_path(run_dir, step)


def _load(path: Path) -> dict:
    with distributed_world() as world:
        model = h.build(world)
        return load_checkpoint(path, model=model, optimizer=h.make_optimizer(model, "adamw"),
                               world=world)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("digests"))


def _copy(saved: Path, tmp_path: Path) -> Path:
    import shutil

    copy = checkpoint_path(tmp_path, 1)
    shutil.copytree(saved, copy)
    return copy


def test_the_marker_records_every_file_with_its_digest(saved: Path) -> None:
    files = json.loads((saved / ckpt.MARKER).read_text())["files"]
    on_disk = {p.name for p in saved.iterdir()} - {ckpt.MARKER}
    assert set(files) == on_disk == {".metadata", "__0_0.distcp", "rank0.pt"}
    for name, digest in files.items():
        data = (saved / name).read_bytes()
        assert digest == {"bytes": len(data), "xxh3_128": _xxh3(data)}


@pytest.mark.parametrize("name", [".metadata", "__0_0.distcp", "rank0.pt"])
def test_four_flipped_bytes_are_named(saved: Path, tmp_path: Path, name: str) -> None:
    path = _copy(saved, tmp_path)
    assert _load(path) == {"step": 1}  # the copy loads before the damage
    data = bytearray((path / name).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4] = bytes(b ^ 0x5A for b in data[middle:middle + 4])
    (path / name).write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        _load(path)
    assert f"{path / name} (its content differs" in str(info.value)


def test_a_truncated_file_and_a_missing_one_are_both_named(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    (path / "__0_0.distcp").write_bytes((path / "__0_0.distcp").read_bytes()[:-1])
    (path / "rank0.pt").rename(path / "rank0.pt.moved")
    with pytest.raises(UserError) as info:
        _load(path)
    assert "missing rank0.pt" in str(info.value)
    (path / "rank0.pt.moved").rename(path / "rank0.pt")
    with pytest.raises(UserError, match="__0_0.distcp \\(its size differs"):
        _load(path)


def test_a_file_the_metadata_names_but_the_marker_does_not_is_refused(
    saved: Path, tmp_path: Path
) -> None:
    path = _copy(saved, tmp_path)
    marker = json.loads((path / ckpt.MARKER).read_text())
    del marker["files"]["__0_0.distcp"]
    (path / ckpt.MARKER).write_text(json.dumps(marker))
    with pytest.raises(UserError, match="__0_0.distcp \\(it has no digest"):
        _load(path)
