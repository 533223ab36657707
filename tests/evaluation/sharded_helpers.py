"""Worker for the sharding test: the same model and task files scored in 1 or N ranks."""

from __future__ import annotations

from typing import Any

import torch

from llm_gym.evaluation.multiple_choice import MultipleChoice, encode_examples
from llm_gym.evaluation.perplexity import TextPerplexity
from llm_gym.evaluation.task_files import read_choice_examples, read_texts
from llm_gym.runner.distributed import distributed_world
from llm_gym_components.models.gpt2 import GPT2
from llm_gym_components.tokenizers import ByteLevelTokenizer


def score_files(hellaswag: str, texts: str) -> dict[str, Any]:
    with distributed_world() as world:
        torch.manual_seed(0)  # the same weights on every rank
        model = GPT2(vocab_size=257, n_positions=32, n_embd=16, n_layer=1, n_head=2)
        model.init_weights()
        tokenizer = ByteLevelTokenizer()
        mc = MultipleChoice(encode_examples(read_choice_examples(hellaswag), tokenizer), world)
        ppl = TextPerplexity(read_texts(texts), tokenizer, world, batch_size=2)
        return {"mc": mc.evaluate(model, lambda: False),
                "text": ppl.evaluate(model, lambda: False)}
