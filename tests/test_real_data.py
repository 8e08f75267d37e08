"""Integration on real data, each skipped cleanly where the files are absent:
- Fashion-MNIST as found by the loader (Debian's dataset-fashion-mnist, the cache, $AILIB_DATA);
- MNIST's 10,000 test digits: $AILIB_TEST_MNIST_DIR, ../shared/data/mnist next to the
  repository, or data/mnist-test in it (`helpers.mnist_test_dir`).
"""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib import datasets, zoo
from ailib.optimizers import Adam

from .helpers import mnist_test_dir

MNIST_DIR = mnist_test_dir()

pytestmark = pytest.mark.slow


def _fashion() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    try:
        return datasets.load_fashion_mnist(download=False)
    except datasets.DatasetUnavailable:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def _mnist_test_digits() -> tuple[np.ndarray, np.ndarray]:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test digits not found in {MNIST_DIR} (set AILIB_TEST_MNIST_DIR)")
    return datasets.load_mnist_test(MNIST_DIR, download=False)


def test_fashion_mnist_is_complete_and_verified() -> None:
    (x, y), (xt, yt) = _fashion()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(yt), [1000] * 10)


def test_mlp_learns_fashion_mnist_briefly() -> None:
    (x, y), (xt, yt) = _fashion()
    x, xt = datasets.flatten(datasets.to_float(x)), datasets.flatten(datasets.to_float(xt))
    model = ailib.Sequential(zoo.mlp(), backend="numpy", seed=0)
    model.fit(x[:20000], y[:20000], optimizer=Adam(lr=1e-3), epochs=2, batch_size=64)
    assert model.evaluate(xt, yt)["accuracy"] > 0.80


def test_mlp_reaches_95_percent_on_real_digits() -> None:
    x, y = _mnist_test_digits()
    assert x.shape == (10000, 28, 28) and sorted(set(y.tolist())) == list(range(10))
    (x, y), (xt, yt) = datasets.train_test_split(
        datasets.flatten(datasets.to_float(x)), y, test_size=2000, seed=0
    )
    model = ailib.Sequential(zoo.mlp(), backend="numpy", seed=0)
    model.fit(x, y, optimizer=Adam(lr=1e-3), epochs=8, batch_size=64)
    assert model.evaluate(xt, yt)["accuracy"] >= 0.95
