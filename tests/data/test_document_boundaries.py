"""Document boundaries from the pack to the model: with ``document_boundaries`` on, each
batch carries, for every input token, the index of its document within the row, read
from the pack's offsets index (single packs, sharded packs, mixtures); off (the default),
a batch is the bare token tensor it always was; the trainer and the validation loss hand
the ids to the model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_gym.data.batch import Batch, model_call
from llm_gym.data.document_ids import block_document_ids
from llm_gym.data.mixture import MixtureDataset
from llm_gym.data.pack import pack_files
from llm_gym.data.packed import HEADER_SIZE, PackedWriter, pack_paths
from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.data.shard_pack import pack_shards
from llm_gym.data.sources import expand_inputs
from llm_gym.errors import UserError
from llm_gym_components.datasets.packed_tokens import PackedTokensConfig
from llm_gym_components.tokenizers import ByteLevelTokenizer

SEQ = 4
# Documents of known lengths; tokens count up from 0, so a block's first token is its start.
LENGTHS = [3, 6, 2, 1, 9, 4, 5, 2, 8, 3]
EOD = 1 << 20


def _write(prefix: Path, lengths: list[int], base: int = 0) -> Path:
    n = sum(lengths)
    with PackedWriter(prefix, vocab_size=EOD + 1, eod_id=EOD, fingerprint="d" * 64) as w:
        w.add_documents(np.arange(n, dtype=np.int64) + base, np.array(lengths))
    return prefix


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("docs") / "p", LENGTHS)


def _expected(lengths: list[int], starts: np.ndarray, seq_len: int) -> np.ndarray:
    """Brute force: the document of every token, renumbered from 0 within each row."""
    doc_of = np.repeat(np.arange(len(lengths)), lengths)
    rows = doc_of[np.asarray(starts)[:, None] + np.arange(seq_len)]
    return np.stack([np.unique(r, return_inverse=True)[1].ravel() for r in rows])


def test_blocks_number_the_documents_they_cross(pack) -> None:
    ds = PackedMemMapDataset(pack, SEQ, shuffle=False, document_boundaries=True)
    batch = ds.next_batch(4)
    assert isinstance(batch, Batch)
    assert batch.tokens.shape == (4, SEQ + 1) and batch.document_ids.shape == (4, SEQ)
    assert batch.document_ids.dtype == torch.int64
    # Tokens 0-2 are document 0, 3-8 document 1, 9-10 document 2, 11 document 3, 12-20 ...
    assert batch.document_ids.tolist() == [
        [0, 0, 0, 1],  # block 0 (tokens 0-3): crosses from document 0 into 1
        [0, 0, 0, 0],  # block 1 (4-7): starts in the middle of document 1, stays in it
        [0, 1, 1, 2],  # block 2 (8-11): the last token of 1, all of 2, the one token of 3
        [0, 0, 0, 0],  # block 3 (12-15): the start of document 4
    ]


def test_every_block_of_shuffled_epochs_matches_the_documents_packed(pack) -> None:
    ds = PackedMemMapDataset(pack, SEQ, seed=3, document_boundaries=True)
    for _ in range(5):  # 10 blocks per epoch: batches of 3 cross epochs
        batch = ds.next_batch(3)
        starts = batch.tokens[:, 0].numpy()  # tokens count up: the first is the position
        assert np.array_equal(batch.document_ids.numpy(), _expected(LENGTHS, starts, SEQ))


def test_a_long_block_spans_many_documents(pack) -> None:
    ds = PackedMemMapDataset(pack, 20, shuffle=False, document_boundaries=True)
    batch = ds.next_batch(2)
    assert np.array_equal(batch.document_ids.numpy(), _expected(LENGTHS, np.array([0, 20]), 20))
    assert batch.document_ids[0].tolist() == [0] * 3 + [1] * 6 + [2] * 2 + [3] + [4] * 8


def test_empty_documents_take_no_number(tmp_path) -> None:
    ids = block_document_ids(np.array([0, 2, 2, 5, 5, 5, 7]), np.array([0, 1]), 6)
    assert ids.tolist() == [[0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 2, 2]]


def test_off_by_default_and_the_tokens_are_the_same(pack) -> None:
    plain = PackedMemMapDataset(pack, SEQ, seed=3)
    with_ids = PackedMemMapDataset(pack, SEQ, seed=3, document_boundaries=True)
    for _ in range(4):
        batch = plain.next_batch(3)
        assert type(batch) is torch.Tensor
        assert torch.equal(batch, with_ids.next_batch(3).tokens)
    # The position is the whole state, with or without boundaries: a resumed dataset
    # gives the same ids as the one that went on.
    assert with_ids.state_dict() == plain.state_dict()
    resumed = PackedMemMapDataset(pack, SEQ, seed=3, document_boundaries=True)
    resumed.load_state_dict(with_ids.state_dict())
    a, b = with_ids.next_batch(5), resumed.next_batch(5)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.document_ids, b.document_ids)


def test_model_call_adds_document_ids_only_when_the_batch_carries_them() -> None:
    tokens = torch.arange(10).reshape(2, 5)
    inputs, targets, kwargs = model_call(tokens)
    assert kwargs == {} and torch.equal(inputs, tokens[:, :-1]) and torch.equal(targets,
                                                                                tokens[:, 1:])
    ids = torch.zeros(2, 4, dtype=torch.int64)
    inputs, targets, kwargs = model_call(Batch(tokens, ids).to("cpu"))
    assert kwargs["document_ids"] is ids and torch.equal(targets, tokens[:, 1:])


def _eod_rule(tokens: np.ndarray, eod: int) -> np.ndarray:
    """Each input token's document index as the eods before it in the row say: a
    document starts right after every eod (what tools pack writes)."""
    inputs = tokens[:, :-1]
    before = np.zeros_like(inputs)
    before[:, 1:] = np.cumsum(inputs[:, :-1] == eod, axis=1)
    return before


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("doc-texts")
    rng = np.random.default_rng(7)
    for f in range(3):
        with (d / f"part{f}.jsonl").open("w") as out:
            for i in range(40):
                out.write(json.dumps({"text": f"f{f} d{i} " + "ab " * int(rng.integers(0, 12))})
                          + "\n")
    return expand_inputs([d / "part*.jsonl"])


def test_a_sharded_pack_numbers_documents_like_one_pack(tmp_path, texts) -> None:
    tok = ByteLevelTokenizer()
    pack_files(texts, tok, tmp_path / "whole")
    pack_shards(texts, tok, tmp_path / "shards", shard_tokens=700, batch_docs=5)
    assert len(list((tmp_path / "shards").glob("part-*.bin"))) >= 3
    whole = PackedMemMapDataset(tmp_path / "whole", 30, seed=2, document_boundaries=True)
    sharded = PackedMemMapDataset(tmp_path / "shards", 30, seed=2, document_boundaries=True)
    for _ in range(8):
        a, b = whole.next_batch(16), sharded.next_batch(16)
        assert torch.equal(a.tokens, b.tokens)
        assert torch.equal(a.document_ids, b.document_ids)
        assert np.array_equal(b.document_ids.numpy(), _eod_rule(b.tokens.numpy(), tok.eod_id))
    assert int(b.document_ids.max()) >= 1  # the blocks do cross documents


def test_a_mixture_hands_on_each_sources_boundaries(tmp_path) -> None:
    other = [7, 1, 4, 12, 3, 2, 6, 5]
    a, b = _write(tmp_path / "a", LENGTHS), _write(tmp_path / "b", other, base=1000)
    sources = [PackedMemMapDataset(p, SEQ, seed=1) for p in (a, b)]
    mix = MixtureDataset(sources, [1, 1], seed=4, document_boundaries=True)
    plain = MixtureDataset([PackedMemMapDataset(p, SEQ, seed=1) for p in (a, b)], [1, 1],
                           seed=4)
    seen = set()
    for _ in range(6):
        batch = mix.next_batch(5)
        assert isinstance(batch, Batch)
        assert torch.equal(batch.tokens, plain.next_batch(5))  # the same samples
        for row, ids in zip(batch.tokens.numpy(), batch.document_ids.numpy(), strict=True):
            source = int(row[0] >= 1000)
            seen.add(source)
            start = row[0] - 1000 * source
            lengths = (LENGTHS, other)[source]
            assert np.array_equal(ids, _expected(lengths, np.array([start]), SEQ)[0])
    assert seen == {0, 1}
    assert type(plain.next_batch(2)) is torch.Tensor  # off by default


def test_a_mixture_refuses_a_source_without_boundaries(pack) -> None:
    class Blocks:  # mixable, but knows nothing of documents
        seq_len = SEQ
        samples_per_epoch = 4

        def sample_tokens(self, samples: np.ndarray) -> np.ndarray:
            return np.zeros((len(samples), SEQ + 1), dtype=np.int64)

    sources = [PackedMemMapDataset(pack, SEQ), Blocks()]
    MixtureDataset(sources, [1, 1])  # fine without boundaries
    with pytest.raises(UserError, match=r"sources\[1\] \(1\): a Blocks does not say where its"
                                        " documents start"):
        MixtureDataset(sources, [1, 1], document_boundaries=True)


def _damage_offsets(prefix: Path) -> Path:
    """Swap two document offsets in the .idx: still the right size, first and last."""
    idx = pack_paths(prefix)[1]
    raw = bytearray(idx.read_bytes())
    at = HEADER_SIZE + 8 * 3
    raw[at : at + 8], raw[at + 8 : at + 16] = raw[at + 8 : at + 16], raw[at : at + 8]
    idx.write_bytes(bytes(raw))
    return idx


def test_a_damaged_document_index_is_refused_naming_the_file(tmp_path) -> None:
    prefix = _write(tmp_path / "bad", LENGTHS)
    idx = _damage_offsets(prefix)
    PackedMemMapDataset(prefix, SEQ)  # the tokens alone still read
    with pytest.raises(UserError, match=rf"{idx}: document offsets decrease after document 3"):
        PackedMemMapDataset(prefix, SEQ, document_boundaries=True)
    config = PackedTokensConfig(path=str(prefix), document_boundaries=True)
    problems = list(config.preflight())
    assert len(problems) == 1 and problems[0].startswith(f"document_boundaries: {idx}: ")
    assert list(PackedTokensConfig(path=str(prefix)).preflight()) == []


VALIDATE = """\
recipe: {{description: a mixture to validate}}
trainer: {{max_steps: 2, seq_len: 4, micro_batch_size: 2, seed: 0, loggers: []}}
model:
  type_hint: GPT2
  config: {{vocab_size: 1048577, n_positions: 4, n_embd: 8, n_layer: 1, n_head: 2,
           attention_mask: {mask}}}
