"""Every YAML the project reads is bounded: a "billion laughs" file is refused quickly, in
little memory, wherever it is read (a recipe, an override, a run's resolved recipe)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from llm_gym.config import yaml_files
from llm_gym.config.yaml_files import MAX_YAML_NODES, parse_yaml, read_yaml_file
from llm_gym.errors import UserError


def billion_laughs(levels: int = 9) -> str:
    """``a8`` alone stands for 10**9 strings, in about 500 bytes."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_file_is_refused_quickly_in_bounded_memory(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(UserError, match="expands to more than") as refused:
        read_yaml_file(path)
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert str(path) in refused.value.message and ":5:" in refused.value.message
    assert elapsed < 1.0 and grown_mib < 50, (elapsed, grown_mib)


def test_aliases_within_the_limit_still_load():
    text = "base: &base {lr: 1.0e-3, betas: [0.9, 0.95]}\nother: *base\nsteps: 1e3\n"
    assert parse_yaml(text, "x.yaml") == {"base": {"lr": 1e-3, "betas": [0.9, 0.95]},
                                          "other": {"lr": 1e-3, "betas": [0.9, 0.95]},
                                          "steps": 1000.0}  # OmegaConf's float rule


def test_the_node_limit_counts_expanded_nodes_not_lines():
    items = ", ".join(["*a"] * (MAX_YAML_NODES // 11 + 1))
    with pytest.raises(UserError, match="expands to more than"):
        parse_yaml(f"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [{items}]\n", "x.yaml")


def test_a_file_past_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(yaml_files, "MAX_YAML_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 2000 + "\n")
    with pytest.raises(UserError, match=r"2,004 bytes, more than the 1,000"):
        read_yaml_file(path)


def test_omegaconf_environment_cannot_lift_our_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("OMEGACONF_MAX_YAML_EXPANDED_NODES", "none")
    with pytest.raises(UserError, match="expands to more than"):
        parse_yaml(billion_laughs(), "laughs.yaml")


def test_a_directory_is_not_a_yaml_file(tmp_path: Path):
    with pytest.raises(UserError, match="not a regular file"):
        read_yaml_file(tmp_path)
