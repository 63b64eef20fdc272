"""Writes tiny ImageNet-style folders of real image files for the tests."""

from __future__ import annotations

from pathlib import Path

from keras_kd.datasets.imagenet import SYNTHETIC_CLASSES as CLASSES
from keras_kd.datasets.imagenet import write_synthetic_image_folder

__all__ = ["CLASSES", "write_image_folder"]


def write_image_folder(
    root: Path,
    train_per_class: int = 4,
    val_per_class: int = 2,
    corrupt: str | None = "val",
) -> dict:
    """`write_synthetic_image_folder`, plus a broken `.JPEG` and a stray text file.

    With `corrupt="val"` (or `"train"`), one extra `.JPEG` file of that split
    holds bytes no decoder accepts. `train/<first class>/notes.txt` is a file
    that is not an image (listing ignores it).

    Returns:
        `{"train": n, "val": m}`: the number of decodable images per split.
    """
    counts = write_synthetic_image_folder(
        root, train_per_class=train_per_class, val_per_class=val_per_class
    )
    if corrupt is not None:
        bad = root / corrupt / CLASSES[0] / "broken_0.JPEG"
        bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg " * 4)
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image\n")
    return counts
