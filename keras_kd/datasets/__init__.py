"""Data loaders that read local files first.

Every loader takes a `data_dir` argument; when it is `None` the folder comes from the
`KERAS_KD_DATA_DIR` environment variable. Nothing here reads an absolute path of its
own choosing.

- `arrays`: `load_data`, any labelled data set (an `.npz` file, a prepared
  `tfds:NAME` set or an image folder) as checked arrays (`DataSplits`);
  `check_split`, `check_label_range`, `locate_data`.
- `mnist`: `load_mnist` (IDX files, gzip or raw), `mnist_dataset` (tf.data, jitter).
- `two_digit_mnist`: `two_digit_mnist` (pairs of MNIST digits, 100 classes) and
  `load_two_digit_mnist` (both splits from the MNIST files).
- `fsdd`: `load_fsdd` (Free Spoken Digit Dataset WAVs to labelled log-mel frames).
- `imagenet`: `load_imagenet` (ImageNet-style folder or tfds), `train_dataset`,
  `eval_dataset`; `read_image_folder`, the one reader of a folder of class
  sub-folders into `ImageArrays` (undecodable files skipped with a
  `SkippedImagesWarning`), which `load_data` uses too.
- `location`: `resolve_data_dir` and `DATA_DIR_VARIABLE`.
- `python_source`: the Python standard library's own source as a
  language-modelling corpus (no data folder: the running Python's library),
  with its byte-pair tokenizer; imported on use (`from
  keras_kd.datasets import python_source`).
"""

from keras_kd.datasets import arrays, fsdd, imagenet, mnist, two_digit_mnist
from keras_kd.datasets.arrays import (
    DataSplits,
    check_label_range,
    check_split,
    load_data,
    locate_data,
)
from keras_kd.datasets.fsdd import load_fsdd
from keras_kd.datasets.imagenet import (
    ImageArrays,
    SkippedImagesWarning,
    eval_dataset,
    load_imagenet,
    read_image_folder,
    train_dataset,
)
from keras_kd.datasets.location import DATA_DIR_VARIABLE, resolve_data_dir
from keras_kd.datasets.mnist import load_mnist, mnist_dataset
from keras_kd.datasets.two_digit_mnist import load_two_digit_mnist

__all__ = [
    "DATA_DIR_VARIABLE",
    "DataSplits",
    "ImageArrays",
    "SkippedImagesWarning",
    "arrays",
    "check_label_range",
    "check_split",
    "eval_dataset",
    "fsdd",
    "imagenet",
    "load_data",
    "load_fsdd",
    "load_imagenet",
    "load_mnist",
    "load_two_digit_mnist",
    "locate_data",
    "mnist",
    "mnist_dataset",
    "read_image_folder",
    "resolve_data_dir",
    "train_dataset",
    "two_digit_mnist",
]
