"""``llm_gym tools ...``: turn JSONL into memory-mapped training data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from llm_gym.cli.params import BoundedInt, FiniteFloat

_ON_BAD_LINE = click.Choice(["fail", "skip"])
# Kept in step with llm_gym.data.sources.FORMATS (not imported: --help imports no data code).
_FORMATS = ("auto", "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrow", "hf-disk")
_MAX_WORKERS = 1024


@click.group()
def tools() -> None:
    """Prepare data: line indexes, tokenizers, packed token files, the demo corpus."""


@contextmanager
def _named_as_flags() -> Iterator[None]:
    """Errors raised deep in the data code name Python arguments; here the flags."""
    from llm_gym.data.line_scan import CLI_SKIP_HINT, BadLineError

    try:
        yield
    except BadLineError as e:
        raise e.with_skip_hint(CLI_SKIP_HINT) from None


def _print_skipped(bad_lines: Sequence[tuple[str, str]], total: int,
                   records: str = "lines") -> None:
    """``bad_lines``: (where, reason) of the first skipped, ``total`` of them all."""
    from llm_gym.cli.output import err

    for where, reason in bad_lines:
        err.print(f"skipped {where}: {reason}", markup=False)
    if total > len(bad_lines):
        err.print(f"skipped {total - len(bad_lines)} more bad {records}", markup=False)


def _at_lines(source: Path, bad_lines: Sequence[Any]) -> list[tuple[str, str]]:
    return [(f"{source}:{line_no}", reason) for line_no, reason in bad_lines]


@tools.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Index path (default: FILE.idx).")
@click.option("--validate", is_flag=True, help="Parse every line as JSON; report bad lines.")
@click.option("--on-bad-line", type=_ON_BAD_LINE, default="fail",
              show_default=True, help="With --validate: stop, or leave bad lines out.")
def index(source: Path, out: Path | None, validate: bool, on_bad_line: str) -> None:
    """Write the line index of a JSONL file (byte offset of every document)."""
    run_index(source, out=out, validate=validate, on_bad_line=on_bad_line)


def run_index(source: Path, *, out: Path | None, validate: bool, on_bad_line: str) -> None:
    from llm_gym.cli.output import err
    from llm_gym.cli.output import out as console
    from llm_gym.data.line_index import build_line_index

    with _named_as_flags():
        summary = build_line_index(source, out, validate=validate, on_bad_line=on_bad_line,
                                   progress=err.is_terminal)
    _print_skipped(_at_lines(source, summary.bad_lines), summary.bad_count)
    console.print(
        f"indexed {summary.lines} lines of {source} ({summary.empty_lines} empty skipped, "
        f"{summary.bytes / 1e6:.1f} MB in {summary.seconds:.2f}s) -> {summary.path}",
        markup=False,
    )


@tools.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--tokenizer", "tokenizer_spec", required=True,
              help="A tokenizer.json file, or a tokenizer type_hint (see `components list "
              "tokenizer`).")
@click.option("--tokenizer-option", "tokenizer_options", multiple=True, metavar="KEY=VALUE",
              help="Config of a tokenizer given by type_hint; repeatable.")
@click.option("--out", "out_prefix", required=True, type=click.Path(path_type=Path),
              help="Output prefix: writes PREFIX.bin and PREFIX.idx (with --shard-tokens: a"
              " directory of shards).")
@click.option("--format", "input_format", type=click.Choice(_FORMATS), default="auto",
              show_default=True, help="Format of the inputs; auto: by file name.")
@click.option("--field", default="text", show_default=True,
              help="JSON key (or dotted path), or the text column of a table.")
@click.option("--workers", type=BoundedInt(1, _MAX_WORKERS), default=1, show_default=True,
              help="Tokenizer processes; the output is identical for any number.")
@click.option("--on-bad-line", type=_ON_BAD_LINE, default="fail", show_default=True,
              help="Stop at a bad line or row, or leave bad ones out (listed).")
@click.option("--shard-tokens", type=BoundedInt(1, 2**62), default=None,
              help="Write shards of about this many tokens and a manifest into --out.")
@click.option("--num-jobs", type=BoundedInt(1, 99_999), default=1, show_default=True,
              help="With --shard-tokens: the inputs are split among this many jobs...")
@click.option("--job-index", type=BoundedInt(0, 99_998), default=0, show_default=True,
              help="...and this job packs share JOB_INDEX (0-based), e.g."
              " $SLURM_ARRAY_TASK_ID.")
def pack(inputs: tuple[str, ...], tokenizer_spec: str, tokenizer_options: tuple[str, ...],
         out_prefix: Path, input_format: str, field: str, workers: int, on_bad_line: str,
         shard_tokens: int | None, num_jobs: int, job_index: int) -> None:
    """Tokenize documents into a packed token file with a document index.

    INPUTS are files (JSONL, .jsonl.gz, .jsonl.zst, .parquet, .arrow), directories
    (searched for such files, or a Hugging Face save_to_disk directory) and globs, read in
    the order given, each one's files sorted by path.
    """
    from llm_gym.cli.output import err, out
    from llm_gym.data.pack import pack_files
    from llm_gym.data.sources import expand_inputs
    from llm_gym.errors import UserError

    if shard_tokens is None and (num_jobs != 1 or job_index != 0):
        raise UserError("--num-jobs and --job-index split a sharded pack: add --shard-tokens N")
    files = expand_inputs(list(inputs), input_format)
    tokenizer = build_tokenizer(tokenizer_spec, tokenizer_options)
    options = dict(field=field, workers=workers, progress=err.is_terminal,
                   on_bad_line=on_bad_line)
    with _named_as_flags():
        if shard_tokens is None:
            summary = pack_files(files, tokenizer, out_prefix, **options)
        else:
            from llm_gym.data.shard_pack import job_share, pack_shards

            start, stop = job_share(len(files), num_jobs, job_index)
            if num_jobs > 1:
                share = (f"inputs {start + 1}..{stop}" if stop > start
                         else "no input (fewer inputs than jobs)")
                err.print(f"job {job_index} of {num_jobs}: {share} of {len(files)}",
                          markup=False)
            summary = pack_shards(files, tokenizer, out_prefix, shard_tokens=shard_tokens,
                                  num_jobs=num_jobs, job_index=job_index, **options)
    if len(files) > 1 or num_jobs > 1:
        for i, f in enumerate(files):
            err.print(f"input {i + 1}: {f.path} ({f.format})", markup=False)
    _print_skipped(summary.bad_lines, summary.n_bad_lines, summary.records)
    out.print(f"packed {summary}", markup=False)


@tools.command("pack-merge")
@click.argument("directory", type=click.Path(path_type=Path))
def pack_merge(directory: Path) -> None:
    """Check every job's shards (SHA-256, tokenizer) and write DIRECTORY/manifest.json."""
    from llm_gym.cli.output import out
    from llm_gym.data.shard_manifest import MANIFEST_NAME, merge_jobs

    merged = merge_jobs(directory)
    out.print(f"merged {merged.num_jobs} jobs: {len(merged.shards)} shards, {merged.n_docs}"
              f" documents, {merged.n_tokens} tokens -> {directory / MANIFEST_NAME}",
              markup=False)


