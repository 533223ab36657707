"""``llm_gym export hf``, ``llm_gym import hf`` and ``llm_gym generate``: a trained model
outside training. Heavy imports happen inside the commands, so ``--help`` stays instant."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llm_gym.cli.params import BoundedInt, FiniteFloat, Seed, bad_parameter
from llm_gym.runner.sampling_args import MIN_TEMPERATURE

source_argument = click.argument(
    "source", metavar="RUN_DIR|CHECKPOINT", type=click.Path(path_type=Path)
)


@click.group("export")
def export_group() -> None:
    """Write a trained model in another framework's format."""


@export_group.command("hf")
@source_argument
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True,
              help="Write into a non-empty OUT_DIR: the exported files replace theirs there; "
              "nothing else in it is touched.")
def export_hf_cmd(source: Path, out_dir: Path, force: bool) -> None:
    """Write a Hugging Face model directory (config.json, model.safetensors, tokenizer).

    SOURCE is a run directory (its newest complete checkpoint is used) or one checkpoint
    directory. GPT-2 and Llama models are exported (docs/exporting.md); transformers loads
    the result with AutoModelForCausalLM.from_pretrained(OUT_DIR).
    The files appear together or, if the export fails, not at all.
    """
    from llm_gym.cli.output import note as print_note
    from llm_gym.cli.output import out
    from llm_gym.hf.export import export_hf

    result = export_hf(source, out_dir, force=force)
    for note in result.notes:
        print_note(note)
    origin = result.checkpoint or f"{source} (imported weights)"
    out.print(f"exported {origin} -> {result.out_dir}: {', '.join(result.files)}",
              markup=False, highlight=False)


@click.group("import")
def import_group() -> None:
    """Start a run directory from a model trained elsewhere."""


@import_group.command("hf")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path),
              help="The new run directory.")
@click.option("--recipe", "base", default=None, metavar="NAME[@V]|PATH",
              help="Recipe for everything but the model (and the tokenizer, when DIRECTORY "
              "has tokenizer files); KEY=VALUE overrides apply to it. Default: the "
              "architecture's own (gpt2-tiny for GPT-2, llama-tiny for Llama).")
