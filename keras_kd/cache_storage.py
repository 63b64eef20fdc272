"""The files of a teacher cache on disk: names, ownership, writing and checking.

`keras_kd.cache` builds and replays caches; this module is the layer below it
that knows which files a cache folder holds and whether they are intact.

- **Ownership.** A cache folder is claimed with `keras_kd.files.claim_folder`
  (kind `"teacher-cache"`). A folder without keras-kd's marker is adopted only
  when it is a cache written by keras-kd 0.1.0 (no marker yet): its
  `manifest.json` has the cache format and every other file has a name the
  cache writes. Any other file makes the build refuse the folder, naming it.
  Files are removed only through `keras_kd.files.remove_owned` and only when
  their names are cache names, so a user's file is never deleted.
- **Whole or nothing.** Shards and the manifest are written under a temporary
  name and renamed (`keras_kd.files.atomic_path`).
- **Integrity records.** Each file's manifest record holds its size, shape,
  dtype, the SHA-256 of the whole file and the SHA-256 of a fixed sample of it
  (`sample_sha256`: the first block and `SAMPLE_BLOCKS` blocks spread evenly
  over the file; files of at most `SAMPLE_BLOCKS + 1` blocks are sampled
  whole). `file_identity` (device, inode, size, modification time) tells
  whether a file was replaced or rewritten after it was checked.

Example:

>>> is_cache_file("shard-00003.logits.npy"), is_cache_file("shard-notes.npy")
(True, False)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from keras_kd.files import (
    OWNER_FILE,
    atomic_path,
    atomic_write_text,
    claim_folder,
    remove_owned,
    sha256_file,
)

FORMAT = "keras_kd.teacher_cache"
KIND = "teacher-cache"
MANIFEST = "manifest.json"
BLOCK_BYTES = 4096
SAMPLE_BLOCKS = 64

_KINDS = r"(?:logits|indices|values|rest)"
_SHARD = rf"shard-\d{{5,}}\.{_KINDS}\.npy"
# Final names; `atomic_path` temporaries (".<name>.<random>.<suffix>"); and the
# ".tmp" temporaries that keras-kd 0.1.0 wrote.
_CACHE_NAME = re.compile(
    rf"(?:{_SHARD}|manifest\.json)"
    rf"|\.(?:{_SHARD}|manifest\.json)\.[a-z0-9_]+\.(?:npy|json)"
    rf"|(?:{_SHARD}|manifest\.json)\.tmp"
)
_TEMPORARY_NAME = re.compile(r"\..*\.[a-z0-9_]+\.(?:npy|json)|.*\.tmp")


def is_cache_file(name: str) -> bool:
    """Whether a file name is one a teacher cache writes (final or temporary)."""
    return _CACHE_NAME.fullmatch(name) is not None


def shard_file(directory: Path, index: int, kind: str) -> Path:
    """The path of shard `index`'s array of `kind` (logits, indices, ...)."""
    return directory / f"shard-{index:05d}.{kind}.npy"


def _is_cache_manifest(path: Path) -> bool:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def claim_cache_folder(directory: str | os.PathLike) -> Path:
    """Creates a cache folder, or checks that `directory` is one keras-kd wrote.

    Args:
        directory: The cache folder.

    Returns:
        The folder as a `Path`.

    Raises:
        keras_kd.files.FolderNotOwnedError: (a `ValueError`) when `directory`
            is a file, another kind of keras-kd folder, or holds files the cache
            did not write (named in the message); nothing is changed then.

    Example:

    >>> import tempfile
    >>> claim_cache_folder(tempfile.mkdtemp() + "/cache").name
    'cache'
    """
    directory = Path(directory)
    legacy_cache = _is_cache_manifest(directory / MANIFEST)
    return claim_folder(
        directory,
        kind=KIND,
        allowed=lambda name: legacy_cache and is_cache_file(name),
    )


def cache_files_present(directory: Path, *, temporary_only: bool = False) -> list[str]:
    """Names of the cache's own files in `directory` (never a user's file)."""
    names = []
    for entry in directory.iterdir():
        name = entry.name
        if name == OWNER_FILE or not is_cache_file(name):
            continue
        if temporary_only and not _TEMPORARY_NAME.fullmatch(name):
            continue
        names.append(name)
    return sorted(names)


def remove_cache_files(directory: Path, names: list[str]) -> None:
    """Removes cache files by name from a claimed cache folder (see `remove_owned`)."""
    if names:
        remove_owned(directory, KIND, names)


def _sample_offsets(size: int) -> list[int]:
    blocks = -(-size // BLOCK_BYTES)
    if blocks <= SAMPLE_BLOCKS + 1:
        return [block * BLOCK_BYTES for block in range(blocks)]
    step = (size - BLOCK_BYTES) / SAMPLE_BLOCKS
    return [0] + [int(BLOCK_BYTES + i * step) for i in range(SAMPLE_BLOCKS)]


def sample_sha256(path: Path) -> str:
    """SHA-256 of a fixed sample of `path`: its first block and blocks spread evenly.

    Reads at most `(SAMPLE_BLOCKS + 1) * BLOCK_BYTES` bytes (260 KiB), whatever
    the file's size; a smaller file is hashed whole.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in _sample_offsets(size):
            handle.seek(offset)
            digest.update(handle.read(BLOCK_BYTES))
    return digest.hexdigest()


def file_identity(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """(device, inode, size, modification time in ns): changes when a file is replaced
    or written to."""
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def write_npy(path: Path, array: np.ndarray) -> dict:
    """Writes `array` to `path` whole or not at all; returns its manifest record."""
    with atomic_path(path) as partial:
        np.save(partial, array)
        record = {
            "shape": list(array.shape),
            "dtype": array.dtype.str,
            "bytes": partial.stat().st_size,
            "sha256": sha256_file(partial),
            "sample_sha256": sample_sha256(partial),
        }
    return record


def write_manifest(directory: Path, manifest: dict) -> None:
    """Writes the manifest whole or not at all."""
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
