"""A Hugging Face model directory on disk: ``config.json`` and the weights, read safely.

Weights are read from ``model.safetensors`` (or its sharded index), else from
``pytorch_model.bin`` (or its index) with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers. Nothing in the directory is ever imported or
executed: no ``trust_remote_code``, no custom classes.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, open_input, read_json_object, same_file_path
from llm_gym.hf.safetensors import load_file, read_header, save_file

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
PICKLE = "pytorch_model.bin"


class WeightInfo(NamedTuple):
    """A tensor of a weight file, known without reading its data."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of ``directory`` as a dict; ``UserError`` if missing or not JSON."""
    return read_json(Path(directory) / CONFIG, what="a Hugging Face model directory needs "
                     "config.json")


def read_json(path: Path, *, what: str) -> dict[str, Any]:
    """``read_json_object``, with JSON nested past Python's recursion limit a UserError too."""
    try:
        return read_json_object(path, what=what)
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply ({what})") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model in ``directory``, by its name in the checkpoint."""
    reader, files = _weight_files(Path(directory))
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        tensors.update(reader(path))
    return tensors


def read_weight_infos(directory: Path) -> dict[str, WeightInfo]:
    """Dtype and shape of every tensor of the model in ``directory``, read without its
    data (safetensors headers; pickles mapped, not read), so that a config.json can be
    checked against the weights before a model of its sizes is allocated."""
    reader, files = _weight_files(Path(directory))
    infos: dict[str, WeightInfo] = {}
    for path in files:
        if reader is load_file:
            found = {n: (i.dtype, i.shape) for n, i in read_header(path).tensors.items()}
        else:
            # Only the zip format can be mapped; a legacy pickle is read (its file's size).
            state = _load_pickle(path, mmap_zip=True)
            found = {n: (t.dtype, tuple(t.shape)) for n, t in state.items()}
        for name, (dtype, shape) in found.items():
            if name in infos:
                raise UserError(f"{path}: tensor {name!r} is also in {infos[name].file}")
            infos[name] = WeightInfo(dtype, shape, path)
    return infos


def _weight_files(directory: Path) -> tuple[Callable[..., dict[str, torch.Tensor]], list[Path]]:
    for name, reader in ((SAFETENSORS, load_file), (PICKLE, _load_pickle)):
        single, index = directory / name, directory / f"{name}.index.json"
        # Anything of that name is the weights: the reader opens it once and refuses what
        # is not a regular file (a FIFO, a directory), naming it, rather than passing over it.
        if os.path.lexists(single):
            return reader, [single]
        if os.path.lexists(index):
            return reader, _shards(index)
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


def _shards(index: Path) -> list[Path]:
    weight_map = read_json(index, what="a sharded checkpoint's index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"{index}: no 'weight_map' naming the shard of each tensor")
    shards = set(weight_map.values())
    # Shards are named relative to the index; a name reaching outside it is refused.
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise UserError(f"{index}: shard name {shard!r} is not a plain file name")
    return [index.parent / shard for shard in sorted(shards)]


def _load_pickle(path: Path, *, mmap_zip: bool = False) -> dict[str, torch.Tensor]:
    """``path``'s state_dict, opened once (a regular file, checked on the descriptor);
    ``mmap_zip``: a zip-format file is mapped rather than read."""
    with open_input(path, "a pytorch_model.bin") as f:
        try:
            mapped = mmap_zip and zipfile.is_zipfile(f)
            f.seek(0)
            # torch maps only a file it opens by name: the name of this open file.
            source = same_file_path(f, path) if mapped else f
            state = torch.load(source, map_location="cpu", weights_only=True, mmap=mapped)
        except Exception as exc:  # weights_only refusals and corrupt files alike
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise UserError(f"{path}: cannot be loaded as plain tensors: {first}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserError(f"{path}: expected a dict of tensors (a state_dict)")
    return state
