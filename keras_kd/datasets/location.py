"""Where the data lives: `--data-dir` or the `KERAS_KD_DATA_DIR` variable."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_VARIABLE = "KERAS_KD_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None, subdir: str | None = None):
    """The folder to read a data set from, or `None` when none is configured.

    Args:
        data_dir: An explicit folder (from `--data-dir`), or `None` to use the
            `KERAS_KD_DATA_DIR` environment variable.
        subdir: A data set's own folder inside the data root (e.g. `"mnist"`). If
            `data_dir` already is that folder (it has no `subdir` inside), it is
            used as is.

    Returns:
        A `Path` to an existing folder, or `None` when neither `data_dir` nor
        `KERAS_KD_DATA_DIR` is set.

    Raises:
        FileNotFoundError: when the configured folder does not exist.

    Example:

    >>> resolve_data_dir("/tmp", None)
    PosixPath('/tmp')
    """
    source = "--data-dir"
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_VARIABLE) or None
        source = DATA_DIR_VARIABLE
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"The data folder {str(root)!r} (from {source}) does not exist. Point "
            f"--data-dir or {DATA_DIR_VARIABLE} at the folder that holds the data sets."
        )
    if subdir is not None and (root / subdir).is_dir():
        return root / subdir
    return root
