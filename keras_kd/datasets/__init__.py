"""Loaders for the data sets of the paper's experiments, reading local files first.

Every loader takes a `data_dir` argument; when it is `None` the folder comes from the
`KERAS_KD_DATA_DIR` environment variable. Nothing here reads an absolute path of its
own choosing.
"""

from keras_kd.datasets.location import DATA_DIR_VARIABLE, resolve_data_dir

__all__ = ["DATA_DIR_VARIABLE", "resolve_data_dir"]
