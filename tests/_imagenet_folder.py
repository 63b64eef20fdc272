"""Writes tiny ImageNet-style folders of real JPEG files for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

CLASSES = ("n01440764", "n02102040", "n02979186")
# Odd sizes on purpose: portrait, landscape, smaller than the crop, square.
SIZES = ((23, 41), (40, 17), (9, 12), (31, 31), (50, 29))


def write_image_folder(
    root: Path,
    train_per_class: int = 4,
    val_per_class: int = 2,
    corrupt: str | None = "val",
) -> dict:
    """Writes `root/{train,val}/<wnid>/*.JPEG` (plus one `.png`) of random pixels.

    Each class has its own mean colour so that a model can learn something.
    With `corrupt="val"` (or `"train"`), one extra `.JPEG` file of that split
    holds bytes no decoder accepts.

    Returns:
        `{"train": n, "val": m}`: the number of decodable images per split.
    """
    rng = np.random.default_rng(0)
    counts = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = SIZES[(c + i) % len(SIZES)]
                pixels = rng.normal(60 + 70 * c, 30, size=(h, w, 3))
                image = tf.constant(np.clip(pixels, 0, 255).astype(np.uint8))
                if i == 1:
                    (folder / f"{wnid}_{i}.png").write_bytes(
                        tf.io.encode_png(image).numpy()
                    )
                else:
                    (folder / f"{wnid}_{i}.JPEG").write_bytes(
                        tf.io.encode_jpeg(image, quality=90).numpy()
                    )
        counts[split] = per_class * len(CLASSES)
    if corrupt is not None:
        bad = root / corrupt / CLASSES[0] / "broken_0.JPEG"
        bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg " * 4)
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image\n")
    return counts
