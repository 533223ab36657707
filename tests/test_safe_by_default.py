"""Opening someone else's recipe, run directory or checkpoint cannot execute code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from llm_gym.cli.main import main
from tests.conftest import REPO


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


def test_yaml_python_tags_are_refused_not_run(capsys, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'trainer: !!python/object/apply:os.system ["touch {marker}"]\n')
    code, out = _cli(capsys, "recipe", "validate", str(evil))
    assert code == 2 and "evil.yaml:1" in out and "python/object" in out
    assert not marker.exists()


@pytest.mark.parametrize("hint", ["torch.optim.Adam", "os.system", "builtins.eval"])
def test_type_hint_never_imports_a_dotted_path(capsys, hint):
    code, out = _cli(capsys, "recipe", "validate", "gpt2-debug", f"optimizer.type_hint={hint}")
    assert code == 2 and "no optimizer named" in out


def test_every_torch_load_is_weights_only():
    offenders = []
    for path in [*(REPO / "llm_gym").rglob("*.py"), *(REPO / "components").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in node.keywords)
                if not safe:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_checkpoint_of_another_model_size_is_refused_by_name(tmp_path, use_demo_cache):
    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug", "--run-dir",
            str(run_dir), "trainer.max_steps=2", "trainer.eval_every=null"]
    subprocess.run(base, check=True, capture_output=True)
    before = sorted(p.name for p in Path(run_dir, "checkpoints").iterdir())
    result = subprocess.run([*base, "model.config.n_embd=64"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "step_00000002" in result.stderr and "model.config.n_embd" in result.stderr
    assert "32 -> 64" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in Path(run_dir, "checkpoints").iterdir()) == before
