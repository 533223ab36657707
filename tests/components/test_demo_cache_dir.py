"""The demo components' cache_dir description says where the cache goes when it is not
set, in the order the code looks: each place it names is the one used when it is the
first one set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_gym_components.demo.cache import cache_dir
from llm_gym_components.demo.components import DemoBPEConfig, DemoCorpusConfig


def _places(description: str) -> list[str]:
    assert description.startswith("default: "), description
    return description.removeprefix("default: ").split(", else ")


@pytest.mark.parametrize("config", [DemoBPEConfig, DemoCorpusConfig])
def test_the_described_places_are_where_the_cache_goes(config, tmp_path, monkeypatch):
    places = _places(config.model_fields["cache_dir"].description)
    assert [p.split("/")[0] for p in places] == ["$LLM_GYM_DEMO_CACHE", "$XDG_CACHE_HOME", "~"]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLM_GYM_DEMO_CACHE", str(tmp_path / "demo"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for place in places:
        expected = Path(os.path.expanduser(os.path.expandvars(place)))
        assert cache_dir(None) == expected, place
        name = place.split("/")[0].lstrip("$")
        monkeypatch.delenv(name, raising=False)  # the next place is used once this is unset