tokenizer: ByteLevel
train_dataset:
  type_hint: Mixture
  config:
    weights: [1]
    document_boundaries: {mixture}
    sources: [{{type_hint: PackedTokens, config: {{path: "{pack}", document_boundaries: true}}}}]
loss: CrossEntropy
optimizer: {{type_hint: AdamW, config: {{lr: 1.0e-3}}}}
"""


@pytest.mark.parametrize("mixture", [False, True])
def test_a_sources_own_flag_in_a_mixture_is_named(tmp_path, pack, capsys, mixture) -> None:
    from llm_gym.cli.main import main

    path = tmp_path / "mix.yaml"
    # A model that uses the boundaries exactly when the mixture hands them over.
    path.write_text(VALIDATE.format(pack=pack, mixture=str(mixture).lower(),
                                    mask="document" if mixture else "causal"))
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "validate", str(path), "--allow-drift"])
    out = capsys.readouterr()
    if mixture:  # on at both levels: what the source asks for is what it gets
        assert exited.value.code == 0, out.err
    else:
        assert exited.value.code == 2
        assert ("train_dataset.config.sources[0].config.document_boundaries: the mixture "
                "hands its sources' boundaries on only when it is told to") in out.err
        assert "Traceback" not in out.err


RECIPE = """\
recipe: {{description: document ids reach the model}}
trainer: {{max_steps: 3, seq_len: 16, micro_batch_size: 4, log_every: 1, seed: 0,
          loggers: [], eval_every: 3, eval_batches: 2}}
