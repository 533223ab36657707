"""Bad input to `generate`, `export hf` and `import hf`, one table: each is a short error
naming what is wrong (exit code 2, no traceback), and every file involved is left
byte-for-byte as it was, with no temporary directory left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym.hf.export import export_hf
from llm_gym.hf.files import write_json
from llm_gym.hf.importing import import_hf
from llm_gym.hf.safetensors import read_header


@pytest.fixture(scope="module")
def world(debug_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run, a Hugging Face directory exported from it (with someone else's files), a run
    imported from that, crafted directories, a non-empty one and a plain file."""
    root = tmp_path_factory.mktemp("bad-inputs")
    hf = export_hf(debug_run, root / "hf").out_dir
    (hf / "README.md").write_text("not the export's\n")
    imported = import_hf(hf, root / "imported", base="gpt2-debug").run_dir
    # A run whose recipe reads the imported weights from outside its own directory.
    reader = root / "reader"
    reader.mkdir()
    shutil.copy(imported / "recipe.resolved.yaml", reader)
    config = json.loads((hf / "config.json").read_text())
    weights = (hf / "model.safetensors").read_bytes()

    def crafted(name: str, changes: dict, data: bytes = weights) -> None:
        (root / name).mkdir()
        write_json(root / name / "config.json", {**config, **changes})
        (root / name / "model.safetensors").write_bytes(data)

    crafted("huge-embd", {"n_embd": 10**6, "n_head": 1})
    crafted("huge-layers", {"n_layer": 10**5})
    crafted("bad-eos", {"eos_token_id": 10**30})
    crafted("nested", {}, data=(100_000).to_bytes(8, "little") + b"[" * 100_000)
    (root / "deep-config").mkdir()
    (root / "deep-config" / "config.json").write_text("[" * 100_000)
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("mine\n")
    (root / "afile").write_text("a file\n")
    return {"run": debug_run, "root": root, "hf": hf, "imported": imported, "reader": reader}


def snapshot(*roots: Path) -> dict[str, bytes | None]:
    """Every path under ``roots`` with its bytes (None for a directory)."""
    found: dict[str, bytes | None] = {}
    for root in roots:
        for path in sorted([root, *root.rglob("*")]):
            found[str(path)] = None if path.is_dir() else path.read_bytes()
    return found


RUN, ROOT, HF, IMPORTED, READER = "{run}", "{root}", "{hf}", "{imported}", "{reader}"
# argv (placeholders filled from `world`), fragments the error must contain.
CASES = [
    (["generate", RUN, "--temperature", "nan"], ["--temperature", "'nan' is not a finite"]),
    (["generate", RUN, "--temperature", "inf"], ["--temperature", "'inf' is not a finite"]),
    (["generate", RUN, "--temperature", "-inf"], ["--temperature", "finite"]),
    (["generate", RUN, "--temperature", "1e400"], ["--temperature", "finite"]),
    (["generate", RUN, "--temperature", "-1"], ["--temperature", "0<=x<=100"]),
    (["generate", RUN, "--temperature", "1e-40"], ["--temperature", "use 0 for greedy"]),
    (["generate", RUN, "--temperature", "warm"], ["--temperature", "not a valid float"]),
    (["generate", RUN, "--seed", str(2**64)], ["--seed", "18446744073709551615"]),
    (["generate", RUN, "--seed", "-1"], ["--seed"]),
    (["generate", RUN, "--seed", "1e3"], ["--seed", "not a valid integer"]),
    (["generate", RUN, "--seed", "9" * 5000], ["--seed"]),
    (["generate", RUN, "--max-new-tokens", str(10**12)], ["--max-new-tokens", "1000000"]),
    (["generate", RUN, "--max-new-tokens", "-1"], ["--max-new-tokens"]),
    (["generate", RUN, "--top-k", "258"], ["--top-k", "vocabulary of 257"]),
    (["generate", RUN, "--top-k", "0"], ["--top-k"]),
    (["generate", RUN, "--top-k", str(10**30)], ["--top-k"]),
    (["generate", RUN, "--top-p", "0"], ["--top-p", "keeps no token"]),
    (["generate", RUN, "--top-p", "1.5"], ["--top-p"]),
    (["generate", RUN, "--top-p", "nan"], ["--top-p", "finite"]),
    (["generate", RUN, "--stop", "a long stop text"], ["--stop", "exactly one token"]),
    (["generate", RUN, "--stop", ""], ["--stop", "is 0 tokens"]),
    (["generate", RUN, "--device", "meta"], ["--device", "cpu or cuda"]),
    (["generate", RUN, "--device", "cuda:99"], ["--device", "cuda:99"]),
    (["generate", RUN, "--device", "toaster"], ["--device", "not a device"]),
    (["generate", RUN, "--prompt", "caf\udce9"], ["--prompt", "UTF-8"]),
    (["export", "hf", RUN, f"{ROOT}/full"], ["full: is not empty", "keep.txt", "--force"]),
    (["export", "hf", RUN, HF], ["hf: is not empty", "README.md", "--force"]),
    (["export", "hf", RUN, RUN, "--force"], ["is the run directory"]),
    (["export", "hf", RUN, f"{RUN}/checkpoints", "--force"], ["is inside the run directory"]),
    (["export", "hf", IMPORTED, f"{IMPORTED}/hf", "--force"], ["inside the run directory"]),
    (["export", "hf", READER, f"{IMPORTED}/hf", "--force"],
     ["the run's recipe reads", "model.config.path"]),
    (["export", "hf", RUN, f"{ROOT}/afile"], ["afile: exists and is not a directory"]),
    (["export", "hf", RUN, f"{ROOT}/afile/sub"], ["cannot write the output", "is unchanged"]),
    (["import", "hf", f"{ROOT}/huge-embd", "--out", f"{ROOT}/new", "--recipe", "gpt2-debug"],
     ["n_embd=1000000", "transformer.wte.weight: shape (257, 32), expected (257, 1000000)"]),
    (["import", "hf", f"{ROOT}/huge-layers", "--out", f"{ROOT}/new", "--recipe", "gpt2-debug"],
     ["missing transformer.h.2.ln_1.weight", "n_layer=100000"]),
    (["import", "hf", f"{ROOT}/bad-eos", "--out", f"{ROOT}/new", "--recipe", "gpt2-debug"],
     ["config.json: eos_token_id 1000000000000000000000000000000", "0..256"]),
    (["import", "hf", f"{ROOT}/nested", "--out", f"{ROOT}/new", "--recipe", "gpt2-debug"],
     ["nested/model.safetensors: not a valid safetensors file", "nested too deeply"]),
    (["import", "hf", f"{ROOT}/deep-config", "--out", f"{ROOT}/new"],
     ["deep-config/config.json", "nested too deeply"]),
    (["import", "hf", HF, "--out", f"{ROOT}/full", "--recipe", "gpt2-debug"],
     ["full: is not empty", "keep.txt", "new (absent or empty) directory"]),
    (["import", "hf", HF, "--out", HF, "--recipe", "gpt2-debug"], ["hf: is not empty"]),
    (["import", "hf", HF, "--out", RUN], ["already a run directory"]),
    (["import", "hf", HF, "--out", f"{ROOT}/afile"], ["afile: exists and is not a directory"]),
]


