"""The Python standard library's own source as a language-modelling corpus.

Why this corpus: it is real text (code and its docstrings and comments, written
by people), it is on every machine that runs keras-kd (no download, no network,
no registry), and its exact version is known: the Python version and a SHA-256
digest of the files used (their paths and contents) are part of
`PythonSource.settings()`, which the language-model experiment puts into
every model's run settings, so a run folder built from another Python's
library (or another cap, split or tokenizer) is refused by `keras_kd.runs`.

Decisions:

- **Files.** Every non-empty `*.py` file under `sysconfig.get_paths()["stdlib"]`, except
  under `site-packages` and `__pycache__`, read as raw bytes (a few test files
  are deliberately not UTF-8; bytes need no decoding). Files are taken in the
  order of the SHA-256 of their path relative to the library root, which mixes
  packages, and added while the total stays within `max_bytes` (a file that
  would pass the cap is skipped, a smaller later one may still fit; a file
  larger than a twentieth of the cap is skipped too, so that one large file
  cannot make up a whole split of a small corpus).
- **Split.** By the same digest: a file whose digest, as a number, modulo 100
  is below 80 is training text, below 90 validation text, else test text.
  A file is in exactly one split whatever the cap, and the split does not
  depend on the order in which the file system lists files.
- **Tokens.** A byte-level byte-pair encoding (`BytePairTokenizer`) trained on
  the training split only, in pure Python, deterministically (ties between
  equally frequent pairs go to the smallest pair of ids). Bytes are first cut
  into code-aware pieces (an identifier or number with at most one leading
  space, a run of punctuation, a newline with the indentation after it, one
  whitespace byte) and merges never cross a piece. Bytes need no unknown
  token: every file is encoded losslessly. Ids: 0 is padding, 1 marks the
  start of a file, 2-257 are the 256 bytes, then one id per merge. Perplexity
  is per token of this tokenizer; bits per byte (total negative
  log-likelihood / ln 2 / bytes predicted) does not depend on it.
- **Windows.** Each file is `[start-of-file] + tokens`; a window of
  `sequence_length` inputs predicts the next token at every position, and no
  window crosses files. A file's last window is shorter and padded with 0 on
  the right in both inputs and targets, so `Embedding(mask_zero=True)` masks
  exactly the positions without a target.

Example:

>>> source = load_python_source(max_bytes=400_000, vocab_size=300, sequence_length=32)
>>> x, y = source.splits["train"]
>>> x.shape[1], bool((x[:, 1:] == y[:, :-1])[x[:, 1:] != 0].all())
(32, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "validation", "test")
# A file's split: its path digest modulo 100 below 80, below 90, else.
SPLIT_BOUNDS = (80, 90)
PAD_ID = 0
# Under a cap, files larger than cap / _LARGEST_SHARE are skipped.
_LARGEST_SHARE = 20
START_OF_FILE_ID = 1
FIRST_BYTE_ID = 2
FIRST_MERGE_ID = FIRST_BYTE_ID + 256
# Code-aware pieces that merges never cross; every byte belongs to one.
_PIECE = re.compile(
    rb" ?[A-Za-z_][A-Za-z0-9_]*| ?[0-9]+| ?[^\sA-Za-z0-9_]+|\n[ \t]*|\s"
)


def stdlib_root() -> Path:
    """The folder of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _path_digest(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()


def split_of(relative: str) -> str:
    """The split (`"train"`, `"validation"` or `"test"`) of a library file.

    Args:
        relative: The file's path relative to the library root, with `/`.

    Returns:
        The split's name; it depends on the path alone.

    Example:

    >>> split_of("json/decoder.py") in SPLITS
    True
    """
    bucket = int(_path_digest(relative)[:8], 16) % 100
    if bucket < SPLIT_BOUNDS[0]:
        return "train"
    return "validation" if bucket < SPLIT_BOUNDS[1] else "test"


def list_source_files(root: Path | None = None, max_bytes: int | None = None) -> list[str]:
    """The library files used, relative paths in digest order, within `max_bytes`.

    Args:
        root: The library root (default: `stdlib_root()`).
        max_bytes: Cap on the files' total size (`None`: every file).

    Returns:
        Relative paths (`/`-separated), in the order of their path digest.

    Raises:
        FileNotFoundError: when `root` holds no `*.py` file.
        ValueError: for a cap that is not a whole number >= 1.
    """
    root = stdlib_root() if root is None else Path(root)
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
    ):
        raise ValueError(
            f"`max_bytes` must be a whole number >= 1 (or None for the whole "
            f"library), got {max_bytes!r}."
        )
    found = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if {"site-packages", "__pycache__"} & set(relative.parts) or not path.is_file():
            continue
        found.append((_path_digest(relative.as_posix()), relative.as_posix(), path))
    if not found:
        raise FileNotFoundError(
            f"No *.py file under {root}: this Python has no standard library "
            "source (some minimal installs ship only .pyc files). Use a Python "
            "with its library source, e.g. the official installers or pyenv."
        )
    chosen, total = [], 0
    for _, relative, path in sorted(found):
        size = path.stat().st_size
        if size == 0:
            continue  # an empty file has nothing to predict
        if max_bytes is not None and (
            total + size > max_bytes or size > max_bytes // _LARGEST_SHARE
        ):
            continue
        chosen.append(relative)
        total += size
    return chosen


