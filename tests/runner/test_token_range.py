"""A training batch with a token id the model cannot embed (a damaged pack) stops the run
with an error about the data, not torch's bare IndexError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_gym.cli.main import main
from llm_gym.data.packed import PackedWriter, pack_paths
from llm_gym.runner.token_range import out_of_vocabulary
from llm_gym_components.tokenizers import ByteLevelTokenizer

RECIPE = """\
recipe: {{description: a damaged pack}}
trainer: {{max_steps: 2, seq_len: 8, micro_batch_size: 2, seed: 0, loggers: [],
          sample_prompt: null}}
model:
  type_hint: GPT2
  config: {{vocab_size: 257, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2}}
tokenizer: ByteLevel
train_dataset: {{type_hint: PackedTokens, config: {{path: "{pack}"}}}}
loss: CrossEntropy
optimizer: {{type_hint: AdamW, config: {{lr: 1.0e-3}}}}
scheduler: {{type_hint: WarmupCosine, config: {{warmup_steps: 1, decay_steps: 30}}}}
"""


def test_ids_in_range_are_not_blamed() -> None:
    import torch

    assert out_of_vocabulary(torch.tensor([[0, 256]]), 257, 1) is None
    assert "token id 300, outside" in out_of_vocabulary(torch.tensor([[3, 300]]), 257, 4).message


def test_a_damaged_pack_stops_the_run_naming_the_data(tmp_path: Path, capsys) -> None:
    tok = ByteLevelTokenizer()
    prefix = tmp_path / "p"
    with PackedWriter(prefix, vocab_size=tok.vocab_size, eod_id=tok.eod_id,
                      fingerprint=tok.fingerprint()) as w:
        w.add_documents(np.arange(400, dtype=np.int64) % 256, np.array([400]))
    bin_path = pack_paths(prefix)[0]
    raw = bytearray(bin_path.read_bytes())
    raw[-800:] = b"\xff" * 800  # every token changed after packing: ids 65535
    bin_path.write_bytes(bytes(raw))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(pack=prefix))
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "run", str(recipe), "--run-dir", str(tmp_path / "run"),
              "--allow-drift", "trainer.max_steps=30"])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "the training batch holds token id 65535, outside the model's vocabulary" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused at its first step: no folder left