@pytest.mark.usefixtures("one_registry")
@pytest.mark.parametrize(("argv", "fragments"), CASES,
                         ids=[" ".join(a[:1] + a[2:])[:60] for a, _ in CASES])
def test_bad_input_is_a_short_error_and_changes_nothing(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str],
    fragments: list[str],
) -> None:
    argv = [arg.format(**world) for arg in argv]
    watched = (world["root"], world["run"])
    before = snapshot(*watched)
    with pytest.raises(SystemExit) as info:  # anything but a UserError/usage error escapes
        main(argv)
    captured = capsys.readouterr()
    output = " ".join((captured.err + captured.out).split())  # rich wraps long lines
    assert info.value.code == 2, output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in output, output
    after = snapshot(*watched)
    assert sorted(after) == sorted(before), "paths appeared or vanished"
    assert after == before, "a file changed"


def test_crafted_sizes_fail_from_the_header_without_building_the_model(
    world: dict[str, Path], shared_registry, monkeypatch
) -> None:
    import resource

    from llm_gym.errors import UserError
    from llm_gym_components.models import gpt2

    def never(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was built before its sizes were checked")

    # A model of these sizes would take tens of GB (huge n_embd) or hang (huge n_layer):
    # the refusal must come from the header alone, before any module exists.
    monkeypatch.setattr(gpt2.GPT2, "__init__", never)
    assert read_header(world["root"] / "huge-embd" / "model.safetensors").tensors
    for name in ("huge-embd", "huge-layers"):
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(UserError, match="do not fit"):
            import_hf(world["root"] / name, world["root"] / "new", base="gpt2-debug",
                      registry=shared_registry)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        assert grown_mb < 100, f"{name}: peak RSS grew {grown_mb:.0f} MB"


@pytest.mark.usefixtures("one_registry")
@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "tokenizer_config.json"])
def test_a_fifo_in_the_source_is_refused_not_waited_on(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Every file of the source is opened once and checked on the open descriptor: a FIFO
    (which a reader would wait on forever) is an error naming it."""
    source = tmp_path / "src"
    shutil.copytree(world["hf"], source)
    (source / name).unlink(missing_ok=True)
    os.mkfifo(source / name)

    def blocked(*args: object) -> None:
        raise TimeoutError(f"the import blocked reading the FIFO {name}")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        with pytest.raises(SystemExit) as info:
            main(["import", "hf", str(source), "--out", str(tmp_path / "new"),
                  "--recipe", "gpt2-debug"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    output = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2, output
    assert f"{source / name}: is a FIFO (named pipe), not a regular file" in output, output
    assert not (tmp_path / "new").exists()
