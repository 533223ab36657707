"""``llm_gym tools ...``: turn JSONL into memory-mapped training data."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def tools() -> None:
    """Prepare data: line indexes, tokenizers, packed token files, the demo corpus."""


@tools.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Index path (default: FILE.idx).")
@click.option("--validate", is_flag=True, help="Parse every line as JSON; report bad lines.")
@click.option("--on-bad-line", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="With --validate: stop, or leave bad lines out.")
def index(source: Path, out: Path | None, validate: bool, on_bad_line: str) -> None:
    """Write the line index of a JSONL file (byte offset of every document)."""
    run_index(source, out=out, validate=validate, on_bad_line=on_bad_line)


def run_index(source: Path, *, out: Path | None, validate: bool, on_bad_line: str) -> None:
    from llm_gym.cli.output import err
    from llm_gym.cli.output import out as console
    from llm_gym.data.line_index import build_line_index

    summary = build_line_index(source, out, validate=validate, on_bad_line=on_bad_line,
                               progress=err.is_terminal)
    for line_no, reason in getattr(summary, "bad_lines", []) or []:
        err.print(f"skipped {source}:{line_no}: {reason}", markup=False)
    console.print(
        f"indexed {summary.lines} lines of {source} ({summary.empty_lines} empty skipped, "
        f"{summary.bytes / 1e6:.1f} MB in {summary.seconds:.2f}s) -> {summary.path}",
        markup=False,
    )


@tools.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--tokenizer", "tokenizer_spec", required=True,
              help="A tokenizer.json file, or a tokenizer type_hint (see `components list "
              "tokenizer`).")
@click.option("--tokenizer-option", "tokenizer_options", multiple=True, metavar="KEY=VALUE",
              help="Config of a tokenizer given by type_hint; repeatable.")
@click.option("--out", "out_prefix", required=True, type=click.Path(path_type=Path),
              help="Output prefix: writes PREFIX.bin and PREFIX.idx.")
@click.option("--field", default="text", show_default=True, help="JSON key (or dotted path).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tokenizer processes; the output is identical for any number.")
def pack(source: Path, tokenizer_spec: str, tokenizer_options: tuple[str, ...],
         out_prefix: Path, field: str, workers: int) -> None:
    """Tokenize a JSONL file into a packed token file with a document index."""
    from llm_gym.cli.output import err, out
    from llm_gym.data.pack import pack_jsonl

    tokenizer = build_tokenizer(tokenizer_spec, tokenizer_options)
    summary = pack_jsonl(source, tokenizer, out_prefix, field=field, workers=workers,
                         progress=err.is_terminal)
    out.print(f"packed {summary}", markup=False)


def build_tokenizer(spec: str, options: tuple[str, ...] = ()):  # noqa: ANN201
    """A tokenizer from a tokenizer.json path or a registered tokenizer type_hint."""
    from llm_gym.errors import UserError
    from llm_gym.registry import ResolverRegistry

    registry = ResolverRegistry.from_installed_plugins()
    kwargs: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--tokenizer-option {item!r}: expected KEY=VALUE")
        kwargs[key] = value
    if spec.endswith(".json"):
        return registry.build_component_by_key_query(
            "tokenizer", "HFJson", {"path": spec, **kwargs}
        )
    try:
        return registry.build_component_by_key_query("tokenizer", spec, kwargs)
    except LookupError as exc:
        raise UserError(f"--tokenizer: {exc}") from None


@tools.command("demo-corpus")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--target-mb", type=click.FloatRange(min=0.01), default=8.0, show_default=True)
def demo_corpus(out: Path, target_mb: float) -> None:
    """Write English prose from installed Python docstrings as JSONL (no download)."""
    from llm_gym.cli.output import err
    from llm_gym.cli.output import out as console
    from llm_gym.data.demo_corpus import write_demo_corpus

    summary = write_demo_corpus(out, target_mb=target_mb, progress=err.is_terminal)
    console.print(f"wrote {summary.docs} documents, {summary.bytes / 1e6:.1f} MB -> {out}",
                  markup=False)


@tools.group()
def tokenizer() -> None:
    """Tokenizer tools."""


@tokenizer.command("train")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--vocab-size", type=click.IntRange(min=257), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="tokenizer.json to write")
@click.option("--field", default="text", show_default=True)
def train_tokenizer(corpus: Path, vocab_size: int, out: Path, field: str) -> None:
    """Train a byte-level BPE tokenizer (Hugging Face tokenizers) on a JSONL corpus."""
    from llm_gym.cli.output import out as console
    from llm_gym.data.tokenizer_training import train_bpe_tokenizer

    path = train_bpe_tokenizer(corpus, vocab_size, out, field=field)
    console.print(f"wrote {path}", markup=False)
