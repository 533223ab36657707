"""Packed token files: a whole corpus as one flat token array, memory-mapped for training.

A pack is two files sharing a prefix::

    PREFIX.bin   header (128 bytes) + tokens, little-endian uint16 (vocab_size <= 65536)
                 or uint32, documents back to back, each ending with the eod id
    PREFIX.idx   header (128 bytes) + (n_docs + 1) little-endian uint64 token offsets:
                 document i is tokens[offsets[i]:offsets[i + 1]]; offsets[0] = 0 and
                 offsets[n_docs] = n_tokens

Both headers have the same layout (struct ``<8sIIQQQQ64s16s``, 128 bytes, so the payload
starts 8-byte aligned) and the same values; only the magic differs::

    offset size  field
         0    8  magic            b"LGYMTOK\\0" (.bin) or b"LGYMIDX\\0" (.idx)
         8    4  format version   1
        12    4  token itemsize   2 (uint16) or 4 (uint32)
        16    8  vocab_size
        24    8  eod_id
        32    8  n_tokens
        40    8  n_docs
        48   64  tokenizer fingerprint, ASCII, NUL-padded
       112   16  content digest: blake2b-128 of (blake2b(token bytes), blake2b(offset bytes))

The digest ties the pair together: the two files are replaced one after the other, so a
crash in between, or a stray copy, could pair a .bin with another pack's .idx; differing
digests say so at open time. ``PackedTokens.verify()`` recomputes it from the data.

Writers never leave a torn file under the final names: they write to temporary files in
the same directory, fsync them and ``os.replace`` them into place only once complete.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from llm_gym.data.file_kinds import MAGIC_PACKED_BIN, MAGIC_PACKED_IDX
from llm_gym.errors import UserError
from llm_gym.fileio import AtomicFile, open_input, output_error

MAGIC_BIN = MAGIC_PACKED_BIN
MAGIC_IDX = MAGIC_PACKED_IDX
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQQQ64s16s")
HEADER_SIZE = _HEADER.size  # 128
FINGERPRINT_WIDTH = 64
_OFFSET_DTYPE = np.dtype("<u8")


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest stored dtype that holds every id below ``vocab_size``."""
    if not 0 < vocab_size <= 2**32:
        raise ValueError(f"vocab_size must be in 1..2**32, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def pack_paths(prefix: str | Path) -> tuple[Path, Path]:
    """``(PREFIX.bin, PREFIX.idx)``; the suffixes are appended, never substituted."""
    prefix = str(prefix)
    return Path(prefix + ".bin"), Path(prefix + ".idx")


@dataclass(frozen=True)
class PackedHeader:
    itemsize: int
    vocab_size: int
    eod_id: int
    n_tokens: int
    n_docs: int
    fingerprint: str
    digest: bytes = b"\x00" * 16

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"<u{self.itemsize}")

    def to_bytes(self, magic: bytes) -> bytes:
        fp = self.fingerprint.encode("ascii")
        return _HEADER.pack(
            magic, FORMAT_VERSION, self.itemsize, self.vocab_size, self.eod_id,
            self.n_tokens, self.n_docs, fp, self.digest,
        )  # fmt: skip

    @classmethod
    def read(cls, path: Path, magic: bytes) -> PackedHeader:
        """Parse and sanity-check the header of ``path``; UserError names what is wrong."""
        if not Path(path).exists():
            raise UserError(f"{path}: packed token file not found")
        try:
            with open_input(path, "a packed token file") as f:
                raw = f.read(HEADER_SIZE)
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e}") from None
        if len(raw) < HEADER_SIZE:
            raise UserError(
                f"{path}: truncated header: needs {HEADER_SIZE} bytes, the file has {len(raw)}"
            )
        got_magic, version, itemsize, vocab, eod, n_tokens, n_docs, fp, digest = _HEADER.unpack(raw)
        if got_magic != magic:
            other = {MAGIC_BIN: " (that is a .bin header)", MAGIC_IDX: " (that is a .idx header)"}
            raise UserError(
                f"{path}: not an llm_gym packed file: magic {got_magic!r} at byte 0,"
                f" expected {magic!r}{other.get(got_magic, '')}"
            )
        if version != FORMAT_VERSION:
            raise UserError(
                f"{path}: packed format version {version} at byte 8; this llm_gym reads"
                f" version {FORMAT_VERSION} (re-pack the data with this version)"
            )
        if vocab == 0 or vocab > 2**32 or itemsize != token_dtype(vocab).itemsize:
            raise UserError(
                f"{path}: header says itemsize {itemsize} (byte 12) for vocab_size {vocab}"
                f" (byte 16), which this format never writes"
            )
        if eod >= vocab:
            raise UserError(f"{path}: header eod_id {eod} (byte 24) >= vocab_size {vocab}")
        try:
            fingerprint = fp.rstrip(b"\x00").decode("ascii")
        except UnicodeDecodeError:
            raise UserError(f"{path}: tokenizer fingerprint (byte 48) is not ASCII") from None
        return cls(itemsize, vocab, eod, n_tokens, n_docs, fingerprint, digest)


