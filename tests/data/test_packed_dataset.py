"""PackedMemMapDataset: block layout, shuffling, rank sharding, splits and exact resume."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from llm_gym.data.pack import pack_jsonl
from llm_gym.data.packed import PackedWriter
from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.errors import UserError
from llm_gym_components.tokenizers import ByteLevelTokenizer

FP = "a" * 64
N_TOKENS = 10_007  # prime: no seq_len divides the stream evenly
SEQ = 16
BLOCKS = (N_TOKENS - 1) // SEQ  # 625


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """A pack whose token at position i is i (uint32 ids), so a block reveals its position."""
    prefix = tmp_path_factory.mktemp("ds") / "p"
    tokens = np.arange(N_TOKENS, dtype=np.int64)
    lengths = np.diff(np.r_[0, np.arange(37, N_TOKENS, 37), N_TOKENS])
    with PackedWriter(prefix, vocab_size=70_000, eod_id=69_999, fingerprint=FP) as w:
        w.add_documents(tokens, lengths)
    return prefix


def starts(batch: torch.Tensor) -> list[int]:
    """Block index of each row: its first token is the block's start position."""
    return (batch[:, 0] // SEQ).tolist()


def test_blocks_overlap_by_one_token_and_are_int64(prefix) -> None:
    ds = PackedMemMapDataset(prefix, SEQ, shuffle=False)
    assert len(ds) == ds.n_blocks == BLOCKS
    batch = ds.next_batch(3)
    assert batch.dtype == torch.int64 and batch.shape == (3, SEQ + 1)
    assert batch.tolist() == [list(range(b * SEQ, b * SEQ + SEQ + 1)) for b in range(3)]
    assert ds.read_block(624).tolist() == list(range(624 * SEQ, 625 * SEQ + 1))
    assert ds.read_block(624)[-1] == N_TOKENS - 7  # the 6 tokens after it do not fill a block


def test_every_token_is_a_target_once_per_epoch(prefix) -> None:
    ds = PackedMemMapDataset(prefix, SEQ, seed=3)
    targets = ds.next_batch(len(ds))[:, 1:].flatten()
    assert sorted(targets.tolist()) == list(range(1, BLOCKS * SEQ + 1))


def test_shuffle_is_seeded_per_epoch(prefix) -> None:
    a, b = PackedMemMapDataset(prefix, SEQ, seed=1), PackedMemMapDataset(prefix, SEQ, seed=1)
    other = PackedMemMapDataset(prefix, SEQ, seed=2)
    e0, e1 = a.next_batch(BLOCKS), a.next_batch(BLOCKS)
    assert torch.equal(e0, b.next_batch(BLOCKS))  # same seed, same order
    assert sorted(starts(e0)) == sorted(starts(e1)) == list(range(BLOCKS))
    assert starts(e0) != starts(e1) != list(range(BLOCKS))  # a new order each epoch
    assert starts(other.next_batch(BLOCKS)) != starts(e0)
    assert np.array_equal(a.sample_rows(np.arange(BLOCKS)), np.array(starts(e0)))


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_ranks_split_the_global_sequence_disjointly(prefix, world_size: int) -> None:
    """Rank r reads global samples r, r + W, ...: two epochs' worth read by all ranks
    together visit every block exactly twice, nothing dropped at an epoch's end (625
    blocks do not divide by 3 or 4), in the order one process reads them."""
    ranks = [PackedMemMapDataset(prefix, SEQ, seed=5, rank=r, world_size=world_size)
             for r in range(world_size)]
    per_rank = -(-2 * BLOCKS // world_size)
    shares = [starts(ds.next_batch(per_rank)) for ds in ranks]
    interleaved = [shares[j % world_size][j // world_size] for j in range(2 * BLOCKS)]
    single = PackedMemMapDataset(prefix, SEQ, seed=5)
    assert interleaved == starts(single.next_batch(2 * BLOCKS))
    assert sorted(interleaved) == sorted(list(range(BLOCKS)) * 2)
    assert len({ds.state_dict()["cursor"] for ds in ranks}) == 1  # one cursor for all


@pytest.mark.parametrize("batch_size,k", [(7, 50), (64, 13), (625, 3), (1000, 2)])
def test_resume_is_exact(prefix, batch_size: int, k: int) -> None:
    """K batches, save, a fresh dataset, load, K batches == 2K batches in one go,
    across epoch boundaries and on every rank."""
    for rank in (0, 1):
        kwargs = dict(seed=11, rank=rank, world_size=2)
        straight = PackedMemMapDataset(prefix, SEQ, **kwargs)
        expected = [straight.next_batch(batch_size) for _ in range(2 * k)]
        first = PackedMemMapDataset(prefix, SEQ, **kwargs)
        got = [first.next_batch(batch_size) for _ in range(k)]
        state = first.state_dict()
        assert all(type(v) is int for v in state.values()), state
        resumed = PackedMemMapDataset(prefix, SEQ, **kwargs)
        resumed.load_state_dict(state)
        got += [resumed.next_batch(batch_size) for _ in range(k)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
        assert resumed.state_dict() == straight.state_dict()


def test_val_split_is_the_tail_never_shuffled_into_train(prefix) -> None:
    train = PackedMemMapDataset(prefix, SEQ, split="train", val_fraction=0.1)
    val = PackedMemMapDataset(prefix, SEQ, split="val", val_fraction=0.1)
    n_val = int(np.ceil(BLOCKS * 0.1))
    assert (len(train), len(val)) == (BLOCKS - n_val, n_val)
    train_blocks = set(train.sample_rows(np.arange(3 * len(train))).tolist())
    assert train_blocks == set(range(BLOCKS - n_val))
    v = val.next_batch(n_val)
    assert starts(v) == list(range(BLOCKS - n_val, BLOCKS))  # file order by default
    train_targets = set(train.next_batch(len(train))[:, 1:].flatten().tolist())
    assert train_targets.isdisjoint(v[:, 1:].flatten().tolist())
    shuffled = PackedMemMapDataset(prefix, SEQ, split="val", val_fraction=0.1, shuffle=True)
    first_epoch = starts(shuffled.next_batch(n_val))
    assert sorted(first_epoch) == starts(v) and first_epoch != starts(v)


def test_bad_arguments_and_states(prefix) -> None:
    with pytest.raises(UserError, match="val split has 0 blocks"):
        PackedMemMapDataset(prefix, SEQ, split="val")
    with pytest.raises(UserError, match="val_fraction"):
        PackedMemMapDataset(prefix, SEQ, val_fraction=1.0)
    with pytest.raises(UserError, match="rank 2 outside world_size 2"):
        PackedMemMapDataset(prefix, SEQ, rank=2, world_size=2)
    with pytest.raises(UserError, match="packed with tokenizer fingerprint aaaa"):
        PackedMemMapDataset(prefix, SEQ, tokenizer_fingerprint="b" * 64)
    ds = PackedMemMapDataset(prefix, SEQ, seed=1)
    state = ds.state_dict()
    with pytest.raises(UserError, match="seed=1, this run has 2"):
        PackedMemMapDataset(prefix, SEQ, seed=2).load_state_dict(state)
    with pytest.raises(UserError, match="seq_len=16, this run has 8"):
        PackedMemMapDataset(prefix, 8, seed=1).load_state_dict(state)
    with pytest.raises(UserError, match="cursor=-1 is not a whole number"):
        ds.load_state_dict({**state, "cursor": -1})
    assert ds.state_dict() == state  # a refused state changes nothing


@pytest.mark.parametrize("world_size", [2, 4])
def test_global_batch_is_the_same_for_any_world_size(prefix, world_size: int) -> None:
    """Rank batches of b together hold the blocks one rank reads in a batch of b * world:
    what makes 1-process and N-process training see the same data, step by step."""
    single = PackedMemMapDataset(prefix, SEQ, seed=3)
    ranks = [
        PackedMemMapDataset(prefix, SEQ, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for _ in range(5):
        whole = single.next_batch(2 * world_size)
        parts = torch.cat([ds.next_batch(2) for ds in ranks])
        assert sorted(map(tuple, whole.tolist())) == sorted(map(tuple, parts.tolist()))


def test_pickles_as_a_reopen_at_the_same_position(prefix) -> None:
    ds = PackedMemMapDataset(prefix, SEQ, seed=4, rank=1, world_size=2, val_fraction=0.1)
    ds.next_batch(300)  # into the second epoch
    blob = pickle.dumps(ds)
    assert len(blob) < 4096  # the mapped tokens are not copied
    clone = pickle.loads(blob)
    assert clone.state_dict() == ds.state_dict()
    assert torch.equal(clone.next_batch(50), ds.next_batch(50))
    with pytest.raises(UserError, match="seed must be >= 0"):
        PackedMemMapDataset(prefix, SEQ, seed=-1)


def test_end_to_end_blocks_match_a_plain_python_stream(tmp_path) -> None:
    """JSONL -> pack -> blocks equals the obvious computation, with documents both much
    shorter and much longer than a block."""
    texts = ["x", "", "naïve 日本 🎉", "long " * 400, "mid " * 20, "y" * 64, "z" * 65] * 3
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tok = ByteLevelTokenizer()
    pack_jsonl(src, tok, tmp_path / "p")
    stream = [i for t in texts for i in [*t.encode("utf-8"), tok.eod_id]]
    seq = 64
    ds = PackedMemMapDataset(tmp_path / "p", seq, seed=9)
    assert len(ds) == (len(stream) - 1) // seq
    batch = ds.next_batch(len(ds))
    for row, b in zip(batch.tolist(), ds.sample_rows(np.arange(len(ds))).tolist(), strict=True):
        assert row == stream[b * seq : b * seq + seq + 1]


@pytest.mark.parametrize("new_world", [1, 4])
def test_a_position_saved_on_two_ranks_resumes_on_another_world_size(prefix, new_world) -> None:
    """The cursor is global: after 2 ranks read 40 batches of 8 (into the second epoch),
    any number of ranks continues with the very samples 2 ranks would have read next."""
    two = [PackedMemMapDataset(prefix, SEQ, seed=7, rank=r, world_size=2) for r in range(2)]
    for _ in range(40):
        for ds in two:
            ds.next_batch(8)
    state = two[0].state_dict()
    expected = sorted(s for ds in two for s in starts(ds.next_batch(8)))
    resumed = [PackedMemMapDataset(prefix, SEQ, seed=7, rank=r, world_size=new_world)
               for r in range(new_world)]
    for ds in resumed:
        ds.load_state_dict(state)
    got = sorted(s for ds in resumed for s in starts(ds.next_batch(16 // new_world)))
    assert got == expected


def test_a_position_of_the_older_per_rank_format_maps_to_the_cursor(prefix) -> None:
    """Checkpoints written before the cursor held (epoch, position in the rank's share)."""
    old = {"epoch": 0, "position": 30, "seed": 7, "seq_len": SEQ, "world_size": 2,
           "n_blocks": BLOCKS}
    ds = PackedMemMapDataset(prefix, SEQ, seed=7, rank=1, world_size=2)
    ds.load_state_dict(old)
    assert ds.state_dict()["cursor"] == 60
    one = PackedMemMapDataset(prefix, SEQ, seed=7)
    one.load_state_dict({**old, "epoch": 2, "world_size": 1})
    assert one.state_dict()["cursor"] == 2 * BLOCKS + 30
    # Two ranks dropped 625 % 2 blocks per epoch: past the first, the orders differ.
    with pytest.raises(UserError, match="skipped 1 block"):
        ds.load_state_dict({**old, "epoch": 1})
