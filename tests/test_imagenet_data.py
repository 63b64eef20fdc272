"""keras_kd.datasets.imagenet: folders, arrays, crops, skipped files, determinism, tfds,
and the errors for an empty, single-class or unusable data folder."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from _imagenet_folder import CLASSES, write_image_folder

from keras_kd.datasets import imagenet


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    counts = write_image_folder(root, train_per_class=4, val_per_class=2, corrupt="val")
    return root, counts


def batches(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def _tiny_classifier():
    """A compiled 3-class model on 16 x 16 images, for evaluating a pipeline."""
    import keras

    model = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(),
         keras.layers.Dense(3)]
    )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_folder_lists_classes_images_and_ignores_other_files(folder):
    root, counts = folder
    data = imagenet.load_imagenet(root, source="auto")
    assert data.source == "folder"
    assert data.class_names == list(CLASSES)
    assert data.train.num_examples == counts["train"] == 12  # notes.txt ignored
    assert data.val.num_examples == counts["val"] + 1  # the corrupt file is listed
    assert sum(path.endswith(".png") for path in data.train.files) == 3
    assert np.bincount(data.train.labels).tolist() == [4, 4, 4]


def test_missing_split_and_unknown_source_are_explained(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has train/ but no val/ folder"):
        imagenet.load_imagenet(tmp_path, source="folder")
    with pytest.raises(ValueError, match="`source` must be one of"):
        imagenet.load_imagenet(tmp_path, source="s3")


def test_eval_pipeline_centre_crops_names_the_corrupt_file_and_has_a_length(folder):
    root, counts = folder
    data = imagenet.load_imagenet(root)
    counter = imagenet.DecodeCounter()
    with pytest.warns(imagenet.SkippedImagesWarning) as caught:
        dataset = imagenet.eval_dataset(
            data, image_size=16, batch_size=4, counter=counter
        )
    (message,) = [str(w.message) for w in caught]
    assert f"1 of 7 files under {str(root / 'val')!r}" in message
    assert f"{CLASSES[0]}/broken_0.JPEG" in message
    # The counting pass decoded the split once (and filled the cache).
    assert (counter.attempted, counter.decoded, counter.skipped) == (7, 6, 1)
    assert int(dataset.cardinality()) == 2  # 6 decodable images, batches of 4
    images, labels = zip(*batches(dataset, 10), strict=True)
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (counts["val"], 16, 16, 3)
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 255.0
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    # Cached: later passes give the same and decode nothing.
    again = np.concatenate([x for x, _ in batches(dataset, 10)])
    np.testing.assert_array_equal(images, again)
    assert counter.attempted == 7


def test_eval_pipeline_uncached_is_the_same_and_decodes_each_pass(folder):
    root, _ = folder
    data = imagenet.load_imagenet(root)
    counter = imagenet.DecodeCounter()
    with pytest.warns(imagenet.SkippedImagesWarning):
        cached = imagenet.eval_dataset(data, image_size=16, batch_size=4)
        uncached = imagenet.eval_dataset(
            data, image_size=16, batch_size=4, counter=counter, cache_bytes=0
        )
    assert int(uncached.cardinality()) == 2 and counter.attempted == 7
    for (x, y), (x2, y2) in zip(batches(cached, 5), batches(uncached, 5), strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert counter.attempted == 14


def test_keras_evaluates_the_eval_pipeline_without_an_out_of_data_warning(folder):
    """With an unknown length, Keras ends the first pass over the validation set
    with "Your input ran out of data; interrupting training": a false alarm that
    0.3.0's pipeline raised on the first validation of every ImageNet run."""
    import warnings


    root, _ = folder
    data = imagenet.load_imagenet(root)
    with pytest.warns(imagenet.SkippedImagesWarning):
        dataset = imagenet.eval_dataset(data, image_size=16, batch_size=4)
    model = _tiny_classifier()
    unknown = dataset.filter(lambda images, labels: True)
    assert int(unknown.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    for data_set, warns in ((unknown, True), (dataset, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.evaluate(data_set, verbose=0)
        ran_out = any("ran out of data" in str(w.message) for w in caught)
        assert ran_out == warns, [str(w.message) for w in caught]


def test_crops_have_the_requested_size_for_odd_shapes():
    seed = tf.constant([4, 2], tf.int64)
    for shape in [(9, 12, 3), (23, 41, 3), (300, 7, 3)]:
        image = tf.random.uniform(shape, maxval=255)
        assert imagenet.random_resized_crop(image, 24, seed).shape == (24, 24, 3)
        assert imagenet.center_crop(image, 24).shape == (24, 24, 3)
    # A centre crop of a constant image is that constant; of a gradient, the middle.
    ramp = tf.tile(tf.range(64, dtype=tf.float32)[None, :, None], [32, 1, 3])
    crop = imagenet.center_crop(ramp, 16, crop_fraction=0.5).numpy()
    assert abs(crop.mean() - 31.5) < 0.6


def test_training_stream_is_deterministic_resumable_and_sliceable(folder):
    root, _ = folder
    data = imagenet.load_imagenet(root)

    def stream(**kwargs):
        return imagenet.train_dataset(
            data, image_size=16, global_batch_size=4, seed=7, **kwargs
        )

    first = batches(stream(), 5)  # 5 batches of 4 cross the 12-image epoch boundary
    assert all(x.shape == (4, 16, 16, 3) for x, _ in first)
    epoch = np.concatenate([y for _, y in first[:3]])
    assert sorted(epoch.tolist()) == sorted(data.train.labels.tolist())
    for (x1, y1), (x2, y2) in zip(first, batches(stream(), 5), strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    resumed = batches(stream(start_step=3), 2)
    for (x1, y1), (x2, y2) in zip(first[3:], resumed, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    # Two workers each decode half of every global batch: together the same batch.
    halves = [
        batches(stream(input_context=tf.distribute.InputContext(2, worker, 2)), 2)
        for worker in (0, 1)
    ]
    for step in range(2):
        joined = np.concatenate([halves[0][step][0], halves[1][step][0]])
        np.testing.assert_array_equal(joined, first[step][0])
    other_seed = batches(
        imagenet.train_dataset(data, image_size=16, global_batch_size=4, seed=8), 1
    )
    assert not np.array_equal(other_seed[0][0], first[0][0])


def test_undecodable_training_file_is_skipped_and_counted(tmp_path):
    write_image_folder(tmp_path, train_per_class=2, val_per_class=1, corrupt="train")
    data = imagenet.load_imagenet(tmp_path)
    counter = imagenet.DecodeCounter()
    dataset = imagenet.train_dataset(
        data, image_size=8, global_batch_size=6, counter=counter, cache_bytes=0
    )
    ((x, y),) = batches(dataset, 1)
    # 7 files, one corrupt: the first batch is exactly the 6 good ones of epoch 1.
    assert x.shape == (6, 8, 8, 3)
    assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    # Counted per attempt (read-ahead may already have retried it in epoch 2).
    assert counter.skipped >= 1


def _tfds_archives(root):
    """Empty stand-ins for the official archives, which tfds' mock never reads."""
    manual = root / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in imagenet.TFDS_ARCHIVES:
        (manual / name).write_bytes(b"")
    return root


def test_tfds_mock_imagenet2012_gives_the_same_pipeline(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        data = imagenet.load_imagenet(_tfds_archives(tmp_path), source="tfds")
        assert data.source == "tfds" and data.num_classes == 1000
        assert data.class_names[217] == "n02102040"
        ((x, y),) = batches(
            imagenet.train_dataset(data, image_size=16, global_batch_size=3), 1
        )
        assert x.shape == (3, 16, 16, 3) and y.shape == (3,)
        counter = imagenet.DecodeCounter()
        seen = sum(
            len(y)
            for _, y in batches(
                imagenet.eval_dataset(
                    data, image_size=16, batch_size=4, counter=counter
                ),
                5,
            )
        )
        assert seen == 6 and counter.skipped == 0


@pytest.mark.parametrize("source", ["auto", "tfds"])
def test_an_empty_data_folder_is_one_clear_error_and_stays_empty(tmp_path, source):
    with pytest.raises(FileNotFoundError) as error:
        imagenet.load_imagenet(tmp_path, source=source)
    message = str(error.value)
    assert "\n" not in message
    # What is missing, where it looked, what layout is expected.
    assert f"No ImageNet data in {str(tmp_path)!r} (from --data-dir)" in message
    assert "imagenet/ and imagenette/" in message
    assert "ILSVRC2012_img_train.tar" in message
    assert str(tmp_path / "downloads" / "manual") in message
    assert "train/<class>/*.JPEG and val/<class>/*.JPEG" in message
    # tensorflow-datasets created nothing in the user's folder.
    assert list(tmp_path.iterdir()) == []


def test_a_folder_source_without_train_says_where_it_looked(tmp_path):
    (tmp_path / "val" / "n01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no train/ folder, nor has its"):
        imagenet.load_imagenet(tmp_path, source="folder")


def test_a_single_class_folder_is_an_error_naming_the_class(tmp_path):
    write_image_folder(tmp_path, train_per_class=2, val_per_class=1, corrupt=None)
    for split in ("train", "val"):
        for extra in CLASSES[1:]:
            for path in (tmp_path / split / extra).iterdir():
                path.unlink()
            (tmp_path / split / extra).rmdir()
    with pytest.raises(ValueError, match=f"single class folder, '{CLASSES[0]}'"):
        imagenet.load_imagenet(tmp_path)
    with pytest.raises(ValueError, match="single class folder"):
        imagenet.read_image_folder(tmp_path / "train", 8)


def test_hidden_folders_are_ignored_and_an_empty_class_is_named(tmp_path):
    write_image_folder(tmp_path, train_per_class=2, val_per_class=1, corrupt=None)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    split, names = imagenet.list_image_folder(tmp_path / "train")
    assert names == list(CLASSES) and split.num_examples == 6
    (tmp_path / "train" / "n09999999").mkdir()
    with pytest.raises(ValueError, match=r"\['n09999999'\] .* hold no images"):
        imagenet.list_image_folder(tmp_path / "train")


def test_read_image_folder_skips_counts_and_warns_about_undecodable_files(tmp_path):
    write_image_folder(tmp_path, train_per_class=2, val_per_class=1, corrupt="train")
    text = tmp_path / "train" / CLASSES[2] / "readme.JPEG"
    text.write_text("this is a text file, not a JPEG\n")
    with pytest.warns(
        imagenet.SkippedImagesWarning, match=r"2 of 8 files .* could not be decoded"
    ):
        arrays = imagenet.read_image_folder(tmp_path / "train", (12, 10))
    assert sorted(arrays.skipped) == sorted(
        [str(tmp_path / "train" / CLASSES[0] / "broken_0.JPEG"), str(text)]
    )
    assert arrays.images.shape == (6, 12, 10, 3) and arrays.images.dtype == np.uint8
    assert arrays.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert arrays.class_names == list(CLASSES)
    test = imagenet.read_image_folder(
        tmp_path / "val", 8, class_names=arrays.class_names
    )
    assert test.skipped == () and test.labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="image_size"):
        imagenet.read_image_folder(tmp_path / "val", (0, 8))


def test_subset_keeps_the_first_classes_and_files(folder):
    root, _ = folder
    data = imagenet.load_imagenet(root).subset(2, train_per_class=3, val_per_class=1)
    assert data.class_names == list(CLASSES[:2])
    assert np.bincount(data.train.labels).tolist() == [3, 3]
    assert data.val.labels.tolist() == [0, 1]
    assert data.train.fingerprint() != imagenet.load_imagenet(root).train.fingerprint()
    with pytest.raises(ValueError, match="at least two classes"):
        imagenet.load_imagenet(root).subset(1)


def test_eval_pipeline_under_two_replicas_reads_the_cache_and_scores_the_same(folder):
    import keras
    from conftest import two_replicas

    root, _ = folder
    data = imagenet.load_imagenet(root)
    counter = imagenet.DecodeCounter()
    with pytest.warns(imagenet.SkippedImagesWarning):
        dataset = imagenet.eval_dataset(
            data, image_size=16, batch_size=4, counter=counter
        )

    def scores(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = _tiny_classifier()
        return model.evaluate(dataset, verbose=0)

    single = scores(tf.distribute.get_strategy())
    for _ in range(2):
        np.testing.assert_allclose(scores(two_replicas()), single, rtol=1e-5)
    assert counter.attempted == 7  # decoded once, when built; never again