model:
  type_hint: GPT2
  config: {{vocab_size: 257, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2,
           attention_mask: document}}
tokenizer: ByteLevel
train_dataset:
  type_hint: {kind}
  config: {train}
eval_dataset:
  type_hint: PackedTokens
  config: {{path: "{path}", split: val, val_fraction: 0.2, document_boundaries: true}}
loss: CrossEntropy
optimizer: {{type_hint: AdamW, config: {{lr: 1.0e-3}}}}
"""


@pytest.mark.parametrize("kind", ["PackedTokens", "Mixture"])
def test_the_trainer_and_the_validation_loss_hand_them_to_the_model(
        tmp_path, texts, monkeypatch, kind) -> None:
    from llm_gym.runner.entry import run_recipe
    from llm_gym_components.models.gpt2 import GPT2

    tok = ByteLevelTokenizer()
    pack_files(texts, tok, tmp_path / "corpus")
    path = tmp_path / "corpus"
    train = (f'{{path: "{path}", val_fraction: 0.2, document_boundaries: true}}'
             if kind == "PackedTokens" else
             f'{{weights: [1], document_boundaries: true, sources: [{{type_hint: '
             f'PackedTokens, config: {{path: "{path}", val_fraction: 0.2}}}}]}}')
    recipes = tmp_path / "recipes" / "doc-ids"
    recipes.mkdir(parents=True)
    (recipes / "v1.yaml").write_text(textwrap.dedent(RECIPE.format(kind=kind, train=train,
                                                                    path=path)))
    calls: list[tuple[bool, torch.Tensor, torch.Tensor | None]] = []
    forward = GPT2.forward

    # Record what the model is handed; it masks by document with it.
    def recording(self, idx, kv_cache=None, document_ids=None):  # noqa: ANN001, ANN202
        calls.append((self.training, idx.clone(), document_ids))
        return forward(self, idx, kv_cache=kv_cache, document_ids=document_ids)

    monkeypatch.setattr(GPT2, "forward", recording)
    run_recipe("doc-ids", [], run_dir=tmp_path / "run", recipe_dirs=[tmp_path / "recipes"],
               allow_drift=True)
    train_calls = [c for c in calls if c[0]]
    eval_calls = [c for c in calls if not c[0]]
    assert len(train_calls) == 3 and len(eval_calls) == 2
    for _, idx, ids in calls:
        assert ids is not None and ids.shape == idx.shape
        # The ids agree with the eods inside the inputs: a new document after each.
        tokens = torch.cat([idx, idx[:, -1:]], dim=1).numpy()
        assert np.array_equal(ids.numpy(), _eod_rule(tokens, tok.eod_id))
    assert any(int(ids.max()) > 0 for _, _, ids in calls)


def test_the_feed_reads_them_ahead_with_their_position(pack) -> None:
    from llm_gym.runner.data_feed import BatchFeed

    direct = PackedMemMapDataset(pack, SEQ, seed=3, document_boundaries=True)
    feed = BatchFeed(PackedMemMapDataset(pack, SEQ, seed=3, document_boundaries=True), 3,
                     torch.device("cpu"), prefetch=2)
    try:
        for _ in range(4):
            got, want = feed.next(), direct.next_batch(3)
            assert isinstance(got, Batch)
            assert torch.equal(got.tokens, want.tokens)
            assert torch.equal(got.document_ids, want.document_ids)
            assert feed.state_dict() == direct.state_dict()
    finally:
        feed.close()


class _NoIds:  # mixable, but says nothing of documents
    samples_per_epoch = 1

    def sample_tokens(self, samples: np.ndarray) -> np.ndarray: ...


class _NoIdsConfig:
    def build(self) -> _NoIds: ...


def test_validate_names_a_source_that_cannot_give_boundaries() -> None:
    from types import SimpleNamespace

    from llm_gym_components.datasets.mixture import MixtureConfig

    source = SimpleNamespace(type_hint=SimpleNamespace(name="Custom"), config=_NoIdsConfig())
    on = SimpleNamespace(sources=[source], document_boundaries=True)
    assert list(MixtureConfig.preflight(on)) == [
        "sources[0]: Custom builds a _NoIds, which does not say where its documents start "
        "(sample_document_ids, see llm_gym.data.indexed): document_boundaries needs it of "
        "every source"]
    assert list(MixtureConfig.preflight(SimpleNamespace(sources=[source],
                                                        document_boundaries=False))) == []


def test_a_damaged_index_of_a_mixture_source_is_named_by_validate(tmp_path, capsys) -> None:
    from llm_gym.cli.main import main

    prefix = _write(tmp_path / "bad", LENGTHS)
    idx = _damage_offsets(prefix)
    path = tmp_path / "mix.yaml"
    # Only the mixture asks for boundaries: the source's own preflight does not look.
    path.write_text(VALIDATE.format(pack=prefix, mixture="true", mask="document")
                    .replace(", document_boundaries: true}", "}"))
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "validate", str(path), "--allow-drift"])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert (f"train_dataset.config.sources[0].config.path: {idx}: document offsets decrease"
            in err), err


def test_boundaries_for_a_model_without_an_attention_mask_are_refused() -> None:
    from types import SimpleNamespace

    from pydantic import BaseModel

    from llm_gym.core_plugin import (
        boundaries_need_a_model_that_masks_by_them,
        llm_gym_recipe_checks,
    )

    assert boundaries_need_a_model_that_masks_by_them in llm_gym_recipe_checks()  # validate

    class Imported(BaseModel):  # a model config with no attention_mask (a pretrained one)
        path: str = "hf"

    def recipe(boundaries: bool) -> SimpleNamespace:
        dataset = SimpleNamespace(config=SimpleNamespace(document_boundaries=boundaries))
        return SimpleNamespace(model=SimpleNamespace(type_hint=SimpleNamespace(
            name="GPT2Pretrained"), config=Imported()), train_dataset=dataset,
            eval_dataset=None)

    assert list(boundaries_need_a_model_that_masks_by_them(recipe(False))) == []
    assert list(boundaries_need_a_model_that_masks_by_them(recipe(True))) == [
        "train_dataset.config.document_boundaries: true, but the model (GPT2Pretrained) "
        "takes no document boundaries (it has no attention_mask setting): set "
        "train_dataset.config.document_boundaries=false"]


def test_a_damaged_shard_index_is_named_not_its_manifest(tmp_path) -> None:
    import json

    from llm_gym.data.shard_pack import pack_shards
    from llm_gym.data.sources import expand_inputs
    from llm_gym_components.tokenizers import ByteLevelTokenizer

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " * 3}) + "\n"
                              for i in range(60)))
    pack_shards(expand_inputs([corpus]), ByteLevelTokenizer(), tmp_path / "s",
                shard_tokens=600)
    idx = _damage_offsets(tmp_path / "s" / "part-00000-00001")
    with pytest.raises(UserError, match=rf"{idx}: document offsets decrease"):
        PackedMemMapDataset(tmp_path / "s", SEQ, document_boundaries=True)
