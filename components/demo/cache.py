"""Prepare the demo data once per machine, into a cache directory, safely under concurrency.

Each artefact is written atomically by its own tool; a file lock makes concurrent ranks
(or runs) wait for the first one instead of repeating the work.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llm_gym.data.demo_corpus import write_corpus_part, write_demo_corpus
from llm_gym.data.pack import pack_jsonl
from llm_gym.data.packed import pack_paths
from llm_gym.errors import UserError

DEFAULT_CACHE = "~/.cache/llm_gym/demo"


def cache_dir(configured: str | None) -> Path:
    """The recipe's ``cache_dir``, else ``$LLM_GYM_DEMO_CACHE``, else
    ``$XDG_CACHE_HOME/llm_gym/demo``, else ``~/.cache/llm_gym/demo``; created if missing."""
    path = Path(configured or os.environ.get("LLM_GYM_DEMO_CACHE") or _default_cache())
    path = path.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create the demo data cache: {e.strerror}") from None
    return path


def _default_cache() -> Path:
    # The XDG base directory spec: a relative XDG_CACHE_HOME is invalid and ignored.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "llm_gym" / "demo"
    return Path(DEFAULT_CACHE)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def announce(what: str, path: Path) -> None:
    """Say what the first run spends its first seconds on (stderr: stdout may be data)."""
    print(f"llm_gym: preparing the demo data once: {what} -> {path}", file=sys.stderr,
          flush=True)


def demo_corpus(directory: Path, corpus_mb: float) -> Path:
    path = directory / f"corpus-{corpus_mb:g}mb.jsonl"
    with locked(directory):
        if not path.exists():
            announce(f"{corpus_mb:g} MB of docstring prose", path)
            write_demo_corpus(path, target_mb=corpus_mb)
    return path


def demo_corpus_part(directory: Path, corpus_mb: float, part: str) -> Path:
    """The documents of one part (``all``, ``stdlib``, ``packages``) of the demo corpus."""
    corpus = demo_corpus(directory, corpus_mb)
    if part == "all":
        return corpus
    path = directory / f"corpus-{corpus_mb:g}mb-{part}.jsonl"
    with locked(directory):
        if not path.exists():
            write_corpus_part(corpus, path, part)
    return path


def demo_tokenizer_file(directory: Path, corpus_mb: float, vocab_size: int) -> Path:
    from llm_gym.data.tokenizer_training import train_bpe_tokenizer

    corpus = demo_corpus(directory, corpus_mb)
    path = directory / f"tokenizer-{corpus_mb:g}mb-{vocab_size}.json"
    with locked(directory):
        if not path.exists():
            announce(f"a {vocab_size}-token BPE tokenizer", path)
            train_bpe_tokenizer(corpus, vocab_size, path)
    return path


def demo_pack(directory: Path, corpus_mb: float, tokenizer,  # noqa: ANN001
              part: str = "all") -> Path:
    """The corpus (or one part of it) packed with ``tokenizer``; one pack per part and
    tokenizer fingerprint."""
    corpus = demo_corpus_part(directory, corpus_mb, part)
    name = f"{corpus_mb:g}mb" if part == "all" else f"{corpus_mb:g}mb-{part}"
    prefix = directory / f"pack-{name}-{tokenizer.fingerprint()[:16]}"
    with locked(directory):
        if not pack_paths(prefix)[0].exists():
            announce("the corpus, tokenized and packed", prefix)
            pack_jsonl(corpus, tokenizer, prefix, workers=min(4, os.cpu_count() or 1))
    return prefix