class PackedWriter:
    """Appends documents to a new pack; ``finish()`` makes it appear atomically.

    Use as a context manager: leaving the block by an exception discards the temporary
    files and leaves whatever was at ``prefix`` before untouched.
    """

    def __init__(self, prefix: str | Path, *, vocab_size: int, eod_id: int, fingerprint: str):
        if not 0 <= eod_id < vocab_size:
            raise ValueError(f"eod_id {eod_id} outside the vocabulary 0..{vocab_size - 1}")
        fp = fingerprint.encode("ascii")  # raises on non-ASCII: a bug in the tokenizer class
        if len(fp) > FINGERPRINT_WIDTH:
            raise ValueError(f"tokenizer fingerprint longer than {FINGERPRINT_WIDTH} bytes")
        self.bin_path, self.idx_path = pack_paths(prefix)
        self.dtype = token_dtype(vocab_size)
        self._header = PackedHeader(self.dtype.itemsize, vocab_size, eod_id, 0, 0, fingerprint)
        self._tok_hash = hashlib.blake2b(digest_size=16)
        self._off_hash = hashlib.blake2b(digest_size=16)
        self._files: list[AtomicFile] = []
        self._done = False
        try:
            for final in (self.bin_path, self.idx_path):
                self._files.append(AtomicFile(final))
                self._write(-1, b"\x00" * HEADER_SIZE)  # placeholder until the counts are known
        except BaseException:
            self.abort()
            raise
        self._write_offsets(np.zeros(1, dtype=_OFFSET_DTYPE))

    @property
    def n_tokens(self) -> int:
        return self._header.n_tokens

    @property
    def n_docs(self) -> int:
        return self._header.n_docs

    def _write(self, which: int, data: bytes) -> None:
        """Write to the .bin (0) or .idx (1, or -1: the last opened); a full disk is an
        OutputError naming the file."""
        target = self._files[which]
        try:
            target.file.write(data)
        except OSError as e:
            raise output_error(target.path, e) from e

    def _write_offsets(self, offsets: np.ndarray) -> None:
        data = offsets.astype(_OFFSET_DTYPE, copy=False).tobytes()
        self._off_hash.update(data)
        self._write(1, data)

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents given as their concatenated ``tokens`` and per-document ``lengths``."""
        if self._done:
            raise RuntimeError("PackedWriter already finished or aborted")
        tokens = np.asarray(tokens)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens) or (len(lengths) and lengths.min() < 0):
            raise ValueError("document lengths do not add up to the number of tokens")
        if len(tokens):
            # Checked before narrowing: an id >= vocab_size would otherwise wrap silently.
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self._header.vocab_size:
                bad = lo if lo < 0 else hi
                top = self._header.vocab_size - 1
                raise ValueError(f"token id {bad} outside the vocabulary 0..{top}")
        data = tokens.astype(self.dtype, copy=False).tobytes()
        self._tok_hash.update(data)
        self._write(0, data)
        self._write_offsets(self._header.n_tokens + np.cumsum(lengths))
        self._header = replace(
            self._header,
            n_tokens=self._header.n_tokens + len(tokens),
            n_docs=self._header.n_docs + len(lengths),
        )

    def add_document(self, ids: list[int] | np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.add_documents(ids, np.array([len(ids)]))

    def finish(self) -> PackedHeader:
        """Write the headers, fsync, and move both files into place."""
        if self._done:
            raise RuntimeError("PackedWriter already finished or aborted")
        digest = hashlib.blake2b(
            self._tok_hash.digest() + self._off_hash.digest(), digest_size=16
        ).digest()
        header = replace(self._header, digest=digest)
        try:
            for which, magic in enumerate((MAGIC_BIN, MAGIC_IDX)):
                self._files[which].file.seek(0)
                self._write(which, header.to_bytes(magic))
            # Both synced before either is renamed: a full disk fails before any replacing.
            for target in self._files:
                target.sync()
            for target in self._files:
                target.rename()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return header

    def abort(self) -> None:
        """Discard the temporary files; the final paths are untouched."""
        self._done = True
        for target in self._files:
            target.discard()

    def __enter__(self) -> PackedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finish()


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    if count == 0:
        return np.empty(0, dtype=dtype)
    # A plain ndarray view over the map: slicing it skips np.memmap's Python-level overhead.
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_SIZE, shape=(count,)).view(
        np.ndarray
    )


class PackedTokens:
    """A pack opened for reading: ``tokens`` and ``offsets`` are read-only memory maps."""

    def __init__(self, prefix: Path, header: PackedHeader) -> None:
        self.prefix, self.header = prefix, header
        bin_path, idx_path = self.bin_path, self.idx_path = pack_paths(prefix)
        self.tokens = _map(bin_path, header.dtype, header.n_tokens)
        self.offsets = _map(idx_path, _OFFSET_DTYPE, header.n_docs + 1)

    @classmethod
    def open(cls, prefix: str | Path) -> PackedTokens:
        """Open ``PREFIX.bin`` + ``PREFIX.idx``, checking headers, sizes and that they pair.

        A shard manifest (``.json``) or a directory of shards (``tools pack
        --shard-tokens``) opens as a ``ShardedPack``, which reads like one pack.
        """
        bin_path, idx_path = pack_paths(prefix)
        if not bin_path.exists() and (Path(prefix).is_dir() or str(prefix).endswith(".json")):
            from llm_gym.data.sharded_pack import ShardedPack  # it builds on this module

            return ShardedPack.open(prefix)  # type: ignore[return-value]
        h = PackedHeader.read(bin_path, MAGIC_BIN)
        hi = PackedHeader.read(idx_path, MAGIC_IDX)
        _check_size(bin_path, h.n_tokens, h.itemsize, "tokens")
        _check_size(idx_path, h.n_docs + 1, _OFFSET_DTYPE.itemsize, "document offsets")
        if hi != h:
            fields = [k for k in h.__dataclass_fields__ if getattr(h, k) != getattr(hi, k)]
            raise UserError(
                f"{idx_path}: does not belong to {bin_path} (headers differ in"
                f" {', '.join(fields)}); re-pack, or restore the matching pair"
            )
        packed = cls(Path(prefix), h)
        first, last = int(packed.offsets[0]), int(packed.offsets[-1])
        if first != 0 or last != h.n_tokens:
            raise UserError(
                f"{idx_path}: offsets run from {first} to {last}, expected 0 to {h.n_tokens}"
            )
        return packed

    def __reduce__(self):
        # Pickles as "open this prefix again", not as a copy of the mapped data.
        return (PackedTokens.open, (self.prefix,))

    @property
    def vocab_size(self) -> int:
        return self.header.vocab_size

    @property
    def eod_id(self) -> int:
        return self.header.eod_id

    @property
    def fingerprint(self) -> str:
        return self.header.fingerprint

    @property
    def n_tokens(self) -> int:
        return self.header.n_tokens

    @property
    def n_docs(self) -> int:
        return self.header.n_docs

    def __len__(self) -> int:
        return self.header.n_docs

    def document(self, i: int) -> np.ndarray:
        """Tokens of document ``i``, its eod included (a view, not a copy)."""
        if not -self.n_docs <= i < self.n_docs:
            raise IndexError(f"document {i} out of range for {self.n_docs} documents")
        i %= self.n_docs
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def check_tokenizer(self, fingerprint: str, what: str = "the recipe's tokenizer") -> None:
        """Refuse data packed by a tokenizer other than the one training will decode with."""
        if fingerprint != self.fingerprint:
            raise UserError(
                f"{self.bin_path}: packed with tokenizer fingerprint {self.fingerprint[:16]}...,"
                f" but {what} has {fingerprint[:16]}...; the token ids would mean other"
                " things. Re-pack the data with this tokenizer (llm_gym tools pack)."
            )

    def verify(self, chunk_tokens: int = 1 << 24) -> None:
        """Read everything once: offsets non-decreasing, content digest as recorded."""
        off = self.offsets
        if len(off) > 1 and bool(np.any(off[1:] < off[:-1])):
            bad = int(np.argmax(off[1:] < off[:-1]))
            raise UserError(f"{self.idx_path}: offsets decrease after document {bad}")
        tok_hash = hashlib.blake2b(digest_size=16)
        for start in range(0, self.n_tokens, chunk_tokens):
            tok_hash.update(self.tokens[start : start + chunk_tokens].tobytes())
        off_hash = hashlib.blake2b(off.tobytes(), digest_size=16)
        digest = hashlib.blake2b(tok_hash.digest() + off_hash.digest(), digest_size=16).digest()
        if digest != self.header.digest:
            raise UserError(f"{self.bin_path}: content does not match the digest in its header")


def _check_size(path: Path, count: int, itemsize: int, what: str) -> None:
    expected = HEADER_SIZE + count * itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise UserError(
            f"{path}: truncated: the header promises {count} {what} ({expected} bytes in all),"
            f" the file has {actual} bytes ({(actual - HEADER_SIZE) // itemsize} {what})"
        )
    if actual > expected:
        raise UserError(
            f"{path}: {actual - expected} unexpected bytes after the {count} {what} the header"
            " promises (a failed copy, or files from different packs?)"
        )