@click.option("--recipe-dir", "recipe_dirs", multiple=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Extra directory of recipes; repeatable.")
@click.option("--allow-drift", is_flag=True, help="Use the base recipe although pins drifted.")
def import_hf_cmd(directory: Path, overrides: tuple[str, ...], run_dir: Path, base: str | None,
                  recipe_dirs: tuple[Path, ...], allow_drift: bool) -> None:
    """Import a Hugging Face GPT-2 or Llama directory (config.json + model.safetensors or
    pytorch_model.bin) as a run directory to generate from, export or train further.

    Nothing in DIRECTORY is executed: weights are read as safetensors or with
    torch.load(weights_only=True).
    """
    from llm_gym.cli.output import note as print_note
    from llm_gym.cli.output import out
    from llm_gym.hf.importing import import_hf

    result = import_hf(directory, run_dir, base=base, overrides=overrides,
                       recipe_dirs=recipe_dirs, allow_drift=allow_drift)
    for note in result.notes:
        print_note(note)
    out.print(
        f"imported {result.model_type} ({result.num_params / 1e6:.1f}M parameters) from "
        f"{directory} into {result.run_dir}\n"
        f"  sample:  llm_gym generate {result.run_dir} --prompt 'Hello'\n"
        f"  train:   llm_gym recipe run {result.recipe_path} --run-dir {result.run_dir}",
        markup=False, highlight=False,
    )


# Generation has no KV cache: each token is a forward pass over the context. A million
# is far past any useful sample and still bounds the loop and the growing id tensor.
MAX_NEW_TOKENS = 1_000_000
DEVICE_TYPES = ("cpu", "cuda")


@click.command()
@source_argument
@click.option("--prompt", default="", help="Text to continue (default: a new document).")
@click.option("--max-new-tokens", type=BoundedInt(0, MAX_NEW_TOKENS), default=100,
              show_default=True)
@click.option("--temperature", type=FiniteFloat(0, 100), default=0.8, show_default=True,
              help=f"0 is greedy decoding; otherwise at least {MIN_TEMPERATURE:g}.")
@click.option("--top-k", type=BoundedInt(1, 2**31 - 1), default=None,
              help="Sample only among the K likeliest tokens (at most the vocabulary).")
@click.option("--top-p", type=FiniteFloat(0, 1), default=None,
              help="Sample only among the likeliest tokens whose probabilities reach P "
                   "(nucleus sampling; 0 < P <= 1).")
@click.option("--stop", "stop_texts", multiple=True, metavar="TEXT",
              help="Stop before this text, which must be one token of the run's tokenizer "
                   "(repeatable).")
@click.option("--seed", type=Seed(), default=0, show_default=True,
              help="The same seed gives the same text (on the same device); 0..2**64-1.")
@click.option("--device", default="cpu", show_default=True, help="e.g. cpu, cuda, cuda:1.")
@click.option("--stop-at-eod/--no-stop-at-eod", default=True, show_default=True,
              help="Stop when the model ends the document.")
def generate(source: Path, prompt: str, max_new_tokens: int, temperature: float,
             top_k: int | None, top_p: float | None, stop_texts: tuple[str, ...], seed: int,
             device: str, stop_at_eod: bool) -> None:
    """Continue --prompt with a trained model, printing text as it is generated."""
    from llm_gym.cli.output import note as print_note
    from llm_gym.errors import UserError
    from llm_gym.runner.generation import stream_text, stream_tokens
    from llm_gym.runner.loading_model import load_run_model

    if top_p is not None and top_p <= 0:
        raise bad_parameter("--top-p", f"{top_p:g} keeps no token: give a number in (0, 1]")
    if 0 < temperature < MIN_TEMPERATURE:
        raise bad_parameter("--temperature", f"{temperature:g} is below {MIN_TEMPERATURE:g}; "
                            "use 0 for greedy decoding")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes that are not UTF-8 arrive as lone surrogates
        raise bad_parameter("--prompt", f"is not valid UTF-8 text ({exc.reason} at "
                            f"character {exc.start})") from None
    from llm_gym.model_contract import as_language_model

    run = load_run_model(source, device=_device(device))
    for note in run.notes:
        print_note(note)
    vocab_size = as_language_model(run.model).vocab_size
    if top_k is not None and top_k > vocab_size:
        raise bad_parameter("--top-k", f"{top_k} exceeds the model's vocabulary of "
                            f"{vocab_size} tokens")
    tokenizer = run.tokenizer
    if tokenizer is None:
        raise UserError(f"{run.run_dir}: the recipe has no tokenizer, so text cannot be "
                        "turned into token ids")
    # An empty prompt starts a new document, as the model saw at every document boundary.
    prompt_ids = tokenizer.encode(prompt) if prompt else [tokenizer.eod_id]
    stop_ids = [tokenizer.eod_id] if stop_at_eod else []
    for text in stop_texts:
        ids = tokenizer.encode(text) if text else []
        if len(ids) != 1:
            raise bad_parameter("--stop", f"{text!r} is {len(ids)} tokens of the run's "
                                "tokenizer; give text that is exactly one token")
        stop_ids.append(ids[0])
    tokens = stream_tokens(run.model, prompt_ids, max_new_tokens, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=seed, stop_ids=stop_ids)
    # A vocabulary padded past the tokenizer's (50304 for 50257, for speed) has ids that
    # mean no text; an undertrained model may still sample them.
    tokens = (t for t in tokens if t < tokenizer.vocab_size)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for piece in stream_text(tokenizer, prompt_ids if prompt else [], tokens):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise bad_parameter("--device", f"{name!r} is not a device: {exc}") from None
    if device.type not in DEVICE_TYPES:
        raise bad_parameter("--device", f"{name!r}: generation runs on "
                            f"{' or '.join(DEVICE_TYPES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise bad_parameter("--device", f"{name}: CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise bad_parameter("--device", f"{name}: this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s)")
    return device
