"""The zoo's residual network: its shapes, a whole-model finite-difference check through
residual blocks, BatchNorm and global average pooling, and the same training on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib import zoo

from .helpers import assert_close, host, model_gradcheck


def _small(backend: ailib.backends.Backend, dtype: str = "float32", seed: int = 0) -> ailib.Model:
    return zoo.build(
        "resnet", backend=backend, dtype=dtype, seed=seed, size=6, channels=(2, 3), classes=4
    )


def test_resnet_is_a_graph_of_residual_stages() -> None:
    model = zoo.build("resnet", backend="numpy", seed=0)
    assert type(model) is ailib.Model and zoo.MODELS["resnet"] is zoo.resnet
    shapes = [model.shapes[out] for layer, _, out, _ in model.wiring if layer.name == "Add"]
    assert shapes == [(16, 28, 28), (32, 14, 14), (64, 7, 7)]  # one block per stage
    names = [layer.name for layer in model.layers]
    assert names.count("Add") == 3 and names[-2:] == ["GlobalAvgPool2D", "Dense"]
    out = model.predict(np.random.default_rng(0).random((3, 784), dtype=np.float32))
    assert tuple(out.shape) == (3, 10)
    deeper = zoo.build("resnet", backend="numpy", blocks=2, channels=(4, 8))
    assert [layer.name for layer in deeper.layers].count("Add") == 4
    with pytest.raises(ValueError, match="resnet: need blocks >= 1"):
        zoo.resnet(blocks=0)


def test_resnet_gradients_match_finite_differences() -> None:
    model = _small(ailib.backends.get("numpy"), "float64", seed=1)
    rng = np.random.default_rng(2)
    labels = ailib.backends.get("numpy").asarray(rng.integers(0, 4, 3))
    model_gradcheck(model, rng.standard_normal((3, 36)), labels, ailib.losses.SoftmaxCrossEntropy())


def _train(backend: ailib.backends.Backend) -> tuple[list[float], list[np.ndarray]]:
    model = _small(backend, seed=4)
    data = np.random.default_rng(1)
    x, y = (
        backend.asarray(data.random((16, 36), dtype=np.float32)),
        backend.asarray(data.integers(0, 4, 16)),
    )
    opt = ailib.optimizers.SGD(0.05, momentum=0.9)
    losses = [float(host(model.train_step(x, y, "softmax_cross_entropy", opt))) for _ in range(3)]
    return losses, [host(p) for p in model.params.values()]


def test_resnet_trains_the_same_on_every_backend(other_backend: ailib.backends.Backend) -> None:
    ref_losses, ref_params = _train(ailib.backends.get("numpy"))
    losses, params = _train(other_backend)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    for got, ref in zip(params, ref_params):
        assert got.dtype == np.float32
        assert_close(got, ref, "float32", scale=50)  # three steps of accumulated round-off
