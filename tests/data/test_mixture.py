"""MixtureDataset: the global sequence, proportions, world sizes, cycle/stop and resume,
and the global sample access of PackedMemMapDataset that it is built on."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from llm_gym.data.indexed import DataExhausted, IndexedSamples
from llm_gym.data.mixture import CHUNK, MixtureDataset, chunk_counts
from llm_gym.data.packed import PackedWriter
from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.errors import UserError

SEQ = 8
# Source s holds tokens OFFSET * s + position, so a block says where it came from.
OFFSET = 1_000_000
SIZES = (4_001, 1_601, 2_401)  # tokens: 500, 200 and 300 blocks of SEQ + 1


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    made = []
    for s, n in enumerate(SIZES):
        prefix = root / f"p{s}"
        with PackedWriter(prefix, vocab_size=4 * OFFSET, eod_id=4 * OFFSET - 1,
                          fingerprint="b" * 64) as w:
            w.add_documents(np.arange(n, dtype=np.int64) + s * OFFSET, np.array([n]))
        made.append(prefix)
    return made


def packs(prefixes, n=2, **kwargs):
    return [PackedMemMapDataset(p, SEQ, seed=5, **kwargs) for p in prefixes[:n]]


def mixture(prefixes, weights=(3, 1), *, rank=0, world_size=1, **kwargs) -> MixtureDataset:
    sources = packs(prefixes, len(weights), rank=rank, world_size=world_size)
    return MixtureDataset(sources, weights, seed=kwargs.pop("seed", 11), rank=rank,
                          world_size=world_size, **kwargs)


def source_of(batch) -> np.ndarray:  # noqa: ANN001 -- a tensor or an array
    return np.asarray(batch, dtype=np.int64)[:, 0] // OFFSET


def block_of(batch) -> np.ndarray:  # noqa: ANN001
    return np.asarray(batch, dtype=np.int64)[:, 0] % OFFSET // SEQ


# -- the indexed contract of PackedMemMapDataset -------------------------------------------


def test_packed_global_samples_follow_the_epoch_orders_of_one_rank(prefixes) -> None:
    ds = PackedMemMapDataset(prefixes[0], SEQ, seed=5)
    assert isinstance(ds, IndexedSamples) and ds.samples_per_epoch == 500
    two_epochs = torch.cat([ds.next_batch(500), ds.next_batch(500)])
    fresh = PackedMemMapDataset(prefixes[0], SEQ, seed=5)
    state = fresh.state_dict()
    got = fresh.sample_tokens(np.arange(1000))
    assert got.shape == (1000, SEQ + 1) and torch.equal(torch.from_numpy(got.astype(np.int64)),
                                                        two_epochs)
    assert fresh.state_dict() == state  # reading by index moves nothing
    # Any subset, in any order, straddling epochs: the same rows.
    pick = np.array([999, 3, 500, 499, 0])
    assert np.array_equal(fresh.sample_tokens(pick), got[pick])


def test_packed_global_samples_ignore_rank_and_world_size(prefixes) -> None:
    one = PackedMemMapDataset(prefixes[0], SEQ, seed=5)
    for rank, world in ((1, 3), (2, 3), (0, 7)):
        other = PackedMemMapDataset(prefixes[0], SEQ, seed=5, rank=rank, world_size=world)
        # 500 blocks: 3 ranks drop 2 per epoch, 7 ranks drop 3; global access drops none.
        assert other.samples_per_epoch == 500
        assert np.array_equal(other.sample_tokens(np.arange(1200)),
                              one.sample_tokens(np.arange(1200)))


def test_packed_global_samples_of_the_val_split_are_its_tail(prefixes) -> None:
    val = PackedMemMapDataset(prefixes[0], SEQ, split="val", val_fraction=0.1)
    assert val.samples_per_epoch == 50
    assert block_of(val.sample_tokens(np.arange(50))).tolist() == list(range(450, 500))


# -- which source, and how much of each --------------------------------------------------


def test_chunk_counts_round_by_largest_remainder() -> None:
    assert chunk_counts([3, 1]) == [3072, 1024]
    assert chunk_counts([1, 1, 1], chunk=10) == [4, 3, 3]  # tie: the earlier one
    assert chunk_counts([0.2, 0.3, 0.5], chunk=7) == [1, 2, 4]  # 1.4, 2.1, 3.5
    assert sum(chunk_counts([0.1] * 7)) == CHUNK
    # Weights as recipes give them: the counts every run so far was made with.
    assert chunk_counts([1 / 3, 2 / 3]) == [1365, 2731]
    assert chunk_counts([0.7, 0.2, 0.1]) == [2867, 819, 410]
    assert chunk_counts([1e-300, 3e-300]) == chunk_counts([1e150, 3e150]) == [1024, 3072]


@pytest.mark.parametrize(("weights", "counts"), [
    ((1e308, 1e308), [2048, 2048]),  # the sum overflows a float
    ((1.5e308, 0.5e308), [3072, 1024]),
    ((1.7e308,) * 3, [1366, 1365, 1365]),
])
def test_chunk_counts_of_weights_whose_sum_overflows(prefixes, weights, counts) -> None:
    assert chunk_counts(weights) == counts
    if len(weights) == 2:
        assert MixtureDataset(packs(prefixes), weights).chunk_counts.tolist() == counts


@pytest.mark.parametrize("weights", [(3, 1), (0.2, 0.3, 0.5)])
def test_token_proportions_match_the_weights(prefixes, weights) -> None:
    mix = mixture(prefixes, weights)
    seen = np.concatenate([source_of(mix.next_batch(64)) for _ in range(300)])  # 19200 samples
    share = np.bincount(seen, minlength=len(weights)) / len(seen)
    assert np.abs(share - np.array(weights) / sum(weights)).max() < 0.01
    # The accounting agrees with what was actually read.
    counted = {label: int(n) * SEQ for label, n in zip(mix.labels, np.bincount(seen), strict=True)}
    assert mix.consumed_tokens() == counted
    assert sum(counted.values()) == mix.cursor * SEQ


def test_the_sequence_is_a_function_of_the_seed(prefixes) -> None:
    a, b, other = mixture(prefixes, seed=1), mixture(prefixes, seed=1), mixture(prefixes, seed=2)
    batches = [a.next_batch(50) for _ in range(4)]
    assert all(torch.equal(x, b.next_batch(50)) for x in batches)
    assert not all(torch.equal(x, other.next_batch(50)) for x in batches)
    # Within a source, its own (seed 5) epoch order: the first 4 blocks of source 1 match.
    firsts = np.concatenate([block_of(x)[source_of(x) == 1] for x in batches])[:4]
    assert firsts.tolist() == block_of(packs(prefixes)[1].sample_tokens(np.arange(4))).tolist()


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_take_the_global_sequence_by_stride(prefixes, world_size) -> None:
    one = mixture(prefixes)
    ranks = [mixture(prefixes, rank=r, world_size=world_size) for r in range(world_size)]
    one.load_state_dict({"cursor": 4080})  # the batches straddle the first chunk's end
    for ds in ranks:
        ds.load_state_dict({"cursor": 4080})
    for _ in range(5):
        whole = one.next_batch(6 * world_size)
        for r, ds in enumerate(ranks):
            assert torch.equal(ds.next_batch(6), whole[r::world_size])
    assert {ds.cursor for ds in ranks} == {one.cursor}
    assert all(ds.consumed_tokens() == one.consumed_tokens() for ds in ranks)


def test_a_source_that_runs_out_cycles_into_a_new_epoch(prefixes) -> None:
    mix = mixture(prefixes, (1, 1))  # source 1 (200 blocks) runs out after ~400 samples
    got = torch.cat([mix.next_batch(100) for _ in range(10)])
    blocks = block_of(got)[source_of(got) == 1]
    assert len(blocks) >= 400
    first, second = blocks[:200], blocks[200:400]
    assert sorted(first) == sorted(second) == list(range(200))  # every block once per epoch
    assert not np.array_equal(first, second)  # in a new order


def test_stop_ends_before_the_first_batch_past_an_epoch(prefixes) -> None:
    ranks = [mixture(prefixes, (1, 1), rank=r, world_size=2, on_exhausted="stop")
             for r in range(2)]
    taken = [0, 0]
    for r, ds in enumerate(ranks):
        with pytest.raises(DataExhausted, match=r"1 ran out after its 200 samples"):
            for _ in range(50):  # 800 samples: twice what source 1 has for
                batch = ds.next_batch(16)
                taken[r] += (source_of(batch) == 1).sum()
    assert ranks[0].cursor == ranks[1].cursor  # both ranks stop at the same batch
    used = ranks[0].state_dict()["positions"][1]
    assert used == taken[0] + taken[1] <= 200 and used > 200 - 32
    state = ranks[0].state_dict()
    with pytest.raises(DataExhausted):
        ranks[0].next_batch(16)
    assert ranks[0].state_dict() == state  # nothing was taken


def test_batches_are_slices_of_one_sequence_whatever_their_sizes(prefixes) -> None:
    """Read-ahead is invisible: any batch sizes, and going back (as evaluation does)."""
    whole = mixture(prefixes).next_batch(3000)
    mix = mixture(prefixes)
    start = mix.state_dict()
    sizes = [1, 7, 64, 500, 3, 1200, 225]
    got = torch.cat([mix.next_batch(n) for n in sizes])
    assert torch.equal(got, whole[: sum(sizes)])
    mix.load_state_dict(start)
    assert torch.equal(mix.next_batch(10), whole[:10])


# -- state -----------------------------------------------------------------------------


def test_pickles_at_the_same_position(prefixes) -> None:
    mix = mixture(prefixes)
    mix.next_batch(30)
    copy = pickle.loads(pickle.dumps(mix))
    assert torch.equal(copy.next_batch(30), mix.next_batch(30))


def test_resume_is_exact_through_a_weights_only_checkpoint(prefixes) -> None:
    whole = mixture(prefixes, (0.2, 0.3, 0.5))
    expected = [whole.next_batch(40) for _ in range(200)]  # past chunks and source epochs
    split = mixture(prefixes, (0.2, 0.3, 0.5))
    for batch in expected[:117]:
        assert torch.equal(split.next_batch(40), batch)
    buffer = io.BytesIO()
    torch.save(split.state_dict(), buffer)
    buffer.seek(0)
    resumed = mixture(prefixes, (0.2, 0.3, 0.5))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert all(torch.equal(resumed.next_batch(40), b) for b in expected[117:])


@pytest.mark.parametrize(("field", "change", "match"), [
    ("seed", {"seed": 12}, "seed=12, this run has 11"),
    ("weights", {"chunk_counts": [2048, 2048]}, r"chunk_counts=\[2048, 2048\].*weights"),
    ("sources", {"source_samples": [500, 201]}, "source_samples=.*samples per epoch"),
    ("cursor", {"cursor": -4}, "cursor=-4"),
    ("positions", {"positions": [3, 1]}, "positions=.*inconsistent"),
])
def test_a_mismatching_state_is_refused_naming_the_field(prefixes, field, change,
                                                         match) -> None:
    mix = mixture(prefixes)
    mix.next_batch(8)
    state = {**mix.state_dict(), **change}
    with pytest.raises(UserError, match=match):
        mixture(prefixes).load_state_dict(state)


def test_a_position_saved_on_two_ranks_resumes_on_one_and_on_four(prefixes) -> None:
    """The cursor is global: what 2 ranks would read next, 1 or 4 ranks read instead
    (a fixed global batch's elastic resume); a cursor the new ranks cannot split evenly
    is refused."""
    two = [mixture(prefixes, rank=r, world_size=2) for r in range(2)]
    for _ in range(30):
        for ds in two:
            ds.next_batch(6)
    state = two[0].state_dict()
    expected = sorted(map(tuple, torch.cat([ds.next_batch(6) for ds in two]).tolist()))
    for world in (1, 4):
        ranks = [mixture(prefixes, rank=r, world_size=world) for r in range(world)]
        for ds in ranks:
            ds.load_state_dict(state)
        got = torch.cat([ds.next_batch(12 // world) for ds in ranks])
        assert sorted(map(tuple, got.tolist())) == expected
    with pytest.raises(UserError, match="not a multiple of world_size 7"):
        mixture(prefixes, rank=0, world_size=7).load_state_dict(state)


@pytest.mark.parametrize(("weights", "match"), [
    ((3, -1), r"weights\[1\]: must be a finite number above 0, got -1"),
    ((3, 0), r"weights\[1\]"),
    ((1, float("nan")), r"weights\[1\]"),
    ((1,), "weights: 1 weight given for 2 sources; "),
    ((1, 1, 1), "weights: 3 weights given for 2 sources; "),
    ((1, 1e-5), "1 would get no sample"),
])
def test_bad_weights_are_refused(prefixes, weights, match) -> None:
    with pytest.raises(UserError, match=match):
        MixtureDataset(packs(prefixes), weights)


def test_sources_that_cannot_be_mixed_are_refused(prefixes) -> None:
    with pytest.raises(UserError, match=r"sources\[1\] \(1\): a list cannot be mixed"):
        MixtureDataset([packs(prefixes)[0], []], (1, 1))
    inner = mixture(prefixes)
    with pytest.raises(UserError, match=r"sources\[0\] \(0\): a Mixture cannot be a source"):
        MixtureDataset([inner, packs(prefixes)[0]], (1, 1))
    other_seq = PackedMemMapDataset(prefixes[1], SEQ + 1)
    with pytest.raises(UserError, match="must share seq_len; got 0: 8, 1: 9"):
        MixtureDataset([packs(prefixes)[0], other_seq], (1, 1))
