"""Writing files whole or not at all, and removing only what keras-kd wrote.

Decisions, documented once for every writer in the package (run folders, the
teacher cache, exports, experiment results):

- **Whole or nothing.** A file is written under a temporary name in its final
  folder and renamed over the target (`os.replace`, atomic on one file system).
  A kill leaves either the previous file or the new one, never a truncated one.
- **Never overwrite a user's file.** A writer that owns a folder marks it with
  a small JSON file, `OWNER_FILE`, naming the kind of folder. A writer given a
  folder that holds anything but its own files refuses it (`FolderNotOwnedError`,
  naming the files it found) instead of mixing its files with the user's.
- **Remove only what can be proved ours.** Removal goes through
  `remove_owned`, which deletes a file only inside a folder carrying our marker
  and only when the file's name matches what that writer creates.

Example:

>>> import tempfile
>>> folder = claim_folder(tempfile.mkdtemp() + "/run", kind="example")
>>> _ = atomic_write_text(folder / "notes.txt", "hello")
>>> (folder / "notes.txt").read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

OWNER_FILE = ".keras-kd.json"
WEIGHTS_SUFFIX = ".weights.h5"  # the ending keras.Model.save_weights wants for HDF5


class FolderNotOwnedError(ValueError):
    """A folder given to a keras-kd writer holds files keras-kd did not write."""


def _temporary_path(path: Path) -> Path:
    handle, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".partial", dir=path.parent
    )
    os.close(handle)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    Write the file to the yielded path with any writer (NumPy, Keras, h5py). If
    the block raises, the temporary file is removed and `path` is untouched.

    Args:
        path: The file to create or replace.

    Yields:
        A `Path` in the same folder, with the same suffix as `path` (some
        writers, such as `keras.Model.save`, insist on it; for a
        `.weights.h5` file, as `keras.Model.save_weights` wants, both parts).

    Example:

    >>> import numpy as np, tempfile
    >>> target = Path(tempfile.mkdtemp()) / "logits.npy"
    >>> with atomic_path(target) as partial:
    ...     np.save(partial, np.zeros(3))
    >>> np.load(target).shape
    (3,)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: `model.save` wants `.keras`, `np.save` adds `.npy`.
    partial = _temporary_path(path)
    partial.unlink()
    suffix = WEIGHTS_SUFFIX if path.name.endswith(WEIGHTS_SUFFIX) else path.suffix
    partial = partial.with_name(partial.name.removesuffix(".partial") + suffix)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a whole file, as hex (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` to `path` whole or not at all; returns the path."""
    with atomic_path(path) as partial:
        partial.write_text(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, payload) -> Path:
    """Writes `payload` as indented, key-sorted JSON, whole or not at all."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default)
    return atomic_write_text(path, text + "\n")


def _json_default(value):
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Cannot write {type(value).__name__} as JSON: {value!r}")


def atomic_save_model(model, path: str | os.PathLike) -> Path:
    """`model.save(path)` whole or not at all (a `.keras` file)."""
    with atomic_path(path) as partial:
        model.save(partial)
    return Path(path)


def check_claimable(
    path: str | os.PathLike,
    *,
    kind: str,
    allowed: Callable[[str], bool] | None = None,
) -> Path:
    """Checks, without creating anything, that `claim_folder` would accept `path`.

    Writers whose work is expensive (an export, a long run) call it first, so
    that a bad output folder fails before any work is done.

    Args:
        path: The folder.
        kind: The writer's name, e.g. `"run"`, `"teacher-cache"`, `"export"`.
        allowed: As for `claim_folder`.

    Returns:
        The folder as a `Path`.

    Raises:
        FolderNotOwnedError: as `claim_folder` would.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FolderNotOwnedError(
            f"{path} is a file, not a folder. Give a folder that does not exist yet "
            "(keras-kd creates it) or one that keras-kd wrote."
        )
    marker = path / OWNER_FILE
    if marker.exists():
        try:
            owner = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            owner = None
        if owner != kind:
            raise FolderNotOwnedError(
                f"{path} was written by keras-kd as a {owner!r} folder, not a "
                f"{kind!r} folder. Use another folder."
            )
        return path
    if path.exists():
        strangers = sorted(
            entry.name
            for entry in path.iterdir()
            if allowed is None or not allowed(entry.name)
        )
        if strangers:
            shown = ", ".join(strangers[:5]) + (" ..." if len(strangers) > 5 else "")
            raise FolderNotOwnedError(
                f"{path} already holds files keras-kd did not write ({shown}). "
                "keras-kd never mixes its files with yours or removes them: give "
                "an empty or new folder."
            )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FolderNotOwnedError(
            f"Cannot create the folder {path}: {existing} is a file. Give a folder "
            "under an existing directory."
        )
    if not _writable(existing):
        raise FolderNotOwnedError(
            f"Cannot write to {existing} (permission denied or a read-only file "
            f"system), so {path} cannot be used. Give a folder you can write to."
        )
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can be created in `folder` (tried: `os.access` lies to root
    and knows nothing of read-only file systems)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".keras-kd-probe.", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(name)
    return True


def claim_folder(
    path: str | os.PathLike,
    *,
    kind: str,
    allowed: Callable[[str], bool] | None = None,
) -> Path:
    """Creates `path` for a keras-kd writer, or checks that it already is one.

    Args:
        path: The folder.
        kind: The writer's name, e.g. `"run"`, `"teacher-cache"`, `"export"`.
        allowed: For a folder that exists without our marker: a predicate on
            file names that the writer may adopt (files an earlier keras-kd
            version wrote without a marker). Default: only an empty folder is
            adopted.

    Returns:
        The folder as a `Path`.

    Raises:
        FolderNotOwnedError: when `path` is a file, lies under a file, cannot be
            written, belongs to another kind of keras-kd writer, or holds files
            that are not this writer's.

    Example:

    >>> import tempfile
    >>> claim_folder(tempfile.mkdtemp() + "/export", kind="export").name
    'export'
    """
    path = check_claimable(path, kind=kind, allowed=allowed)
    if owns(path, kind):
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / OWNER_FILE, {"kind": kind})
    except OSError as error:
        raise FolderNotOwnedError(
            f"Cannot create the folder {path}: {error.strerror or error}. Give a "
            "folder you can write to."
        ) from error
    return path


def owns(path: str | os.PathLike, kind: str) -> bool:
    """Whether `path` is a folder that a keras-kd writer of `kind` claimed."""
    marker = Path(path) / OWNER_FILE
    try:
        return json.loads(marker.read_text()).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def remove_owned(
    folder: str | os.PathLike, kind: str, names: Iterable[str]
) -> list[Path]:
    """Removes the files `names` from `folder`, only if a `kind` writer owns it.

    Args:
        folder: A folder claimed with `claim_folder(folder, kind=kind)`.
        kind: The writer's kind.
        names: File names inside `folder` (no sub-paths).

    Returns:
        The paths removed (files that did not exist are skipped).

    Raises:
        FolderNotOwnedError: when `folder` is not a `kind` folder, or a name
            points outside it.
    """
    folder = Path(folder)
    if not owns(folder, kind):
        raise FolderNotOwnedError(
            f"Refusing to remove files from {folder}: it is not a keras-kd {kind!r} "
            "folder."
        )
    removed = []
    for name in names:
        if Path(name).name != name or name == OWNER_FILE:
            raise FolderNotOwnedError(f"Refusing to remove {name!r} from {folder}.")
        target = folder / name
        if target.is_file():
            target.unlink()
            removed.append(target)
    return removed
