"""Conv2D, MaxPool2D and AvgPool2D: float64 NumPy loop references, finite differences, every
backend, errors."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import AvgPool2D, Conv2D, MaxPool2D

from .helpers import assert_close, host, layer_gradcheck

#: (kernel_size, stride, padding) cases: square and rectangular kernels, stride > 1, padding
CONV_CASES = {
    "k3-s1-p1": (3, 1, 1),
    "k2x3-s2-p1x0": ((2, 3), 2, (1, 0)),
    "k3-s2x1-p0": (3, (2, 1), 0),
    "k1-s1-p0": (1, 1, 0),
}


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def conv_reference(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: object, padding: object
) -> np.ndarray:
    """Direct convolution: one dot product per output position, written with loops."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for a in range(oh):
        for bb in range(ow):
            patch = xp[:, :, a * sh : a * sh + kh, bb * sw : bb * sw + kw]
            for oc in range(o):
                y[:, oc, a, bb] = np.sum(patch * w[oc], axis=(1, 2, 3)) + b[oc]
    return y


def pool_reference(x: np.ndarray, kernel: object, stride: object, op: str) -> np.ndarray:
    (kh, kw), (sh, sw) = _pair(kernel), _pair(stride)
    n, c, h, wd = x.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for a in range(oh):
        for bb in range(ow):
            patch = x[:, :, a * sh : a * sh + kh, bb * sw : bb * sw + kw]
            y[:, :, a, bb] = patch.max(axis=(2, 3)) if op == "max" else patch.mean(axis=(2, 3))
    return y


