"""Two-digit MNIST: 100 classes, two MNIST digits side by side (the specialists' data).

Each image is 28 pixels high and 56 wide, the label is `10 * left + right` (00 to
99). Training images pair digits of MNIST's training split, test images pair digits
of its test split, so no test digit is ever seen in training. Section 5 of Hinton,
Vinyals and Dean (2015) needs many classes that a small model confuses; this data
set has them at MNIST's cost.
"""

from __future__ import annotations

import os

import numpy as np

from keras_kd.datasets.mnist import load_mnist

NUM_CLASSES = 100
IMAGE_SHAPE = (28, 56)
CLASS_NAMES = tuple(f"{c:02d}" for c in range(NUM_CLASSES))


def two_digit_mnist(
    images: np.ndarray, labels: np.ndarray, num_pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random pairs of MNIST digits side by side.

    Args:
        images: uint8 array `(n, 28, 28)` from one MNIST split.
        labels: Digit labels `(n,)`.
        num_pairs: Number of two-digit images to make.
        seed: Seed of the pairing.

    Returns:
        `(x, y)`: uint8 images `(num_pairs, 28, 56)` and int32 labels
        `10 * left + right`.

    Example:

    >>> x, y = two_digit_mnist(np.zeros((5, 28, 28), np.uint8), np.arange(5), 3, 0)
    >>> x.shape
    (3, 28, 56)
    """
    rng = np.random.default_rng(seed)
    left = rng.integers(0, len(images), num_pairs)
    right = rng.integers(0, len(images), num_pairs)
    x = np.concatenate([images[left], images[right]], axis=2)
    y = 10 * labels[left].astype(np.int32) + labels[right].astype(np.int32)
    return x, y.astype(np.int32)


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in `[0, 1]`.

    Computed as `float32(x) * float32(1 / 255)`, bit for bit what
    `keras.layers.Rescaling(1 / 255)` gives, so a model fed these inputs matches
    one that scales inside (keras-kd 0.1.0's generalist did).

    Example:

    >>> scale_pixels(np.array([0, 255], np.uint8)).tolist()
    [0.0, 1.0]
    """
    return np.asarray(images).astype(np.float32) * np.float32(1.0 / 255.0)


def load_two_digit_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    train_pairs: int = 60000,
    test_pairs: int = 10000,
    seed: int = 0,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Two-digit MNIST as float32 images in `[0, 1]` and int32 labels 0-99.

    Args:
        data_dir: The data root or MNIST folder, as for `load_mnist`; `None`
            reads `KERAS_KD_DATA_DIR`.
        train_pairs: Training images, paired from MNIST's training split with
            seed `seed`.
        test_pairs: Test images, paired from MNIST's test split with seed
            `seed + 1`.
        seed: Seed of the pairing.

    Returns:
        `((x_train, y_train), (x_test, y_test))` with images of shape
        `(n, 28, 56)`.

    Raises:
        ValueError: for a pair count below 1.
        FileNotFoundError: when MNIST is not found (see `load_mnist`).

    Example:

    ```python
    # reads MNIST from data_dir or KERAS_KD_DATA_DIR, as load_mnist does
    (x, y), (x_test, y_test) = load_two_digit_mnist(train_pairs=100)
    x.shape, int(y.max()) < 100  # ((100, 28, 56), True)
    ```

    Pair counts are checked before any file is read:

    >>> load_two_digit_mnist(train_pairs=0)
    Traceback (most recent call last):
    ...
    ValueError: `train_pairs` must be an integer >= 1, got 0.
    """
    for name, count in (("train_pairs", train_pairs), ("test_pairs", test_pairs)):
        if (
            isinstance(count, bool)
            or not isinstance(count, int | np.integer)
            or count < 1
        ):
            raise ValueError(f"`{name}` must be an integer >= 1, got {count!r}.")
    (images, labels), (test_images, test_labels) = load_mnist(data_dir)
    x, y = two_digit_mnist(images, labels, int(train_pairs), seed)
    x_test, y_test = two_digit_mnist(
        test_images, test_labels, int(test_pairs), seed + 1
    )
    return (scale_pixels(x), y), (scale_pixels(x_test), y_test)
