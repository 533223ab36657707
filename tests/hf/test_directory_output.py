"""Writing a directory's files as one: all appear or none, nothing else is touched, and a
failure at any point (full disk, an exception, Ctrl-C, a rename that fails mid-swap)
leaves the target byte-for-byte as it was and no temporary directory behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.hf.directory_output import directory_output
from llm_gym.hf.export import export_hf
from llm_gym.hf.importing import import_hf
from llm_gym.runner.loading_model import load_run_model
from tests.hf.conftest import max_diff, random_ids


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path beside and under ``root`` (so temporary siblings show), relative to
    ``root``'s parent, with its bytes (None for a directory)."""
    base = root.parent
    return {str(p.relative_to(base)): None if p.is_dir() else p.read_bytes()
            for p in sorted(base.rglob("*"))}


def write_two(output, first: bytes = b"new config", second: bytes = b"new weights") -> None:
    (output.path / "config.json").write_bytes(first)
    (output.path / "model.safetensors").write_bytes(second)


@pytest.fixture
def full(tmp_path: Path) -> Path:
    """A directory that already holds an older export and someone else's file."""
    target = tmp_path / "parent" / "out"
    target.mkdir(parents=True)
    (target / "config.json").write_bytes(b"old config")
    (target / "model.safetensors").write_bytes(b"old weights")
    (target / "README.md").write_bytes(b"not ours")
    return target


def test_a_fresh_target_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out"
    with directory_output(target, replace_files=False, refusal="-") as output:
        write_two(output)
        assert not target.exists()  # nothing is visible before the block ends
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors"]
    assert os.listdir(target.parent) == ["out"]  # no temporary directory left


def test_an_empty_target_is_replaced_keeping_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir(mode=0o750)
    os.chmod(target, 0o750)
    with directory_output(target, replace_files=False, refusal="-") as output:
        write_two(output)
    assert (target / "config.json").read_bytes() == b"new config"
    assert oct(target.stat().st_mode & 0o777) == oct(0o750)


@pytest.mark.parametrize("failure", [RuntimeError("halfway"), KeyboardInterrupt(),
                                     OSError(errno.ENOSPC, "No space left on device")])
def test_a_failed_write_leaves_nothing(tmp_path: Path, failure: BaseException) -> None:
    target = tmp_path / "new" / "deeper" / "out"
    before = tree(tmp_path / "sibling")
    with pytest.raises((type(failure), UserError)) as info:
        with directory_output(target, replace_files=False, refusal="-") as output:
            (output.path / "config.json").write_bytes(b"half")
            raise failure
    if isinstance(failure, OSError):
        assert info.type is UserError
        assert str(info.value) == (f"{target}: cannot write the output: No space left on "
                                   f"device; {target} is unchanged")
    assert tree(tmp_path / "sibling") == before  # the parents it created are gone too


def test_a_full_target_is_refused_unless_replacing_is_allowed(full: Path) -> None:
    before = tree(full)
    with pytest.raises(UserError) as info:
        with directory_output(full, replace_files=False, refusal="pass --force"):
            pytest.fail("the block must not run")
    assert str(info.value) == (f"{full}: is not empty (it holds README.md, config.json, "
                               "model.safetensors); pass --force")
    assert tree(full) == before


def test_replacing_touches_only_the_files_written(full: Path) -> None:
    readme = (full / "README.md").stat()
    with directory_output(full, replace_files=True, refusal="-") as output:
        write_two(output)
        (output.path / "tokenizer.json").write_bytes(b"{}")
    assert output.replaced == ["config.json", "model.safetensors"]
    assert output.kept == ["README.md"]
    assert (full / "config.json").read_bytes() == b"new config"
    assert (full / "tokenizer.json").read_bytes() == b"{}"
    assert (full / "README.md").read_bytes() == b"not ours"
    assert (full / "README.md").stat().st_mtime_ns == readme.st_mtime_ns
    assert sorted(os.listdir(full.parent)) == ["out"]


@pytest.mark.parametrize("failing_call", [1, 2, 3])
@pytest.mark.parametrize("failure", [OSError(errno.EIO, "Input/output error"),
                                     KeyboardInterrupt()])
