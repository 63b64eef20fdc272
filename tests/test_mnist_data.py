"""keras_kd.datasets.mnist: IDX reading and checks, jitter, the tf.data pipeline."""

import gzip
import hashlib

import numpy as np
import pytest
import tensorflow as tf

from keras_kd.datasets.mnist import jitter_images, load_mnist, mnist_dataset, read_idx

# md5 of the uncompressed files, from the shared data README.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_raw_and_gzip_give_the_array(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array, 2051))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array, 2051)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a", 2051, (2, 3, 4)), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", 2051, (2, 3, 4)), array)


@pytest.mark.parametrize(
    "content, expected, match",
    [
        (idx_bytes(np.zeros(5), 2051), (5,), "magic number 2051, expected 2049"),
        (
            idx_bytes(np.zeros(6), 2049),
            (5,),
            r"declares dimensions \(6,\), expected \(5,\)",
        ),
        (idx_bytes(np.zeros(5), 2049)[:-2], (5,), "truncated: 11 bytes, expected 13"),
        (
            idx_bytes(np.zeros(5), 2049)[:6],
            (5,),
            "truncated: 6 bytes, fewer than its 8-byte header",
        ),
        (idx_bytes(np.zeros(5), 2049) + b"x", (5,), "longer than its header says"),
    ],
)
def test_read_idx_rejects_bad_headers_and_lengths_naming_the_file(
    tmp_path, content, expected, match
):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as error:
        read_idx(path, 2049, expected)
    assert "labels-idx1-ubyte" in str(error.value)


def test_read_idx_rejects_a_truncated_gzip_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100), 2049))[:-10])
    with pytest.raises(
        ValueError, match="t10k-labels-idx1-ubyte.gz.*truncated or not gzip"
    ):
        read_idx(path, 2049, (100,))


def test_load_mnist_names_a_missing_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path)


def test_load_mnist_reads_the_real_files_exactly(data_dir, tmp_path):
    (x_train, y_train), (x_test, y_test) = load_mnist(data_dir)
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert x_train.dtype == y_train.dtype == np.uint8
    # Rebuilding each file from the arrays reproduces the published md5 sums.
    for stem, array, magic in [
        ("train-images-idx3-ubyte", x_train, 2051),
        ("train-labels-idx1-ubyte", y_train, 2049),
        ("t10k-images-idx3-ubyte", x_test, 2051),
        ("t10k-labels-idx1-ubyte", y_test, 2049),
    ]:
        assert hashlib.md5(idx_bytes(array, magic)).hexdigest() == MD5[stem]
    assert np.bincount(y_test)[3] == 1010  # the paper's "1010 threes"
    # The same files uncompressed, in a folder given directly, read the same.
    for stem, array, magic in [
        ("train-images-idx3-ubyte", x_train, 2051),
        ("train-labels-idx1-ubyte", y_train, 2049),
        ("t10k-images-idx3-ubyte", x_test, 2051),
        ("t10k-labels-idx1-ubyte", y_test, 2049),
    ]:
        (tmp_path / stem).write_bytes(idx_bytes(array, magic))
    (_, _), (raw_x_test, raw_y_test) = load_mnist(tmp_path)
    np.testing.assert_array_equal(raw_x_test, x_test)
    np.testing.assert_array_equal(raw_y_test, y_test)


def test_load_mnist_rejects_out_of_range_labels(tmp_path):
    shapes = {
        "train-images-idx3-ubyte": ((60000, 28, 28), 2051),
        "train-labels-idx1-ubyte": ((60000,), 2049),
        "t10k-images-idx3-ubyte": ((10000, 28, 28), 2051),
        "t10k-labels-idx1-ubyte": ((10000,), 2049),
    }
    for stem, (shape, magic) in shapes.items():
        array = np.zeros(shape, np.uint8)
        if stem == "t10k-labels-idx1-ubyte":
            array[7] = 12
        (tmp_path / stem).write_bytes(idx_bytes(array, magic))
    with pytest.raises(ValueError, match="test labels .* contain 12"):
        load_mnist(tmp_path)


def test_jitter_moves_each_image_by_a_whole_shift_of_at_most_two_pixels():
    images = np.zeros((400, 28, 28), np.float32)
    images[:, 14, 10] = 1.0
    shifted = jitter_images(tf.constant(images), tf.constant([3, 4])).numpy()
    offsets = set()
    for image in shifted:
        (row,), (col,) = np.nonzero(image)  # still exactly one lit pixel
        assert image[row, col] == 1.0
        offsets.add((row - 14, col - 10))
    assert offsets == {(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)}
    again = jitter_images(tf.constant(images), tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(shifted, again)  # seeded


def test_jitter_fills_with_background_at_the_border():
    images = np.ones((200, 28, 28), np.float32)
    shifted = jitter_images(tf.constant(images), tf.constant([0, 1])).numpy()
    # A shift by (dr, dc) leaves (28 - |dr|) * (28 - |dc|) ones.
    sums = shifted.sum(axis=(1, 2))
    allowed = {
        (28 - abs(dr)) * (28 - abs(dc)) for dr in range(-2, 3) for dc in range(-2, 3)
    }
    assert set(sums.astype(int)) <= allowed
    with pytest.raises(ValueError, match="max_shift"):
        jitter_images(tf.constant(images), tf.constant([0, 1]), max_shift=-1)


def test_mnist_dataset_scales_batches_and_carries_teacher_logits():
    images = np.full((5, 28, 28), 255, np.uint8)
    images[:, 0, 0] = 51
    labels = np.arange(5)
    logits = np.arange(50, dtype=np.float32).reshape(5, 10)
    x, y = next(iter(mnist_dataset(images, labels, batch_size=4)))
    assert x.shape == (4, 28, 28) and float(x[0, 0, 0]) == pytest.approx(0.2)
    assert float(x[0, 1, 1]) == 1.0
    np.testing.assert_array_equal(y.numpy(), [0, 1, 2, 3])
    batches = list(mnist_dataset(images, labels, batch_size=4, teacher_logits=logits))
    x, y = batches[1]
    np.testing.assert_array_equal(x["teacher_logits"].numpy(), logits[4:])
    assert x["inputs"].shape == (1, 28, 28) and y.numpy().tolist() == [4]
    only_x = next(iter(mnist_dataset(images, batch_size=2)))
    assert only_x.shape == (2, 28, 28)


def test_mnist_dataset_shuffles_reproducibly_and_differently_each_epoch():
    images = np.zeros((64, 28, 28), np.uint8)
    labels = np.arange(64)

    def epochs(dataset):
        return [np.concatenate([y.numpy() for _, y in dataset]) for _ in range(2)]

    first, second = epochs(
        mnist_dataset(images, labels, batch_size=16, shuffle=True, seed=5)
    )
    again, _ = epochs(
        mnist_dataset(images, labels, batch_size=16, shuffle=True, seed=5)
    )
    assert sorted(first) == list(range(64))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


def test_mnist_dataset_argument_errors():
    images = np.zeros((4, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="`labels` has 3 rows but `images` has 4"):
        mnist_dataset(images, np.zeros(3))
    with pytest.raises(ValueError, match="jitter=True.*teacher_logits"):
        mnist_dataset(images, jitter=True, teacher_logits=np.zeros((4, 10)))
    with pytest.raises(ValueError, match="batch_size"):
        mnist_dataset(images, batch_size=0)
    with pytest.raises(ValueError, match=r"shape \(n, height, width\)"):
        mnist_dataset(images.reshape(4, 784))
