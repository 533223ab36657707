"""The mixture's batched reads (samples located per chunk and per plan, tokens moved by
groups) give exactly the samples its reference read gives, for any world size, batch
size, cursor and kind of source; reading changes no state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_gym.data import mixture as mixture_module
from llm_gym.data.batch import Batch
from llm_gym.data.mixture import CHUNK, MixtureDataset
from llm_gym.data.packed import PackedWriter
from llm_gym.data.packed_dataset import PackedMemMapDataset

SEQ = 8
OFFSET = 1_000_000


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix-reads")
    made = []
    for s, n in enumerate((4_001, 1_601, 2_401)):  # 500, 200, 300 blocks
        prefix = root / f"p{s}"
        with PackedWriter(prefix, vocab_size=4 * OFFSET, eod_id=4 * OFFSET - 1,
                          fingerprint="b" * 64) as w:
            tokens = np.arange(n, dtype=np.int64) + s * OFFSET
            w.add_documents(tokens, np.array([n // 3, n // 3, n - 2 * (n // 3)]))
        made.append(prefix)
    return made


class Plain:
    """A mixable source that is not a pack: only sample_tokens and document ids."""

    def __init__(self, pack: PackedMemMapDataset) -> None:
        self._pack, self.seq_len = pack, pack.seq_len

    @property
    def samples_per_epoch(self) -> int:
        return self._pack.samples_per_epoch

    def sample_tokens(self, samples: np.ndarray) -> np.ndarray:
        return self._pack.sample_tokens(samples)

    def sample_document_ids(self, samples: np.ndarray) -> np.ndarray:
        return self._pack.sample_document_ids(samples)


def _mix(prefixes, weights, rank=0, world_size=1, plain=False, **kwargs) -> MixtureDataset:
    sources = [PackedMemMapDataset(p, SEQ, seed=5) for p in prefixes[: len(weights)]]
    if plain:
        sources[1] = Plain(sources[1])
    return MixtureDataset(sources, weights, seed=11, rank=rank, world_size=world_size,
                          **kwargs)


@pytest.mark.parametrize(("world_size", "batch_size", "plain"),
                         [(1, 64, False), (1, 5, True), (3, 7, False), (4, 64, True)])
def test_batches_are_the_reference_reads(prefixes, monkeypatch, world_size, batch_size,
                                         plain) -> None:
    # Small plans and groups, so that reads cross plans, groups, chunks and epochs often.
    monkeypatch.setattr(mixture_module, "PLAN_ROWS", 3 * batch_size + 1)
    for rank in range(world_size):
        mix = _mix(prefixes, (3, 1, 2), rank, world_size, plain)
        mix._group_bytes = 2 * batch_size * (SEQ + 1) * 8
        reference = _mix(prefixes, (3, 1, 2), rank, world_size, plain)
        for _ in range(3 * CHUNK // (batch_size * world_size) + 3):
            start = mix.cursor + rank
            got = mix.next_batch(batch_size)
            want = reference.read(start, batch_size, world_size)
            assert torch.equal(got, torch.from_numpy(want))
        assert mix.cursor > 2 * CHUNK  # past two chunk boundaries and source epochs


def test_moving_the_cursor_and_the_batch_size_reads_the_same_samples(prefixes) -> None:
    mix, reference = _mix(prefixes, (3, 1)), _mix(prefixes, (3, 1))
    mix.next_batch(16)
    state = mix.state_dict()
    ahead = [mix.next_batch(16) for _ in range(5)]
    mix.load_state_dict(state)  # back, inside the group and the plan read before
    assert all(torch.equal(mix.next_batch(16), a) for a in ahead)
    for size in (3, 40, 1, 64):  # a new batch size mid-plan: located again
        start = mix.cursor
        assert torch.equal(mix.next_batch(size), torch.from_numpy(reference.read(start, size)))


def test_a_cursor_moved_into_the_middle_of_a_group_reads_from_there(prefixes) -> None:
    mix, reference = _mix(prefixes, (3, 1)), _mix(prefixes, (3, 1))
    mix._group_bytes = 32 * (SEQ + 1) * 8  # groups of 2 batches of 16
    mix.next_batch(16)  # group 0 (own samples 0-31) read, the plan goes on to 4096
    for _ in range(3):
        reference.next_batch(16)
    mix.load_state_dict(reference.state_dict())  # sample 48: the middle of group 1
    assert torch.equal(mix.next_batch(16), reference.next_batch(16))
    assert torch.equal(mix.next_batch(16), reference.next_batch(16))


def test_handed_out_batches_are_never_written_again(prefixes) -> None:
    mix = _mix(prefixes, (3, 1))
    kept = [mix.next_batch(32) for _ in range(300)]  # many groups and plans
    copies = [k.clone() for k in kept]
    for _ in range(300):
        mix.next_batch(32)
    assert all(torch.equal(k, c) for k, c in zip(kept, copies, strict=True))


def test_document_ids_follow_the_same_rows(prefixes) -> None:
    mix = _mix(prefixes, (3, 1, 2), document_boundaries=True)
    reference = _mix(prefixes, (3, 1, 2))
    for _ in range(40):
        start = mix.cursor
        batch = mix.next_batch(50)
        assert isinstance(batch, Batch)
        assert torch.equal(batch.tokens, torch.from_numpy(reference.read(start, 50)))
        for row, ids in zip(batch.tokens.numpy(), batch.document_ids.numpy(), strict=True):
            source = PackedMemMapDataset(prefixes[row[0] // OFFSET], SEQ)
            block = (row[0] % OFFSET) // SEQ
            assert np.array_equal(ids, source.document_ids(np.array([block]))[0])
