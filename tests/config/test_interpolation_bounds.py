"""OmegaConf interpolation is bounded: references repeating references ("${a0}${a0}...",
"[${a0}, ${a0}, ...]", "${oc.select:a0}...") ten levels deep are refused quickly, naming
the recipe and a key of the chain, and normal recipes resolve exactly as before."""

from __future__ import annotations

import resource
import time

import pytest
from omegaconf import Container, OmegaConf
from omegaconf.basecontainer import BaseContainer

from llm_gym.config import interpolation_bounds as bounds
from llm_gym.config.loading import load_config, load_yaml, resolve
from llm_gym.errors import UserError
from tests.conftest import REPO


def chain(form: str, levels: int = 10, width: int = 10) -> str:
    """``a0: x`` and ``a{i}`` = ``form`` of ``width`` references to ``a{i-1}``."""
    lines = ["a0: xxxxxxxxxx"]
    for i in range(1, levels + 1):
        refs = [f"${{a{i - 1}}}"] * width
        if form == "list":
            value = "[" + ", ".join(f'"{r}"' for r in refs) + "]"
        elif form == "select":
            value = '"' + "".join(f"${{oc.select:a{i - 1}}}" for _ in range(width)) + '"'
        else:
            value = '"' + "".join(refs) + '"'
        lines.append(f"a{i}: {value}")
    return "\n".join(lines) + "\n"


def test_a_string_bomb_is_refused_quickly_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(chain("string"))  # a10 alone would be 10**11 characters
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(UserError) as refused:
        load_config(path)
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    message = refused.value.message
    assert message.startswith(f"{path}: a") and "characters" in message, message
    assert elapsed < 1.0 and grown_mib < 100, (elapsed, grown_mib)


@pytest.mark.parametrize(("form", "limit", "unit"), [
    ("list", "MAX_INTERPOLATED_NODES", "nodes"),
    ("select", "MAX_INTERPOLATIONS", "interpolations evaluated"),
])
def test_list_and_resolver_bombs_are_refused(tmp_path, monkeypatch, form, limit, unit):
    # Lowered limits keep the test fast; the bound is what stops the expansion either way.
    monkeypatch.setattr(bounds, limit, 200)
    path = tmp_path / "bomb.yaml"
    path.write_text(chain(form))
    with pytest.raises(UserError, match=rf"more than 200 {unit}|past 200 {unit}") as refused:
        load_config(path)
    assert refused.value.message.startswith(f"{path}: a"), refused.value.message


def test_an_override_cannot_expand_past_the_bound():
    bomb = [f"recipe.a0={'x' * 10}"] + [
        f"recipe.a{i}=\"{f'${{recipe.a{i - 1}}}' * 10}\"" for i in range(1, 10)]
    with pytest.raises(UserError, match="characters"):
        load_config(REPO / "recipes" / "gpt2-debug" / "v1.yaml", bomb)


def test_the_hooks_are_removed_afterwards_even_after_a_refusal(tmp_path):
    originals = (Container._resolve_node_interpolation, Container._evaluate_custom_resolver,
                 BaseContainer.__dict__["_to_content"])
    path = tmp_path / "bomb.yaml"
    path.write_text(chain("string"))
    with pytest.raises(UserError):
        load_config(path)
    assert (Container._resolve_node_interpolation, Container._evaluate_custom_resolver,
            BaseContainer.__dict__["_to_content"]) == originals


def test_repeated_references_within_the_bound_resolve_as_omegaconf_does():
    config = OmegaConf.create(chain("list", levels=3, width=3) + "b: ${a0}-${oc.select:a1}\n")
    assert resolve(config, "x.yaml") == OmegaConf.to_container(config, resolve=True)


@pytest.mark.parametrize("recipe", sorted(p.parent.name for p in
                                          (REPO / "recipes").glob("*/v1.yaml")))
def test_shipped_recipes_resolve_unchanged(recipe):
    config = load_yaml(REPO / "recipes" / recipe / "v1.yaml")
    assert resolve(config, recipe) == OmegaConf.to_container(config, resolve=True)