def build_tokenizer(spec: str, options: tuple[str, ...] = ()):  # noqa: ANN201
    """A tokenizer from a tokenizer.json path or a registered tokenizer type_hint."""
    from llm_gym.errors import UserError
    from llm_gym.registry import ResolverRegistry

    registry = ResolverRegistry.from_installed_plugins()
    name, given = ("HFJson", {"path": spec}) if spec.endswith(".json") else (spec, {})
    try:
        component = registry.spec("tokenizer", name)
    except LookupError as exc:
        raise UserError(f"--tokenizer: {exc}") from None
    kwargs = {**given, **tokenizer_options(options, component.name, component.config_cls,
                                           given)}
    return registry.build_component_by_key_query("tokenizer", component.name, kwargs)


def tokenizer_options(
    options: Sequence[str], name: str, config_cls: Any, given: dict[str, Any]
) -> dict[str, str]:
    """``--tokenizer-option KEY=VALUE`` items as config keys, each checked against
    ``config_cls``: an unknown key names the valid ones (and the closest), a value of the
    wrong type names the type expected. ``given`` are keys --tokenizer already set."""
    from pydantic import ValidationError

    from llm_gym.errors import UserError
    from llm_gym.registry.fields import describe_fields
    from llm_gym.registry.kinds import closest_name

    fields = {row[0]: row for row in describe_fields(config_cls) if row[0] not in given}
    valid = ", ".join(f"{key} ({row[1]})" for key, row in fields.items()) or "none"
    kwargs: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--tokenizer-option {item!r}: expected KEY=VALUE")
        if key in given:
            raise UserError(
                f"--tokenizer-option {item!r}: {key} is set by --tokenizer {given[key]};"
                f" {name}'s other options: {valid}"
            )
        if key not in fields:
            closest = closest_name(key, list(fields))
            hint = f" (did you mean {closest!r}?)" if closest else ""
            raise UserError(
                f"--tokenizer-option {item!r}: tokenizer {name} has no option {key!r}{hint};"
                f" its options: {valid}"
            )
        if key in kwargs:
            raise UserError(f"--tokenizer-option: {key} is given twice")
        kwargs[key] = value
    try:
        config_cls(**given, **kwargs)
    except ValidationError as exc:
        problem = exc.errors()[0]
        key = str(problem["loc"][0]) if problem["loc"] else ""
        if key in kwargs:
            _, type_name, _, constraints, _ = fields[key]
            expected = type_name + (f" ({constraints})" if constraints else "")
            raise UserError(
                f"--tokenizer-option {key}={kwargs[key]}: tokenizer {name}'s {key} expects"
                f" {expected}: {problem['msg']}"
            ) from None
        missing = ", ".join(str(p["loc"][0]) for p in exc.errors() if p["loc"])
        raise UserError(
            f"--tokenizer {name}: needs --tokenizer-option for {missing or 'its options'}"
            f" ({exc.errors()[0]['msg']}); its options: {valid}"
        ) from None
    return kwargs


