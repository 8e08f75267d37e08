"""The layers of issue 10 inside models: a CNN with dilation, groups, padded pooling, SiLU, GELU,
LayerNorm and global average pooling, and a model fed integer indices through an Embedding, pass
the whole-model finite-difference check on every backend and are built from the shapes that flow
into them."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import (
    GELU,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    SiLU,
)
from ailib.optimizers import Adam

from .helpers import assert_close, host, model_gradcheck


def image_model(backend: ailib.backends.Backend, dtype: str = "float64") -> ailib.Model:
    """(2, 7, 7) images: a dilated conv, a depthwise conv, padded max and average pooling,
    SiLU/GELU, a residual-free head through LayerNorm and global average pooling; no layer is
    given its input size."""
    x = ailib.Input((2, 7, 7))
    h = SiLU()(Conv2D(out_channels=4, kernel_size=3, padding=2, dilation=2)(x))
    h = BatchNorm2D()(Conv2D(out_channels=4, kernel_size=3, padding=1, groups=4)(h))
    h = MaxPool2D(3, 2, padding=1)(GELU()(h))  # 7 -> 4
    h = AvgPool2D(3, 1, padding=1, count_include_pad=False)(h)
    h = GlobalAvgPool2D()(Conv2D(out_channels=6, kernel_size=1, groups=2)(h))
    return ailib.Model(x, Dense(3)(LayerNorm()(h)), backend=backend, dtype=dtype, seed=5)


def _image_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    # distinct inputs well apart, so the max-pool windows have one maximum under the FD step
    x = rng.permutation(2 * 2 * 7 * 7).reshape(2, 2, 7, 7) * 0.02 - 2.0
    return x, rng.integers(0, 3, 2)


def test_image_model_is_built_from_shapes_and_passes_the_gradient_check() -> None:
    """Finite differences on NumPy (float64); the next test holds every backend to NumPy."""
    be = ailib.backends.get("numpy")
    model = image_model(be)
    assert model.built
    shapes = [tuple(layer.params["W"].shape) for layer in model.layers if "W" in layer.params]
    assert shapes == [(4, 2, 3, 3), (4, 1, 3, 3), (6, 2, 1, 1), (3, 6)]
    x, y = _image_batch()
    model_gradcheck(model, x, be.asarray(y), ailib.losses.SoftmaxCrossEntropy(), rtol=1e-5)


def test_image_model_gradients_agree_with_numpy_on_every_backend(
    other_backend: ailib.backends.Backend,
) -> None:
    x, y = _image_batch()
    loss = ailib.losses.SoftmaxCrossEntropy()
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        model = image_model(be)
        _, grad = loss.value_and_grad(model.forward(be.asarray(x)), be.asarray(y))
        dx = model.backward(grad)
        grads = [host(v) for layer in model.layers for _, v in sorted(layer.grads.items())]
        results.append([host(dx), *grads])
    for ref, got in zip(*results):
        assert_close(got, ref, "float64", scale=10)


def token_model(backend: ailib.backends.Backend, dtype: str = "float64") -> ailib.Model:
    tokens = ailib.Input((5,))
    h = LayerNorm()(Embedding(9, 4)(tokens))  # (5, 4)
    h = Flatten()(GELU("tanh")(h))
    return ailib.Model(tokens, Dense(2)(SiLU()(h)), backend=backend, dtype=dtype, seed=6)


def test_model_fed_indices_passes_the_gradient_check_without_an_input_gradient(
    backend: ailib.backends.Backend,
) -> None:
    model = token_model(backend)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 9, size=(4, 5))
    y = backend.asarray(rng.standard_normal((4, 2)))
    model_gradcheck(model, tokens, y, ailib.losses.MSE(), input_grad=False)


def test_integer_inputs_reach_an_embedding_and_are_refused_elsewhere(
    backend: ailib.backends.Backend,
) -> None:
    tokens = np.random.default_rng(2).integers(0, 9, size=(12, 5))
    labels = np.arange(12) % 2
    model = token_model(backend, "float32")
    history = model.fit(tokens, labels, optimizer=Adam(lr=0.05), epochs=4, batch_size=4)
    assert history["loss"][-1] < history["loss"][0]
    as_device = backend.asarray(tokens, dtype=backend.dtype("int32"))
    np.testing.assert_allclose(host(model.predict(as_device)), host(model.predict(tokens)))
    dense = ailib.Sequential([Dense(5, 2)], backend=backend)
    with pytest.raises(TypeError, match="x has dtype int64 but the model needs floats"):
        dense.fit(tokens, labels, epochs=1)
