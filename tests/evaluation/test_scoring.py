"""Batched, padded scoring equals scoring each sequence alone; truncation and rolling
windows keep the tokens they promise to."""

from __future__ import annotations

import pytest
import torch

from llm_gym.evaluation.multiple_choice import EncodedExample, ExampleScore, score_example
from llm_gym.evaluation.scoring import continuation_window, rolling_windows, score_windows
from llm_gym_components.models.gpt2 import GPT2

MAX_LEN = 16


@pytest.fixture(scope="module")
def model() -> GPT2:
    torch.manual_seed(0)
    m = GPT2(vocab_size=50, n_positions=MAX_LEN, n_embd=16, n_layer=2, n_head=2)
    m.init_weights()
    return m.eval()


def direct_logprob(model: GPT2, context: list[int], continuation: list[int]) -> float:
    """The continuation's log-probability from one unpadded sequence, no batching."""
    full = (context + continuation)[-(MAX_LEN + 1):]
    with torch.no_grad():
        logp = model(torch.tensor([full[:-1]]))[0].log_softmax(-1)
    n = len(continuation)
    return sum(float(logp[len(full) - 1 - n + j, t]) for j, t in enumerate(continuation))


def test_all_choices_in_one_padded_pass_equal_each_alone(model) -> None:
    context = [3, 7, 9, 11]
    choices = [[5], [6, 8, 2, 4, 4, 1], [40, 41, 42]]  # different lengths: padding
    example = EncodedExample(context, choices, [1, 6, 3], answer=1)
    score = score_example(model, example, MAX_LEN, torch.device("cpu"))
    expected = [direct_logprob(model, context, c) for c in choices]
    assert score.logprobs == pytest.approx(expected, abs=1e-5)
    assert not score.truncated


def test_a_long_context_is_cut_from_the_left_and_counted(model) -> None:
    context, continuation = list(range(1, 30)), [7, 8, 9]
    window = continuation_window(context, continuation, MAX_LEN)
    assert window.truncated and len(window.inputs) == MAX_LEN
    assert window.targets[-3:] == continuation and window.inputs[-2:] == [7, 8]
    sums, _ = score_windows(model, [window], torch.device("cpu"))
    assert float(sums[0]) == pytest.approx(direct_logprob(model, context, continuation),
                                           abs=1e-5)
    assert not continuation_window(list(range(1, 14)), continuation, MAX_LEN).truncated


@pytest.mark.parametrize("n", [1, 15, 16, 17, 40])
def test_rolling_windows_score_every_token_once(model, n) -> None:
    tokens = [(7 * i) % 50 for i in range(n)]
    windows = rolling_windows(tokens, prefix=49, max_len=MAX_LEN)
    assert all(len(w.inputs) <= MAX_LEN for w in windows)
    assert [t for w in windows for t in w.targets[-w.scored:]] == tokens
    if n <= MAX_LEN:  # one window: the document after the prefix, scored whole
        sums, _ = score_windows(model, windows, torch.device("cpu"))
        assert float(sums[0]) == pytest.approx(direct_logprob(model, [49], tokens), abs=1e-5)


def test_acc_norm_divides_by_the_choice_bytes() -> None:
    score = ExampleScore([-10.0, -12.0], choice_bytes=[5, 20], answer=1, truncated=False)
    assert score.predicted == 0 and score.predicted_norm == 1
