"""Local lm-evaluation-harness tasks the bridge's tests write: one task YAML per request
type (multiple choice, rolling log-likelihood, generation), each reading a local JSONL file
through datasets' json loader, so nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from tests.evaluation.task_data import write_hellaswag, write_texts

CHOICE_TASK, ROLLING_TASK, GENERATE_TASK = "tiny_hellaswag", "tiny_texts", "tiny_generate"
EXAMPLES, TEXTS = 24, 10
MAX_GEN_TOKS = 8  # under the 32-token model's length, as the hf backend requires

# {data} is the local file; the rest is lm-eval's task format (docs/evaluation.md shows it).
YAMLS = {
    CHOICE_TASK: """\
task: tiny_hellaswag
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_target: label
doc_to_choice: endings
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    ROLLING_TASK: """\
task: tiny_texts
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
    GENERATE_TASK: """\
task: tiny_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{text[:10]}}}}"
doc_to_target: "{{{{text[10:]}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: {max_gen_toks}
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


def write_tasks(root: Path) -> dict[str, Path]:
    """The three tasks' YAMLs in ``root/tasks`` and their data beside; returns
    ``{"tasks": the directory, "hellaswag": its JSONL, "texts": the texts' JSONL}``."""
    hellaswag = write_hellaswag(root / "hellaswag.jsonl", EXAMPLES, long_contexts=3)
    texts = write_texts(root / "texts.jsonl", TEXTS)
    tasks = root / "tasks"
    tasks.mkdir()
    for name, data in ((CHOICE_TASK, hellaswag), (ROLLING_TASK, texts), (GENERATE_TASK, texts)):
        text = YAMLS[name].format(data=data, max_gen_toks=MAX_GEN_TOKS)
        (tasks / f"{name}.yaml").write_text(text)
    return {"tasks": tasks, "hellaswag": hellaswag, "texts": texts}
