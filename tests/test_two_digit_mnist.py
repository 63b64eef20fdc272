"""Tests of keras_kd.datasets.two_digit_mnist."""

import keras
import numpy as np
import pytest

from keras_kd.datasets import two_digit_mnist as tdm


def test_two_digit_images_put_the_digits_side_by_side():
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    x, y = tdm.two_digit_mnist(images, np.array([7, 1, 4]), 50, seed=0)
    assert x.shape == (50, 28, 56) and y.dtype == np.int32
    for image, label in zip(x, y):
        left = [i for i in range(3) if np.array_equal(images[i], image[:, :28])]
        right = [i for i in range(3) if np.array_equal(images[i], image[:, 28:])]
        assert label == 10 * [7, 1, 4][left[0]] + [7, 1, 4][right[0]]


def test_scaled_pixels_are_bit_identical_to_the_rescaling_layer():
    # 0.1.0's generalist scaled inside the model; the same floats keep its figures.
    # (Dividing by 255 instead differs in the last bit for 126 of the 256 values.)
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    layer = keras.ops.convert_to_numpy(keras.layers.Rescaling(1.0 / 255.0)(pixels))
    assert np.array_equal(tdm.scale_pixels(pixels), layer)


@pytest.mark.parametrize("counts", [{"train_pairs": 0}, {"test_pairs": 2.5}])
def test_bad_pair_counts_are_refused_before_reading_files(counts):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        tdm.load_two_digit_mnist("/nonexistent", **counts)


def test_loads_train_and_test_pairs_from_their_own_splits(data_dir):
    (x, y), (x_test, y_test) = tdm.load_two_digit_mnist(
        data_dir, train_pairs=300, test_pairs=200, seed=3
    )
    assert x.shape == (300, 28, 56) and x_test.shape == (200, 28, 56)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() < tdm.NUM_CLASSES
    (x_again, _), _ = tdm.load_two_digit_mnist(
        data_dir, train_pairs=300, test_pairs=200, seed=3
    )
    assert np.array_equal(x, x_again)
    # Test pairs are drawn with another seed from the test split.
    assert not np.array_equal(x[:200], x_test)