def test_a_failure_mid_swap_puts_every_old_file_back(
    full: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int, failure: BaseException
) -> None:
    before = tree(full)
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == failing_call:
            raise failure
        return real_replace(src, dst, *args, **kwargs)

    with pytest.raises((UserError, KeyboardInterrupt)):
        with directory_output(full, replace_files=True, refusal="-") as output:
            write_two(output)
            (output.path / "vocab.json").write_bytes(b"{}")  # a new name: removed again
            monkeypatch.setattr(os, "replace", flaky_replace)
    monkeypatch.undo()
    assert len(calls) >= failing_call  # (the rollback renames too)
    assert tree(full) == before


def test_a_name_held_by_a_directory_is_not_replaced(full: Path) -> None:
    (full / "model.safetensors").unlink()
    (full / "model.safetensors").mkdir()
    before = tree(full)
    with pytest.raises(UserError, match="model.safetensors: is not a regular file"):
        with directory_output(full, replace_files=True, refusal="-") as output:
            write_two(output)
    assert tree(full) == before


def test_an_unwritable_parent_is_a_user_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def denied(*args, **kwargs):  # the tests run as root, which chmod would not stop
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(UserError, match=f"{tmp_path / 'out'}: cannot write the output: "
                       "Permission denied"):
        with directory_output(tmp_path / "out", replace_files=False, refusal="-"):
            pass
    assert os.listdir(tmp_path) == []


def test_a_disk_full_halfway_through_an_export_changes_nothing(
    debug_run: Path, full: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second file of the export fails to write: the earlier export stays whole."""
    import llm_gym.hf.files as files

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "save_file", full_disk)  # after config.json is written
    before = tree(full)
    with pytest.raises(UserError, match="No space left on device.*is unchanged"):
        export_hf(debug_run, full, force=True)
    assert tree(full) == before


def test_export_into_the_directory_an_import_came_from_loses_nothing(
    debug_run: Path, tmp_path: Path, shared_registry
) -> None:
    source = export_hf(debug_run, tmp_path / "source", registry=shared_registry).out_dir
    (source / "special_tokens_map.json").write_text('{"eos_token": "x"}')  # not written
    (source / "README.md").write_text("the model card\n")
    imported = import_hf(source, tmp_path / "run", base="gpt2-debug", registry=shared_registry)
    others = {n: (source / n).read_bytes() for n in ("special_tokens_map.json", "README.md")}
    with pytest.raises(UserError, match="is not empty"):
        export_hf(imported.run_dir, source, registry=shared_registry)
    result = export_hf(imported.run_dir, source, force=True, registry=shared_registry)
    assert result.files == ["config.json", "model.safetensors"]
    assert {n: (source / n).read_bytes() for n in others} == others
    ids = random_ids(vocab_size=257, seq=32)
    original = load_run_model(debug_run, registry=shared_registry).model
    again = import_hf(source, tmp_path / "again", base="gpt2-debug", registry=shared_registry)
    with torch.no_grad():
        assert max_diff(original(ids), load_run_model(again.run_dir).model(ids)) == 0.0
    # The imported run reads its own copy, which the export did not touch.
    assert load_run_model(imported.run_dir, registry=shared_registry).checkpoint is None


def test_a_disk_full_during_an_import_leaves_no_run_directory(
    debug_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_registry
) -> None:
    import llm_gym.hf.importing as importing

    source = export_hf(debug_run, tmp_path / "source", registry=shared_registry).out_dir
    before = tree(source)

    def full_disk(*args, **kwargs):  # the last file, after the model and the tokenizer
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(importing, "atomic_output", full_disk)
    with pytest.raises(UserError, match=f"{tmp_path / 'runs' / 'new'}: cannot write the "
                       "output: No space left on device"):
        import_hf(source, tmp_path / "runs" / "new", base="gpt2-debug",
                  registry=shared_registry)
    assert sorted(os.listdir(tmp_path)) == ["source"]  # not even the parent it made
    assert tree(source) == before
