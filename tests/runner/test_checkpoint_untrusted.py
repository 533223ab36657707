"""A checkpoint from elsewhere, end to end through the three commands that read one
(``generate``, ``export hf``, ``recipe run --resume``): a crafted file runs no code, a
damaged or malformed one is a short error naming the file (exit 2, no traceback), and
one whose tensors are not the model's is refused with the names."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from llm_gym.cli.main import main
from llm_gym.runner.checkpoint_digests import digest_file
from llm_gym.runner.checkpoint_metadata import read_metadata

TRAIN = ["trainer.max_steps=2", "trainer.eval_every=null"]
CHECKPOINT = Path("checkpoints") / "step_00000002"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Path:
    """gpt2-debug trained for 2 steps; tests copy it before changing anything."""
    from llm_gym.runner.entry import run_recipe

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_GYM_DEMO_CACHE", str(demo_cache))
        run_dir = tmp_path_factory.mktemp("untrusted") / "run"
        run_recipe("gpt2-debug", TRAIN, run_dir=run_dir)
    return run_dir


@pytest.fixture
def run(trained_run: Path, tmp_path: Path, use_demo_cache: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "generate": lambda run: ["generate", str(run), "--max-new-tokens", "2"],
    "export": lambda run: ["export", "hf", str(run), str(run.parent / "exported")],
    "resume": lambda run: ["recipe", "run", "gpt2-debug", "trainer.max_steps=3",
                           "trainer.eval_every=null", "--run-dir", str(run), "--resume"],
}


def _cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    code = 0
    try:
        main(args)
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _refused_by_all(capsys: pytest.CaptureFixture[str], run: Path, *expected: str) -> None:
    """Each command exits 2 with a message holding ``expected``, no traceback, and leaves
    the run directory byte-identical."""
    before = _snapshot(run)
    for name, command in COMMANDS.items():
        code, out = _cli(capsys, command(run))
        assert code == 2, (name, out)
        assert "Traceback" not in out, (name, out)
        for text in expected:
            assert text in out, (name, text, out)
        assert _snapshot(run) == before, name
        assert not (run.parent / "exported").exists(), name


def _rewrite_marker(checkpoint: Path, change: Callable[[dict], object]) -> None:
    marker = json.loads((checkpoint / "COMPLETE").read_text())
    result = change(marker)
    (checkpoint / "COMPLETE").write_text(json.dumps(marker if result is None else result))


def _record_digest(checkpoint: Path, name: str) -> None:
    """What an attacker who rewrites a file would do to the marker too."""
    digest = digest_file(checkpoint / name)
    _rewrite_marker(checkpoint, lambda m: m["files"].__setitem__(name, digest))


class _Payload:
    """Unpickled, it creates ``marker`` and then returns the real metadata: a load that
    unpickled it freely would leave no other trace."""

    def __init__(self, marker: Path, real: bytes) -> None:
        self.code = (f"(open({str(marker)!r}, 'w').close(), "
                     f"__import__('pickle').loads({real!r}))[1]")

    def __reduce__(self) -> tuple:
        return (eval, (self.code,))


def test_a_crafted_metadata_runs_no_code_in_any_command(capsys, run: Path) -> None:
    checkpoint = run / CHECKPOINT
    marker = run.parent / "pwned"
    crafted = pickle.dumps(_Payload(marker, (checkpoint / ".metadata").read_bytes()))
    (checkpoint / ".metadata").write_bytes(crafted)
    _record_digest(checkpoint, ".metadata")

    _refused_by_all(capsys, run, str(checkpoint / ".metadata"), "builtins.eval")
    assert not marker.exists()
    # The payload is real: plain unpickling runs it and returns working metadata.
    assert pickle.loads(crafted).state_dict_metadata and marker.exists()


def test_metadata_pointing_outside_the_checkpoint_is_refused(capsys, run: Path) -> None:
    checkpoint = run / CHECKPOINT
    metadata = read_metadata(checkpoint)
    outside = run.parent / "elsewhere.distcp"
    shutil.copy(checkpoint / "__0_0.distcp", outside)
    for info in metadata.storage_data.values():
        info.relative_path = "../../../elsewhere.distcp"
    (checkpoint / ".metadata").write_bytes(pickle.dumps(metadata))
    _record_digest(checkpoint, ".metadata")
    _refused_by_all(capsys, run, str(checkpoint / ".metadata"), "outside the checkpoint")


def _not_an_object(m: dict) -> object:
    return [m]


def _drop(key: str) -> Callable[[dict], None]:
    return lambda m: m.pop(key) and None


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda m: m.__setitem__(key, value)


MARKERS = {
    "not an object": (_not_an_object, "expected a JSON object"),
    "step a string": (_set("step", "2"), "step must be"),
    "step a float": (_set("step", 2.0), "step must be"),
    "world_size missing": (_drop("world_size"), "world_size must be"),
    "world_size a string": (_set("world_size", "1"), "world_size must be"),
    "world_size a bool": (_set("world_size", True), "world_size must be"),
    "step of another directory": (_set("step", 4), "records step 4"),
    "files not an object": (_set("files", ["x"]), "files must be"),
    "a digest not hex": (lambda m: m["files"]["rank0.pt"].__setitem__("xxh3_128", "zz"),
                         "files.rank0.pt"),
}


@pytest.mark.parametrize("case", MARKERS)
def test_a_malformed_marker_is_named_by_every_command(capsys, run: Path, case: str) -> None:
    change, expected = MARKERS[case]
    _rewrite_marker(run / CHECKPOINT, change)
    _refused_by_all(capsys, run, str(run / CHECKPOINT / "COMPLETE"), expected)


def test_a_marker_that_is_not_json_is_named_by_every_command(capsys, run: Path) -> None:
    (run / CHECKPOINT / "COMPLETE").write_text('{"step": 2, "world')
    _refused_by_all(capsys, run, str(run / CHECKPOINT / "COMPLETE"), "not readable JSON")


@pytest.mark.parametrize("how", ["truncated", "empty"])
@pytest.mark.parametrize("digests", ["recorded", "older checkpoint without"])
def test_truncated_or_empty_metadata_is_named_without_tracebacks(
    capsys, run: Path, how: str, digests: str
) -> None:
    checkpoint = run / CHECKPOINT
    data = (checkpoint / ".metadata").read_bytes()
    (checkpoint / ".metadata").write_bytes(data[:40] if how == "truncated" else b"")
    if digests != "recorded":
        _rewrite_marker(checkpoint, _drop("files"))
    expected = "differs from the one recorded" if digests == "recorded" else "damaged"
    _refused_by_all(capsys, run, str(checkpoint / ".metadata"), expected)


def test_flipped_bytes_in_a_shard_are_named_by_every_command(capsys, run: Path) -> None:
    shard = run / CHECKPOINT / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4] = bytes(b ^ 0xFF for b in data[len(data) // 2:][:4])
    shard.write_bytes(bytes(data))
    _refused_by_all(capsys, run, str(shard), "content differs")


def test_an_older_checkpoint_without_digests_loads_with_a_note(capsys, run: Path) -> None:
    _rewrite_marker(run / CHECKPOINT, _drop("files"))
    for name in ("generate", "resume"):
        code, out = _cli(capsys, COMMANDS[name](run))
        assert code == 0, out
        assert "not verified" in out and str(run / CHECKPOINT) in out, (name, out)


def _edit_model(run: Path, **changes: object) -> None:
    resolved = run / "recipe.resolved.yaml"
    data = yaml.safe_load(resolved.read_text())
    data["model"]["config"].update(changes)
    resolved.write_text(yaml.safe_dump(data))


TENSORS = {
    "fewer layers": ({"n_layer": 1}, ["in the checkpoint but not here: 12",
                                      "model.transformer.h.1.attn.c_attn.bias"]),
    "more layers": ({"n_layer": 3}, ["missing from the checkpoint: 12",
                                     "model.transformer.h.2.attn.c_attn.bias"]),
    "no biases": ({"bias": False}, ["in the checkpoint but not here: 13",
                                    "model.transformer.h.0.attn.c_attn.bias", "and 8 more"]),
    "wider": ({"n_embd": 64}, ["different shapes: 29", "model.lm_head.weight "
                               "(checkpoint [257, 32], here [257, 64])"]),
}


@pytest.mark.parametrize("case", TENSORS)
@pytest.mark.parametrize("command", ["generate", "export"])
def test_tensors_that_do_not_match_the_model_are_listed(
    capsys, run: Path, case: str, command: str
) -> None:
    changes, expected = TENSORS[case]
    _edit_model(run, **changes)
    code, out = _cli(capsys, COMMANDS[command](run))
    assert code == 2 and "Traceback" not in out, out
    assert str(run / CHECKPOINT) in out
    for text in expected:
        assert text in out, (text, out)


def test_an_alias_bomb_as_the_runs_resolved_recipe_is_refused_by_every_command(capsys, run):
    from tests.config.test_yaml_bounds import billion_laughs

    (run / "recipe.resolved.yaml").write_text(billion_laughs())
    _refused_by_all(capsys, run, "recipe.resolved.yaml", "expand")
