"""Reading ahead on a thread must not change which batches a run sees, nor a resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_gym.data.packed import PackedWriter
from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.runner.data_feed import BatchFeed


@pytest.fixture
def prefix(tmp_path):
    rng = np.random.default_rng(0)
    with PackedWriter(tmp_path / "p", vocab_size=1000, eod_id=999, fingerprint="t") as w:
        for _ in range(50):
            w.add_document(rng.integers(0, 999, size=int(rng.integers(20, 200))))
    return tmp_path / "p"


def _batches(feed: BatchFeed, n: int) -> list[torch.Tensor]:
    return [feed.next() for _ in range(n)]


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_feed_yields_the_dataset_order_and_resumes_exactly(prefix, prefetch):
    cpu = torch.device("cpu")
    reference = BatchFeed(PackedMemMapDataset(prefix, 16, seed=1), 4, cpu, 0)
    expected = _batches(reference, 20)

    feed = BatchFeed(PackedMemMapDataset(prefix, 16, seed=1), 4, cpu, prefetch)
    first = _batches(feed, 7)
    state = feed.state_dict()  # the position after batch 7, although the thread read on
    feed.close()
    resumed = BatchFeed(PackedMemMapDataset(prefix, 16, seed=1), 4, cpu, prefetch)
    resumed.load_state_dict(state)
    rest = _batches(resumed, 13)
    resumed.close()
    assert all(torch.equal(a, b) for a, b in zip(first + rest, expected, strict=True))
    assert feed.wait_seconds >= 0.0


def test_a_failing_dataset_surfaces_in_the_loop(prefix):
    class Broken:
        def state_dict(self):
            return {}

        def next_batch(self, n):
            raise OSError("disk gone")

    feed = BatchFeed(Broken(), 4, torch.device("cpu"), 2)
    with pytest.raises(RuntimeError, match="data feed thread failed") as caught:
        feed.next()
    assert isinstance(caught.value.__cause__, OSError)
    feed.close()