def _conv(
    backend: ailib.backends.Backend, case: str, dtype: str = "float64", c: int = 2, o: int = 3
) -> Conv2D:
    kernel, stride, padding = CONV_CASES[case]
    return Conv2D(c, o, kernel, stride, padding, backend=backend, dtype=dtype, seed=3)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_loop_reference(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = _conv(backend, case)
    w, b = rng.standard_normal(host(layer.params["W"]).shape), rng.standard_normal(3)
    layer.params["W"], layer.params["b"] = backend.asarray(w), backend.asarray(b)
    x = rng.standard_normal((2, 2, 7, 6))
    _, stride, padding = CONV_CASES[case]
    assert_close(
        layer.forward(backend.asarray(x)), conv_reference(x, w, b, stride, padding), "float64"
    )


@pytest.mark.parametrize("case", ["k3-s1-p1", "k2x3-s2-p1x0", "k3-s2x1-p0"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_gradcheck_float64(
    case: str, bias: bool, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    kernel, stride, padding = CONV_CASES[case]
    layer = Conv2D(
        2, 3, kernel, stride, padding, bias=bias, backend=backend, dtype="float64", seed=1
    )
    layer_gradcheck(layer, rng.standard_normal((2, 2, 5, 4)))
    assert set(layer.params) == ({"W", "b"} if bias else {"W"})


@pytest.mark.parametrize("case", ["k3-s1-p1", "k2x3-s2-p1x0"])
def test_conv_float32_agrees_with_numpy(
    case: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((4, 3, 9, 8)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = _conv(be, case, "float32", c=3, o=5)
        y = layer.forward(be.asarray(x))
        g = np.random.default_rng(7).standard_normal(tuple(y.shape)).astype(np.float32)
        dx = layer.backward(be.asarray(g))
        for a in (y, dx, layer.grads["W"], layer.grads["b"]):
            assert a.dtype == be.xp.float32
        results.append([host(a) for a in (y, dx, layer.grads["W"], layer.grads["b"])])
    for ref, got in zip(*results):
        assert_close(got, ref, "float32", scale=10)  # sums of ~100 products


def test_conv_matches_torch_conv2d(rng: np.random.Generator) -> None:
    """An extra, independent check of forward and all gradients against torch's own conv2d."""
    torch = pytest.importorskip("torch")
    be = ailib.backends.get("numpy")
    layer = Conv2D(3, 4, (3, 2), (2, 1), (1, 1), backend=be, dtype="float64", seed=0)
    x = rng.standard_normal((2, 3, 8, 7))
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(host(layer.params["W"]), requires_grad=True)
    tb = torch.tensor(host(layer.params["b"]) + 0.5, requires_grad=True)
    layer.params["b"] = be.asarray(tb.detach().numpy())
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=(2, 1), padding=(1, 1))
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    assert_close(layer.forward(be.asarray(x)), ty.detach().numpy(), "float64")
    assert_close(layer.backward(be.asarray(g)), tx.grad.numpy(), "float64")
    assert_close(layer.grads["W"], tw.grad.numpy(), "float64")
    assert_close(layer.grads["b"], tb.grad.numpy(), "float64")


def test_conv_errors_name_the_layer_and_the_shapes(backend: ailib.backends.Backend) -> None:
    layer = Conv2D(3, 8, 3, backend=backend)
    with pytest.raises(
        ValueError,
        match=r"Conv2D: expected input of shape \(N, 3, H, W\).*"
        r"\(2, 1, 8, 8\)",
    ):
        layer.forward(backend.asarray(np.zeros((2, 1, 8, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"Conv2D: expected input.*\(2, 3, 8\)"):
        layer.forward(backend.asarray(np.zeros((2, 3, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match="Conv2D.*smaller than the kernel"):
        layer.forward(backend.asarray(np.zeros((2, 3, 2, 8), dtype=np.float32)))
    with pytest.raises(RuntimeError, match="Conv2D.backward called before forward"):
        layer.backward(backend.asarray(np.zeros((2, 8, 6, 6), dtype=np.float32)))
    y = layer.forward(backend.asarray(np.zeros((2, 3, 8, 8), dtype=np.float32)))
    assert tuple(y.shape) == (2, 8, 6, 6)
    with pytest.raises(
        ValueError, match=r"Conv2D.backward: expected dE/dY of shape \(2, 8, 6, 6\)"
    ):
        layer.backward(backend.asarray(np.zeros((2, 8, 5, 6), dtype=np.float32)))


@pytest.mark.parametrize(
    "bad",
    [
        {"kernel_size": 0},
        {"kernel_size": (2, 2, 2)},
        {"stride": 0},
        {"padding": -1},
        {"in_channels": 0},
    ],
)
def test_conv_rejects_bad_arguments(bad: dict) -> None:
    kwargs = {"in_channels": 1, "out_channels": 2, "kernel_size": 3, **bad}
    with pytest.raises(ValueError, match="Conv2D"):
        Conv2D(**kwargs)


def test_conv_config_rebuilds_the_layer() -> None:
    layer = Conv2D(2, 4, (3, 1), stride=2, padding=(1, 0), bias=False)
    again = Conv2D(**layer.get_config())
    assert again.get_config() == layer.get_config()
    assert tuple(again.params["W"].shape) == (4, 2, 3, 1) and "b" not in again.params
    assert not hasattr(layer, "in_features")  # images, not rows: Sequential must not check rows


# -- pooling -------------------------------------------------------------------------------------
POOL_CASES = {"k2": (2, None), "k3-s2": (3, 2), "k2x3-s1": ((2, 3), 1), "k2-s3": (2, 3)}
POOLS = {"max": MaxPool2D, "avg": AvgPool2D}


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("op", POOLS)
def test_pool_forward_matches_loop_reference(
    op: str, case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    kernel, stride = POOL_CASES[case]
    x = rng.standard_normal((2, 3, 7, 8))
    layer = POOLS[op](kernel, stride, backend=backend, dtype="float64")
    expected = pool_reference(x, kernel, kernel if stride is None else stride, op)
    assert_close(layer.forward(backend.asarray(x)), expected, "float64")


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("op", POOLS)
def test_pool_gradcheck_float64(
    op: str, case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    kernel, stride = POOL_CASES[case]
    # distinct values well apart, so every window's maximum is unique under the FD step
    x = rng.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) * 0.01
    layer_gradcheck(POOLS[op](kernel, stride, backend=backend, dtype="float64"), x)


def test_maxpool_ties_send_the_gradient_to_the_first_maximum(
    backend: ailib.backends.Backend,
) -> None:
    x = np.array([[[[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 5.0, 5.0]]]])
    layer = MaxPool2D(2, backend=backend, dtype="float64")
    assert_close(layer.forward(backend.asarray(x)), [[[[3.0, 5.0]]]], "float64")
    dx = layer.backward(backend.asarray(np.array([[[[10.0, 20.0]]]])))
    # window 1: 3 at (0,1) and (1,0): first in row-major order is (0,1); window 2: (1,2) first
    assert_close(dx, [[[[0.0, 10.0, 0.0, 0.0], [0.0, 0.0, 20.0, 0.0]]]], "float64")


#: kernels whose windows tile a (3, 2, 6, 6) input: MaxPool2D(k) takes its tiled path there
TILED_KERNELS = {"k2": 2, "k2x3": (2, 3), "k1x2": (1, 2), "k3": 3, "k6x1": (6, 1)}


@pytest.mark.parametrize("kernel", TILED_KERNELS)
def test_maxpool_tiled_path_equals_the_general_path_value_by_value(
    kernel: str, backend: ailib.backends.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows that tile X (stride = kernel, no padding, kernel divides H and W) are pooled
    through views of X reshaped; Y and dE/dX equal the general path's (strided pieces and fold)
    bit for bit in float64: ties (small integers: first maximum in row-major order), windows of
    −∞, +∞, a NaN (Y NaN, no gradient), −0 from negative dE/dY and NaN from an infinite one."""
    data = np.random.default_rng(5)
    x = data.integers(-2, 3, (3, 2, 6, 6)).astype(np.float64)
    x[0, 0, :3, :3] = -np.inf
    x[0, 1, 0, 1], x[1, 0, 4, 4], x[2, 1, 2, :] = np.nan, np.inf, 0.0
    x[2, 1, 3, :] = -0.0
    layers = [MaxPool2D(TILED_KERNELS[kernel], backend=backend, dtype="float64") for _ in "ab"]
    assert layers[0].tiled(x.shape)
    monkeypatch.setattr(layers[1], "tiled", lambda shape: False)  # the general path
    results = []
    for layer in layers:
        y = layer.forward(backend.asarray(x))
        g = np.random.default_rng(6).standard_normal(tuple(y.shape))
        g.flat[:3] = (-1.0, np.inf, -np.inf)
        with np.errstate(invalid="ignore"):  # inf · 0 on NumPy
            dx = layer.backward(backend.asarray(g))
        results.append((host(y), host(dx)))
    (y_tiled, dx_tiled), (y_general, dx_general) = results
    np.testing.assert_array_equal(y_tiled, y_general)
    np.testing.assert_array_equal(dx_tiled, dx_general)
    signed = ~np.isnan(dx_general)  # −0 where dE/dY < 0 is not taken
    np.testing.assert_array_equal(np.signbit(dx_tiled[signed]), np.signbit(dx_general[signed]))
    assert np.isnan(y_tiled).any() and np.isnan(dx_tiled).any() and np.signbit(dx_tiled).any()


def test_maxpool_takes_the_tiled_path_only_where_the_windows_tile_x() -> None:
    shape = (1, 1, 6, 8)
    assert MaxPool2D(2).tiled(shape) and MaxPool2D((3, 4)).tiled(shape)
    assert AvgPool2D(2).tiled(shape)  # the same geometry (AvgPool2D pools the general way)
    assert not MaxPool2D(4).tiled(shape)  # 4 does not divide 6
    assert not MaxPool2D(2, 1).tiled(shape)  # overlapping windows
    assert not MaxPool2D(2, 2, 1).tiled(shape)  # padding
    assert not MaxPool2D(4, ceil_mode=True).tiled(shape)  # a last window past X


@pytest.mark.parametrize("op", POOLS)
def test_pool_float32_agrees_with_numpy(
    op: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((4, 3, 9, 10)).astype(np.float32)
    g = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = POOLS[op](3, 2, backend=be)
        y = layer.forward(be.asarray(x))
        dx = layer.backward(be.asarray(g))
        assert y.dtype == be.xp.float32 and dx.dtype == be.xp.float32
        results.append((host(y), host(dx)))
    for ref, got in zip(*results):
        assert_close(got, ref, "float32")


@pytest.mark.parametrize("op", POOLS)
def test_pool_errors_name_the_layer_and_the_shapes(
    op: str, backend: ailib.backends.Backend
) -> None:
    layer = POOLS[op](2, backend=backend)
    name = layer.name
    with pytest.raises(ValueError, match=rf"{name}: expected a 4-d input.*\(5, 8\)"):
        layer.forward(backend.asarray(np.zeros((5, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match=rf"{name}: the input's spatial size \(1, 8\)"):
        layer.forward(backend.asarray(np.zeros((1, 2, 1, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match=f"{name}: kernel_size"):
        POOLS[op](0)
    expected = {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0], "ceil_mode": False}
    if op == "avg":
        expected["count_include_pad"] = True
    assert POOLS[op](**layer.get_config()).get_config() == expected


def test_conv_backward_params_gives_the_same_gradients_without_dx(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = _conv(backend, "k3-s1-p1")
    x, g = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 3, 5, 4))
    layer.forward(backend.asarray(x))
    layer.backward(backend.asarray(g))
    full = {k: host(v) for k, v in layer.grads.items()}
    layer.grads = {}
    assert layer.backward_params(backend.asarray(g)) is None
    for name, value in full.items():
        assert_close(layer.grads[name], value, "float64")
