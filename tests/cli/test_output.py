"""User text reaches the terminal literally: no emoji codes, no markup, in every message."""

from __future__ import annotations

import pytest

from llm_gym.cli import output
from llm_gym.cli.main import main
from llm_gym.errors import UserError

# rich would turn the first into an emoji, eat the second and crash on the third.
TRICKY = ":x: [bold]not bold[/] [/oops]"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.mark.parametrize("say", [output.warn, output.note,
                                 lambda m: output.print_error(UserError(m, [m])),
                                 lambda m: output.out.print(m), lambda m: output.err.print(m)])
def test_helpers_and_consoles_print_user_text_literally(capsys, say) -> None:
    say(f"path {TRICKY}")
    captured = capsys.readouterr()
    assert f"path {TRICKY}" in captured.out + captured.err


@pytest.mark.parametrize("args", [
    ("recipe", "validate", f"/nonexistent/{TRICKY}/r.yaml"),
    ("plot", f"/nonexistent/{TRICKY}"),
    ("recipe", "validate", "gpt2-debug", "--recipe-dir", f"/nonexistent/{TRICKY}"),
    ("recipe", "validate", "gpt2-debug", f"trainer.sample_prompt={TRICKY}", "trainer.x=1"),
])
def test_a_path_in_an_error_is_printed_as_given(capsys, args) -> None:
    code, text = _cli(capsys, *args)
    assert code == 2
    assert TRICKY in text
    assert "Traceback" not in text and "\u274c" not in text  # the :x: emoji
