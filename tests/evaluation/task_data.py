"""Small task files the evaluation tests write: HellaSwag's format and texts."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("the a cat dog runs jumps over under table chair quickly slowly red blue "
         "def return self import class").split()


def write_hellaswag(path: Path, n: int, *, long_contexts: int = 1, seed: int = 0) -> Path:
    """``n`` four-ending examples in HellaSwag's fields, short enough for a 32-token
    byte-level model except the first ``long_contexts``, which are cut to fit."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            words = 30 if i < long_contexts else rng.randint(1, 3)
            ctx = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()
            endings = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2))) + "."
                       for _ in range(4)]
            f.write(json.dumps({"ind": i, "activity_label": "Demo", "ctx_a": ctx, "ctx_b": "",
                                "ctx": ctx, "endings": endings, "label": rng.randrange(4),
                                "split": "val"}) + "\n")
    return path


def write_texts(path: Path, n: int, seed: int = 1) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS)
                                                 for _ in range(rng.randint(2, 25)))}) + "\n")
    return path


def evaluators_override(hellaswag: Path, texts: Path, every: int = 4, *extra: str) -> str:
    return ("trainer.evaluators=["
            f"{{type_hint: MultipleChoice, config: {{path: '{hellaswag}', every: {every}}}}}, "
            f"{{type_hint: TextPerplexity, config: {{path: '{texts}', every: {every}}}}}"
            + "".join(f", {e}" for e in extra) + "]")
