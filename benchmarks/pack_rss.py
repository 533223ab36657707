"""Run one pack and print its peak resident set: the measured side of the memory benchmark.

A script of its own, started as a fresh process per input, so each figure is the peak of
that pack alone. The parent's peak is the kernel's high-water mark of this process's own
memory (``VmHWM``, reset by exec): ``ru_maxrss`` also remembers the RSS of the process
that forked it, so under a pytest process grown large by other benchmarks it reported
that (2 GiB for a 100 MB pack on 2026-12-07). Prints one JSON line:
the peak RSS of this process (reading, writing) and of the largest worker (tokenizing),
in bytes, and what was packed.

    python benchmarks/pack_rss.py INPUT TOKENIZER_JSON OUT WORKERS [SHARD_TOKENS]
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from llm_gym.data.pack import pack_files
from llm_gym.data.shard_pack import pack_shards
from llm_gym.data.sources import expand_inputs
from llm_gym_components.tokenizers import HFJsonTokenizer


def main() -> None:
    source, tokenizer, out, workers = sys.argv[1:5]
    shard_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    files, tok = expand_inputs([source]), HFJsonTokenizer(Path(tokenizer))
    if shard_tokens:
        summary = pack_shards(files, tok, Path(out), shard_tokens=shard_tokens,
                              workers=int(workers))
    else:
        summary = pack_files(files, tok, Path(out), workers=int(workers))
    kib = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({
        "parent_rss": _own_peak_bytes(),
        "worker_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib,
        "tokens": summary.n_tokens, "bytes": summary.bytes_read, "seconds": summary.seconds,
    }))


def _own_peak_bytes() -> int:
    """This process's peak resident set since its exec (``VmHWM``, Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    main()
