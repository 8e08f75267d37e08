"""Datasets on the host: MNIST and Fashion-MNIST (found locally or downloaded and verified),
the IDX file format, and NumPy preprocessing.

    >>> from ailib import datasets
    >>> (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
    >>> x_train = datasets.flatten(datasets.to_float(x_train))      # (60000, 784) float32 in [0, 1]

Where files are looked for and how they are checked: `ailib.datasets.mnist` and docs/datasets.md.
"""

from .download import ChecksumMismatch, DownloadFailed, download
from .idx import IDXFormatError, parse_idx, read_idx, write_idx
from .mnist import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    DatasetSpec,
    DatasetUnavailable,
    FileSpec,
    cache_dir,
    load,
    load_fashion_mnist,
    load_mnist,
    load_mnist_test,
    search_dirs,
)
from .preprocessing import flatten, one_hot, to_float, train_test_split

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "ChecksumMismatch",
    "DatasetSpec",
    "DatasetUnavailable",
    "DownloadFailed",
    "FileSpec",
    "IDXFormatError",
    "cache_dir",
    "download",
    "flatten",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_test",
    "one_hot",
    "parse_idx",
    "read_idx",
    "search_dirs",
    "to_float",
    "train_test_split",
    "write_idx",
]