def _pieces(data: bytes) -> list[bytes]:
    return _PIECE.findall(data)


class BytePairTokenizer:
    """A byte-level byte-pair encoding of code (see the module docstring for ids).

    Args:
        merges: The merged pairs of ids, in the order they were learned; merge
            `i` makes id `FIRST_MERGE_ID + i`.

    Example:

    >>> tokenizer = BytePairTokenizer.train([b"def f(x):\\n    return x\\n"] * 3, 270)
    >>> tokenizer.decode(tokenizer.encode(b"def g(y):\\n")) == b"def g(y):\\n"
    True
    """

    def __init__(self, merges: Sequence[Sequence[int]]):
        self.merges = [tuple(int(i) for i in pair) for pair in merges]
        self._ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self._bytes = [b""] * FIRST_BYTE_ID + [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self._cache: dict[bytes, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """Ids in use, padding and start-of-file included."""
        return FIRST_MERGE_ID + len(self.merges)

    @classmethod
    def train(cls, texts: Iterable[bytes], vocab_size: int) -> BytePairTokenizer:
        """Learns merges on `texts` until `vocab_size` ids (or no pair repeats).

        Args:
            texts: The training text, one `bytes` per file.
            vocab_size: Wanted ids, >= 259 (padding, start-of-file, 256 bytes
                and at least one merge).

        Returns:
            The tokenizer.

        Raises:
            ValueError: for a `vocab_size` below 259.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or (
            vocab_size <= FIRST_MERGE_ID
        ):
            raise ValueError(
                f"`vocab_size` must be a whole number > {FIRST_MERGE_ID} (padding, "
                f"start-of-file and the 256 bytes come first), got {vocab_size!r}."
            )
        counts = Counter(piece for text in texts for piece in _pieces(text))
        words = [[FIRST_BYTE_ID + b for b in piece] for piece in counts]
        freqs = list(counts.values())
        pairs: Counter = Counter()
        where: dict[tuple[int, int], set[int]] = {}
        for index, word in enumerate(words):
            for pair in zip(word, word[1:]):
                pairs[pair] += freqs[index]
                where.setdefault(pair, set()).add(index)
        heap = [(-count, pair) for pair, count in pairs.items()]
        heapq.heapify(heap)
        merges = []
        while len(merges) < vocab_size - FIRST_MERGE_ID and heap:
            negative, pair = heapq.heappop(heap)
            if pairs.get(pair, 0) != -negative:
                continue  # a stale entry: the count changed since it was pushed
            if -negative < 2:
                break
            new_id = FIRST_MERGE_ID + len(merges)
            merges.append(pair)
            changed = set()
            for index in sorted(where.pop(pair, ())):
                word = words[index]
                for old in zip(word, word[1:]):
                    pairs[old] -= freqs[index]
                    changed.add(old)
                word = _merge(word, pair, new_id)
                words[index] = word
                for new in zip(word, word[1:]):
                    pairs[new] += freqs[index]
                    where.setdefault(new, set()).add(index)
                    changed.add(new)
            pairs.pop(pair, None)
            for key in changed:
                if pairs.get(key, 0) > 0:
                    heapq.heappush(heap, (-pairs[key], key))
        return cls(merges)

    def _encode_piece(self, piece: bytes) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            ids = [FIRST_BYTE_ID + b for b in piece]
            while len(ids) > 1:
                ranked = [
                    (self._ranks[p], p) for p in zip(ids, ids[1:]) if p in self._ranks
                ]
                if not ranked:
                    break
                rank, pair = min(ranked)
                ids = _merge(ids, pair, FIRST_MERGE_ID + rank)
            self._cache[piece] = ids
        return ids

    def encode(self, text: bytes) -> list[int]:
        """The ids of `text` (bytes), without the start-of-file id."""
        return [i for piece in _pieces(text) for i in self._encode_piece(piece)]

    def decode(self, ids: Iterable[int]) -> bytes:
        """The bytes of `ids` (padding and start-of-file give none)."""
        return b"".join(self._bytes[int(i)] for i in ids)

    def token_bytes(self) -> np.ndarray:
        """Bytes per id, `(vocab_size,)` int32 (0 for padding and start-of-file)."""
        return np.array([len(b) for b in self._bytes], np.int32)

    def to_json(self) -> dict:
        """The tokenizer as JSON values (`from_json` reads them back)."""
        return {"kind": "byte_pair", "merges": [list(pair) for pair in self.merges]}

    @classmethod
    def from_json(cls, config: dict) -> BytePairTokenizer:
        """The tokenizer `to_json` described.

        Raises:
            ValueError: for JSON that is not a byte-pair tokenizer's.
        """
        if not isinstance(config, dict) or config.get("kind") != "byte_pair":
            raise ValueError(
                "This JSON does not describe a keras_kd BytePairTokenizer (no "
                '"kind": "byte_pair"); save one with `to_json()`.'
            )
        return cls(config["merges"])

    def digest(self) -> str:
        """A short SHA-256 of the merges (16 hex digits)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def windows(streams: Iterable[Sequence[int]], sequence_length: int):
    """Next-token `(inputs, targets)` windows of token streams, padded with 0.

    Args:
        streams: One id sequence per file (starting with the start-of-file id).
        sequence_length: Positions per window.

    Returns:
        Two int32 arrays `(windows, sequence_length)`; `targets[i, j]` is the
        token after `inputs[i, j]`, and both are 0 where the file has ended.

    Example:

    >>> x, y = windows([[1, 5, 6, 7]], 2)
    >>> x.tolist(), y.tolist()
    ([[1, 5], [6, 0]], [[5, 6], [7, 0]])
    """
    rows_x, rows_y = [], []
    for stream in streams:
        stream = np.asarray(stream, np.int32)
        for start in range(0, len(stream) - 1, sequence_length):
            stop = min(start + sequence_length, len(stream) - 1)
            row_x = np.zeros(sequence_length, np.int32)
            row_y = np.zeros(sequence_length, np.int32)
            row_x[: stop - start] = stream[start:stop]
            row_y[: stop - start] = stream[start + 1 : stop + 1]
            rows_x.append(row_x)
            rows_y.append(row_y)
    if not rows_x:
        empty = np.zeros((0, sequence_length), np.int32)
        return empty, empty.copy()
    return np.stack(rows_x), np.stack(rows_y)


@dataclasses.dataclass
class PythonSource:
    """The corpus as token windows, with what is needed to reproduce it.

    Attributes:
        splits: `{"train" | "validation" | "test": (inputs, targets)}`, int32
            arrays `(windows, sequence_length)`, 0 for padding.
        files: The relative paths of each split's files.
        tokenizer: The tokenizer trained on the training split.
        python_version: The Python whose library this is, e.g. `"3.11.7"`.
        files_digest: SHA-256 (16 hex digits) of the files used: each one's
            relative path and contents, in order.
        max_bytes: The cap used (`None`: none).
        sequence_length: Positions per window.
    """

    splits: dict
    files: dict
    tokenizer: BytePairTokenizer
    python_version: str
    files_digest: str
    max_bytes: int | None
    sequence_length: int

    def tokens(self, split: str) -> int:
        """Tokens to predict (valid target positions) in `split`."""
        return int(np.count_nonzero(self.splits[split][1]))

    def bytes_predicted(self, split: str) -> int:
        """Bytes of the tokens to predict in `split` (for bits per byte)."""
        return int(self.tokenizer.token_bytes()[self.splits[split][1]].sum())

    def settings(self) -> dict:
        """JSON values naming this corpus exactly (for run fingerprints)."""
        return {
            "corpus": "python-stdlib-source",
            "python_version": self.python_version,
            "corpus_files": sum(len(v) for v in self.files.values()),
            "corpus_digest": self.files_digest,
            "corpus_max_bytes": self.max_bytes,
            "split_bounds": list(SPLIT_BOUNDS),
            "tokenizer": "byte_pair",
            "vocab_size": self.tokenizer.vocab_size,
            "tokenizer_digest": self.tokenizer.digest(),
            "sequence_length": self.sequence_length,
        }


def read_corpus(
    max_bytes: int | None = None, root: Path | None = None
) -> tuple[dict[str, list[str]], dict[str, list[bytes]], str]:
    """The library files by split: `(paths, contents, digest)`.

    Raises:
        ValueError: when the cap leaves a split without any file.
        FileNotFoundError: from `list_source_files`.
    """
    root = stdlib_root() if root is None else Path(root)
    paths = {split: [] for split in SPLITS}
    texts = {split: [] for split in SPLITS}
    digest = hashlib.sha256()
    for relative in list_source_files(root, max_bytes):
        data = (root / relative).read_bytes()
        digest.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
        split = split_of(relative)
        paths[split].append(relative)
        texts[split].append(data)
    empty = [split for split in SPLITS if not paths[split]]
    if empty:
        counts = ", ".join(
            f"{s}: {len(paths[s])} files, {sum(map(len, texts[s])):,} bytes"
            for s in SPLITS
        )
        raise ValueError(
            f"The corpus cap max_bytes={max_bytes} leaves no {' and no '.join(empty)} "
            f"text ({counts}); each split needs at least one non-empty file. "
            "Raise the cap: 200,000 bytes gives every split tens of files, the "
            "whole library is about 30 MB."
        )
    return paths, texts, digest.hexdigest()[:16]


def load_python_source(
    max_bytes: int | None = 4_000_000,
    vocab_size: int = 4096,
    sequence_length: int = 128,
    *,
    tokenizer: BytePairTokenizer | None = None,
    root: Path | None = None,
) -> PythonSource:
    """The standard library's source as next-token windows (see the module docstring).

    Args:
        max_bytes: Cap on the total size of the files used (`None`: all,
            about 30 MB for Python 3.11).
        vocab_size: Ids of the byte-pair tokenizer trained on the training
            split (> 258); ignored when `tokenizer` is given.
        sequence_length: Positions per window.
        tokenizer: A tokenizer to use instead of training one (e.g. read back
            from a run folder with `BytePairTokenizer.from_json`).
        root: Another library root (default: the running Python's).

    Returns:
        A `PythonSource`.

    Raises:
        ValueError: for a cap so small that a split has no file, or an
            argument out of range.
        FileNotFoundError: for a Python without library source.

    Example:

    >>> source = load_python_source(max_bytes=300_000, vocab_size=300)
    >>> sorted(source.splits), source.tokenizer.vocab_size
    (['test', 'train', 'validation'], 300)
    """
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or (
        sequence_length < 2
    ):
        raise ValueError(
            f"`sequence_length` must be a whole number >= 2, got {sequence_length!r}."
        )
    paths, texts, digest = read_corpus(max_bytes, root)
    if tokenizer is None:
        tokenizer = BytePairTokenizer.train(texts["train"], vocab_size)
    splits = {}
    for split in SPLITS:
        streams = [[START_OF_FILE_ID, *tokenizer.encode(t)] for t in texts[split]]
        splits[split] = windows(streams, sequence_length)
    return PythonSource(
        splits=splits,
        files=paths,
        tokenizer=tokenizer,
        python_version=".".join(str(v) for v in sys.version_info[:3]),
        files_digest=digest,
        max_bytes=max_bytes,
        sequence_length=sequence_length,
    )


__all__ = [
    "BytePairTokenizer",
    "PAD_ID",
    "PythonSource",
    "SPLITS",
    "START_OF_FILE_ID",
    "list_source_files",
    "load_python_source",
    "read_corpus",
    "split_of",
    "stdlib_root",
    "windows",
]
