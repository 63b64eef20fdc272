"""Loaders for the data sets of the paper's experiments, reading local files first.

Every loader takes a `data_dir` argument; when it is `None` the folder comes from the
`KERAS_KD_DATA_DIR` environment variable. Nothing here reads an absolute path of its
own choosing.

- `mnist`: `load_mnist` (IDX files, gzip or raw), `mnist_dataset` (tf.data, jitter).
- `fsdd`: `load_fsdd` (Free Spoken Digit Dataset WAVs to labelled log-mel frames).
- `imagenet`: `load_imagenet` (ImageNet-style folder or tfds), `train_dataset`,
  `eval_dataset`.
"""

from keras_kd.datasets import fsdd, imagenet, mnist
from keras_kd.datasets.fsdd import load_fsdd
from keras_kd.datasets.imagenet import eval_dataset, load_imagenet, train_dataset
from keras_kd.datasets.location import DATA_DIR_VARIABLE, resolve_data_dir
from keras_kd.datasets.mnist import load_mnist, mnist_dataset

__all__ = [
    "DATA_DIR_VARIABLE",
    "eval_dataset",
    "fsdd",
    "imagenet",
    "load_fsdd",
    "load_imagenet",
    "load_mnist",
    "mnist",
    "mnist_dataset",
    "resolve_data_dir",
    "train_dataset",
]