@tools.command("demo-corpus")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--target-mb", type=FiniteFloat(min=0.01, max=1e6), default=8.0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def demo_corpus(out: Path, target_mb: float, force: bool) -> None:
    """Write English prose from installed Python docstrings as JSONL (no download)."""
    from llm_gym.cli.output import err
    from llm_gym.cli.output import out as console
    from llm_gym.data.demo_corpus import write_demo_corpus
    from llm_gym.errors import UserError

    if (out.exists() or out.is_symlink()) and not force:
        raise UserError(f"{out}: already exists; --force replaces it")
    summary = write_demo_corpus(out, target_mb=target_mb, progress=err.is_terminal)
    console.print(f"wrote {summary.docs} documents, {summary.bytes / 1e6:.1f} MB -> {out}",
                  markup=False)


@tools.group()
def tokenizer() -> None:
    """Tokenizer tools."""


@tokenizer.command("train")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--vocab-size", type=BoundedInt(257, 2**32), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="tokenizer.json to write")
@click.option("--format", "input_format", type=click.Choice(_FORMATS), default="auto",
              show_default=True, help="Format of the inputs; auto: by file name.")
@click.option("--field", default="text", show_default=True,
              help="JSON key (or dotted path), or the text column of a table.")
@click.option("--on-bad-line", type=_ON_BAD_LINE, default="fail", show_default=True,
              help="Stop at a bad line or row, or leave bad ones out (listed).")
def train_tokenizer(inputs: tuple[str, ...], vocab_size: int, out: Path, input_format: str,
                    field: str, on_bad_line: str) -> None:
    """Train a byte-level BPE tokenizer (Hugging Face tokenizers) on a corpus.

    INPUTS are read as `tools pack` reads them: files (JSONL, .jsonl.gz, .jsonl.zst,
    .parquet, .arrow), directories (searched for such files, or a Hugging Face
    save_to_disk directory) and globs, in the order given.
    """
    from llm_gym.cli.output import out as console
    from llm_gym.data.line_scan import MAX_BAD_LINES_KEPT
    from llm_gym.data.tokenizer_training import train_bpe_tokenizer

    skipped: list[tuple[str, str]] = []
    count = 0

    def on_skip(where: str, reason: str) -> None:
        nonlocal count
        count += 1
        if len(skipped) < MAX_BAD_LINES_KEPT:
            skipped.append((where, reason))

    with _named_as_flags():
        path = train_bpe_tokenizer(list(inputs), vocab_size, out, field=field,
                                   input_format=input_format, on_bad_line=on_bad_line,
                                   on_skip=on_skip)
    _print_skipped(skipped, count)
    console.print(f"wrote {path}", markup=False)
