"""The digests are computed while DCP writes (not by reading the files back), they are the
digests of the bytes on disk whatever the sizes of the writes, and checkpoints whose
marker records an older digest (``sha256_tree``, whole-file ``sha256``) still load and
verify."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import xxhash

from llm_gym.errors import UserError
from llm_gym.runner import checkpoint as ckpt
from llm_gym.runner.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from llm_gym.runner.checkpoint_writer import DigestingWriter
from llm_gym.runner.distributed import distributed_world

from . import dist_helpers as h


def _tree(data: bytes, chunk: int = 8 << 20) -> str:
    return hashlib.sha256(b"".join(hashlib.sha256(data[i:i + chunk]).digest()
                                   for i in range(0, len(data), chunk))).hexdigest()


def test_writes_of_any_size_give_the_digest_of_the_file(tmp_path: Path) -> None:
    digests: dict = {}
    fs = DigestingWriter(tmp_path, digests).fs
    sizes = [0, 1, 63, 1, 64, 200, 64, 5, 128, 59, 3 * 64 + 17, 9 << 20, 3]
    data = bytes(i % 251 for i in range(sum(sizes)))
    with fs.create_stream(tmp_path / "f.tmp", "wb") as stream:
        at = 0
        for size in sizes:
            assert stream.write(memoryview(data)[at:at + size]) == size
            at += size
            assert stream.tell() == at
    fs.rename(tmp_path / "f.tmp", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == data
    assert digests == {"f": {"bytes": len(data), "xxh3_128": xxhash.xxh3_128(data).hexdigest()}}


def test_a_seek_is_refused(tmp_path: Path) -> None:
    """A digest in write order is the file's only if nothing is written out of order."""
    fs = DigestingWriter(tmp_path, {}).fs
    with pytest.raises(io.UnsupportedOperation), fs.create_stream(tmp_path / "f", "wb") as s:
        s.write(b"abc")
        s.seek(0)


def _save(run_dir: Path) -> Path:
    with distributed_world() as world:
        model = h.build(world)
        save_checkpoint(run_dir, 1, model=model, optimizer=h.make_optimizer(model, "adamw"),
                        world=world, extra={"step": 1})
    return checkpoint_path(run_dir, 1)


def _load(path: Path) -> dict:
    with distributed_world() as world:
        model = h.build(world)
        return load_checkpoint(path, model=model, optimizer=h.make_optimizer(model, "adamw"),
                               world=world)


def test_saving_reads_no_file_back_to_digest_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reading_back(path: Path) -> None:
        raise AssertionError(f"{path} was read back to digest it")

    monkeypatch.setattr(ckpt, "digest_file", no_reading_back)
    path = _save(tmp_path)
    monkeypatch.undo()
    assert _load(path) == {"step": 1}  # and the recorded digests verify


OLDER = {
    # whole-file SHA-256, before the hash tree
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),
    # SHA-256 over the 8 MiB chunks' SHA-256 digests, before XXH3
    "sha256_tree": _tree,
}


def _to_older(checkpoint: Path, algorithm: str) -> None:
    """The marker as an earlier llm_gym wrote it."""
    marker = json.loads((checkpoint / ckpt.MARKER).read_text())
    marker["files"] = {name: {"bytes": d["bytes"],
                              algorithm: OLDER[algorithm]((checkpoint / name).read_bytes())}
                       for name, d in marker["files"].items()}
    (checkpoint / ckpt.MARKER).write_text(json.dumps(marker))


@pytest.mark.parametrize("algorithm", sorted(OLDER))
def test_an_older_marker_loads_and_verifies(tmp_path: Path, algorithm: str) -> None:
    path = _save(tmp_path / "run")
    _to_older(path, algorithm)
    assert _load(path) == {"step": 1}
    shard = path / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        _load(path)
    assert f"{shard} (its content differs" in str(info.value)


def test_a_marker_naming_both_digests_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "run")
    marker = json.loads((path / ckpt.MARKER).read_text())
    marker["files"]["rank0.pt"]["sha256"] = "0" * 64
    (path / ckpt.MARKER).write_text(json.dumps(marker))
    with pytest.raises(UserError, match="files.rank0.pt must be"):
        _load(path)
