"""A Hugging Face model directory on disk: ``config.json`` and the weights, read safely.

Weights are read from ``model.safetensors`` (or its sharded index), else from
``pytorch_model.bin`` (or its index) with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers. Nothing in the directory is ever imported or
executed: no ``trust_remote_code``, no custom classes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, read_json_object
from llm_gym.hf.safetensors import load_file, save_file

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
PICKLE = "pytorch_model.bin"


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of ``directory`` as a dict; ``UserError`` if missing or not JSON."""
    path = Path(directory) / CONFIG
    return read_json_object(path, what="a Hugging Face model directory needs config.json")


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model in ``directory``, by its name in the checkpoint."""
    directory = Path(directory)
    for name, reader in ((SAFETENSORS, load_file), (PICKLE, _load_pickle)):
        single, index = directory / name, directory / f"{name}.index.json"
        if single.is_file():
            return reader(single)
        if index.is_file():
            return _read_sharded(index, reader)
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise UserError(
        f"{directory}: no weights found (expected {SAFETENSORS} or {PICKLE}, or their "
        f".index.json); the directory holds: {', '.join(present) or 'nothing'}"
    )


def write_model_dir(
    directory: Path, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> None:
    """Write ``config.json`` and ``model.safetensors`` (creating ``directory``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / CONFIG, config)
    # "format": "pt" is what transformers checks to know the tensors are torch-laid-out.
    save_file(tensors, directory / SAFETENSORS, metadata={"format": "pt"})


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_output(Path(path), "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _read_sharded(index: Path, reader: Any) -> dict[str, torch.Tensor]:
    weight_map = read_json_object(index, what="a sharded checkpoint's index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"{index}: no 'weight_map' naming the shard of each tensor")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        # Shards are named relative to the index; a name reaching outside it is refused.
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise UserError(f"{index}: shard name {shard!r} is not a plain file name")
        tensors.update(reader(index.parent / shard))
    return tensors


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except Exception as exc:  # weights_only refusals and corrupt files alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot be loaded as plain tensors: {first}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserError(f"{path}: expected a dict of tensors (a state_dict)")
    return state
