"""The JSONL documents component, built from a recipe entry with its tokenizer injected."""

from __future__ import annotations

from pydantic import TypeAdapter

from llm_gym.registry import ResolverRegistry


def test_jsonl_documents_from_a_recipe_entry(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"meta": {"body": "hi"}}\n{"meta": {"body": "there"}}\n')
    registry = ResolverRegistry.from_installed_plugins()
    entries = {
        "documents": TypeAdapter(registry.kind("documents").choice_type).validate_python(
            {"type_hint": "JSONL", "config": {"path": str(data), "field": "meta.body"}}),
        "tokenizer": TypeAdapter(registry.kind("tokenizer").choice_type).validate_python(
            "ByteLevel"),
    }
    built = registry.build_components(entries)
    docs = built["documents"]
    assert len(docs) == 2 and docs.text(1) == "there"
    assert list(docs[0]) == list(b"hi")  # tokenized by the injected byte-level tokenizer
