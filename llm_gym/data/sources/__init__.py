"""Where ``tools pack`` reads texts from: JSONL (plain, gzip, zstd), Parquet, Arrow files and
Hugging Face ``datasets`` saved to disk.

``expand_inputs`` turns paths, directories and globs into an ordered list of
``InputFile``; ``read_batches_of`` reads one of them as ``TextBatch``es, each located
(file and line or row) for error messages. Parquet and Arrow need the ``formats`` extra.
"""

from llm_gym.data.sources.batch import TextBatch, location
from llm_gym.data.sources.inputs import FORMATS, InputFile, expand_inputs
from llm_gym.data.sources.reading import iter_texts, read_batches_of

__all__ = ["FORMATS", "InputFile", "TextBatch", "expand_inputs", "iter_texts", "location",
           "read_batches_of"]
