"""`recipe plan --mfu/--nodes/--gpus-per-node` and `recipe run --nproc` refuse nan, inf,
negative and huge values as usage errors naming the flag (exit 2), before any recipe is
loaded or any worker started."""

from __future__ import annotations

import pytest

from llm_gym.cli.main import main


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("the command ran with a value it should have refused")

    monkeypatch.setattr("llm_gym.runner.entry.run_recipe", reached)
    monkeypatch.setattr("llm_gym.recipes.loading.load_recipe", reached)


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.mark.parametrize(("args", "expected"), [
    (["--mfu", "nan"], "Invalid value for '--mfu': 'nan' is not a finite number"),
    (["--mfu", "inf"], "Invalid value for '--mfu': 'inf' is not a finite number"),
    (["--mfu", "0"], "Invalid value for '--mfu': 0.0 is not in the range 0<x<=1"),
    (["--mfu", "-1e400"], "Invalid value for '--mfu': '-1e400' is not a finite number"),
    (["--nodes", "0"], "Invalid value for '--nodes': 0 is not in the range 1<=x<=131072"),
    (["--nodes", str(10**20)], "Invalid value for '--nodes'"),
    (["--gpus-per-node", "-8"], "Invalid value for '--gpus-per-node'"),
    (["--gpus-per-node", str(2**64)], "Invalid value for '--gpus-per-node'"),
    (["--nodes", "100000", "--gpus-per-node", "8"],
     "'--nodes': 100000 x --gpus-per-node 8 = 800,000 ranks, more than the 131,072"),
])
def test_plan_refuses_numbers_it_cannot_use(capsys, args, expected):
    code, output = _cli(capsys, "recipe", "plan", "gpt2-debug", *args)
    assert code == 2 and expected in output, output
    assert "Traceback" not in output


@pytest.mark.parametrize("value", ["0", "-1", "100000", str(2**63)])
def test_run_refuses_a_worker_count_no_machine_has(capsys, value):
    code, output = _cli(capsys, "recipe", "run", "gpt2-debug", "--nproc", value)
    assert code == 2 and "Invalid value for '--nproc'" in output, output
