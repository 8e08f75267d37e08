"""The zoo's CNN: shapes it accepts, the same training on every backend, its saved-config contract,
and (slow) accuracy on real handwritten digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import ailib
from ailib import zoo
from ailib.layers import LAYERS

from .helpers import assert_close, host, mnist_test_dir, numeric_grad

MNIST = mnist_test_dir()


def _small(**kwargs: object) -> list[ailib.layers.Layer]:
    return zoo.cnn(size=8, channels=(3, 4), hidden=6, **kwargs)


def test_cnn_is_registered_and_takes_flat_rows_or_images() -> None:
    assert zoo.MODELS["cnn"] is zoo.cnn
    model = ailib.Sequential(zoo.cnn(), backend="numpy", seed=0)
    rows = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    out = model.predict(rows)
    assert tuple(out.shape) == (3, 10)
    assert_close(model.predict(rows.reshape(3, 1, 28, 28)), out)
    with pytest.raises(ValueError, match=r"Reshape: expected samples of 784 entries.*\(3, 780\)"):
        model.predict(rows[:, :780])
    with pytest.raises(ValueError, match="cnn: size 30 must be divisible by 2\\*\\*2"):
        zoo.cnn(size=30)


def test_cnn_layers_rebuild_from_their_configs() -> None:
    layers = zoo.cnn(in_channels=3, classes=5, size=16)
    rebuilt = [LAYERS[layer.name](**layer.get_config()) for layer in layers]
    assert [repr(a) for a in rebuilt] == [repr(b) for b in layers]
    assert [tuple(b.shape) for a in rebuilt for b in a.params.values()] == [
        tuple(b.shape) for a in layers for b in a.params.values()
    ]


def _train(backend: ailib.backends.Backend, dtype: str, steps: int = 3) -> tuple[list, list]:
    model = ailib.Sequential(_small(dropout=0.0), backend=backend, dtype=dtype, seed=4)
    data = np.random.default_rng(1)
    x, y = data.standard_normal((16, 64)), data.integers(0, 10, 16)
    if dtype == "float32":
        x = x.astype(np.float32)
    xb, yb = backend.asarray(x), backend.asarray(y)
    opt = ailib.optimizers.SGD(0.05, momentum=0.9)
    losses = [
        float(host(model.train_step(xb, yb, "softmax_cross_entropy", opt))) for _ in range(steps)
    ]
    return losses, [host(p) for p in model.params.values()]


def test_cnn_trains_the_same_on_every_backend(other_backend: ailib.backends.Backend) -> None:
    ref_losses, ref_params = _train(ailib.backends.get("numpy"), "float32")
    losses, params = _train(other_backend, "float32")
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    for got, ref in zip(params, ref_params):
        assert got.dtype == np.float32
        assert_close(got, ref, "float32", scale=50)  # three steps of accumulated round-off


def test_cnn_input_gradient_matches_finite_differences() -> None:
    """The whole stack (reshape, conv, pool, relu, flatten, dense) chained in float64."""
    model = ailib.Sequential(_small(dropout=0.0), backend="numpy", dtype="float64", seed=2)
    loss = ailib.losses.SoftmaxCrossEntropy()
    data = np.random.default_rng(3)
    x, y = data.standard_normal((2, 64)), data.integers(0, 10, 2)
    _, grad = loss.value_and_grad(model.forward(x), y)
    dx = model.backward(grad)
    numeric = numeric_grad(lambda xx: float(loss(model.forward(xx), y)), x)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-6 * np.abs(numeric).max())


def _idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * data[3]).reshape(dims)


@pytest.mark.slow
@pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"real MNIST digits not found in {MNIST}",
)
def test_cnn_beats_97_5_percent_on_real_digits() -> None:
    """8k of the 10k MNIST test digits to train, the other 2k (fixed split) to test."""
    x = _idx(MNIST / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    y = _idx(MNIST / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:8000], order[8000:]
    model = ailib.Sequential(zoo.cnn(), backend="numpy", seed=0)
    model.fit(x[train], y[train], optimizer=ailib.optimizers.Adam(1e-3), epochs=3, batch_size=32)
    accuracy = model.evaluate(x[test], y[test])["accuracy"]
    assert accuracy >= 0.975, f"test accuracy {accuracy:.4f} < 0.975"


def test_the_benchmarks_torch_twin_copies_every_layer_setting() -> None:
    """benchmarks/cnn.py compares ailib with a torch twin of the same network: the twin must
    carry over padding (strings too), dilation, groups, bias, ceil_mode and count_include_pad,
    or it computes another function (before, only kernel, stride and padding were copied, and
    AvgPool2D had no twin)."""
    pytest.importorskip("torch")
    from ailib.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Reshape
    from benchmarks.cnn import check_same_function, torch_twin

    layers = [
        Reshape((2, 9, 9)),
        Conv2D(2, 4, 3, padding="same", dilation=2, groups=2, bias=False),
        MaxPool2D(3, 2, 1, ceil_mode=True),  # 9 -> 5
        ReLU(),
        AvgPool2D(2, 2, 1, count_include_pad=False, ceil_mode=True),  # 5 -> 3
        Conv2D(4, 6, (2, 3), stride=(1, 2), padding="valid"),  # 3x3 -> 2x1
        Flatten(),
        Dense(12, 5, bias=False),
        Dropout(0.5),
        Dense(5, 3),
    ]
    model = ailib.Sequential(layers, backend="numpy", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 162)).astype(np.float32)
    assert check_same_function(model, torch_twin(model), x) < 1e-5
