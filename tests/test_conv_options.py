"""Conv2D's dilation, groups and padding="same"/"valid", pooling with padding and ceil_mode (and
GlobalAvgPool2D against PyTorch): NumPy references, finite differences, PyTorch on random
configurations, every backend."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ailib
from ailib.layers import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from ailib.layers._windows import fold, output_size, pad_edges, windows

from .helpers import assert_close, host, layer_gradcheck


# -- global average pooling (the rest of its tests: tests/test_global_pool.py) -------------------
def test_global_avg_pool_matches_torch(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    x, g = rng.standard_normal((3, 4, 5, 2)), rng.standard_normal((3, 4))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, 1).reshape(3, 4)
    ty.backward(torch.tensor(g))
    be = ailib.backends.get("numpy")
    layer = GlobalAvgPool2D(backend=be, dtype="float64")
    assert_close(layer.forward(be.asarray(x)), ty.detach().numpy(), "float64")
    assert_close(layer.backward(be.asarray(g)), tx.grad.numpy(), "float64")


# -- Conv2D: dilation and groups -----------------------------------------------------------------
def same_edges(kernel: tuple, dilation: tuple) -> tuple[int, int, int, int]:
    """PyTorch's padding="same": d·(k − 1) zeros per axis, ⌊half⌋ before, the rest after."""
    (th, tw) = (d * (k - 1) for k, d in zip(kernel, dilation))
    return th // 2, th - th // 2, tw // 2, tw - tw // 2


def conv_reference(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    stride: tuple,
    padding: tuple | str,
    dilation: tuple,
) -> np.ndarray:
    """Direct grouped, dilated convolution: one dot product per output position, with loops.
    ``padding``: a (rows, cols) pair, or "same" / "valid" as PyTorch reads them."""
    (sh, sw), (dh, dw) = stride, dilation
    n, c, h, wd = x.shape
    o, per_group, kh, kw = w.shape
    if padding == "same":
        top, bottom, left, right = same_edges((kh, kw), dilation)
    else:
        ph, pw = (0, 0) if padding == "valid" else padding
        top, bottom, left, right = ph, ph, pw, pw
    groups = c // per_group
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top : top + h, left : left + wd] = x
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        j = oc // (o // groups)  # the group of this output channel
        block = xp[:, j * per_group : (j + 1) * per_group]
        for a in range(oh):
            for bb in range(ow):
                patch = block[
                    :,
                    :,
                    a * sh : a * sh + dh * (kh - 1) + 1 : dh,
                    bb * sw : bb * sw + dw * (kw - 1) + 1 : dw,
                ]
                y[:, oc, a, bb] = np.sum(patch * w[oc], axis=(1, 2, 3)) + b[oc]
    return y


#: (C_in, C_out, kernel, stride, padding, dilation, groups)
CONV_CASES = {
    "dilation2": (2, 3, 3, 1, 2, 2, 1),
    "dilation2x1-s2": (2, 2, (2, 3), 2, (1, 0), (2, 1), 1),
    "groups2": (4, 6, 3, 1, 1, 1, 2),
    "depthwise": (3, 3, 3, 2, 1, 1, 3),
    "depthwise-x2-dilated": (2, 4, (3, 2), (1, 2), 1, (1, 2), 2),
    # odd totals d·(k − 1) = 3 and 1: the extra row at the bottom, the extra column on the right
    "same-k4x2-dilation1x1": (2, 3, (4, 2), 1, "same", 1, 1),
    "same-k2x3-dilation3x2-groups2": (2, 4, (2, 3), 1, "same", (3, 2), 2),
    "valid-s2": (2, 2, 3, 2, "valid", 1, 1),
}


def _conv(case: str, backend: ailib.backends.Backend, dtype: str = "float64") -> Conv2D:
    c, o, k, s, p, d, g = CONV_CASES[case]
    return Conv2D(c, o, k, s, p, d, g, backend=backend, dtype=dtype, seed=5)


def _pair(v: int | tuple[int, int] | str) -> tuple[int, int] | str:
    return (v, v) if isinstance(v, int) else v


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_dilation_groups_forward_matches_loop_reference(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    c, o, k, s, p, d, g = CONV_CASES[case]
    layer = _conv(case, backend)
    assert tuple(layer.params["W"].shape) == (o, c // g, *_pair(k))
    layer.params["b"] = backend.asarray(rng.standard_normal(o))
    x = rng.standard_normal((2, c, 7, 6))
    expected = conv_reference(
        x, host(layer.params["W"]), host(layer.params["b"]), _pair(s), _pair(p), _pair(d)
    )
    assert_close(layer.forward(backend.asarray(x)), expected, "float64")


@pytest.mark.parametrize(
    "case",
    [
        "dilation2x1-s2",
        "groups2",
        "depthwise-x2-dilated",
        "same-k4x2-dilation1x1",
        "same-k2x3-dilation3x2-groups2",
    ],
)
def test_conv_dilation_groups_gradcheck_float64(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = _conv(case, backend)
    layer_gradcheck(layer, rng.standard_normal((1, CONV_CASES[case][0], 5, 5)))


def _assert_conv_equals_torch(
    torch: Any, rng: np.random.Generator, layer: Conv2D, x: np.ndarray
) -> tuple[Any, tuple[Any, ...]]:
    """``layer`` (float64, NumPy; given a random bias) against torch.nn.functional.conv2d with
    the layer's settings: forward, dE/dX for a random dE/dY, dE/dW and dE/dB. Returns the
    layer's Y and torch's (X, W, b, Y), detached."""
    be = layer.backend
    bias = rng.standard_normal(layer.out_channels)
    layer.params["b"] = be.asarray(bias)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(host(layer.params["W"]), requires_grad=True)
    tb = torch.tensor(bias, requires_grad=True)
    ty = torch.nn.functional.conv2d(
        tx,
        tw,
        tb,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
    )
    grad = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(grad))
    y = layer.forward(be.asarray(x))
    assert_close(y, ty.detach().numpy(), "float64")
    assert_close(layer.backward(be.asarray(grad)), tx.grad.numpy(), "float64")
    assert_close(layer.grads["W"], tw.grad.numpy(), "float64")
    assert_close(layer.grads["b"], tb.grad.numpy(), "float64")
    return y, (tx.detach(), tw.detach(), tb.detach(), ty.detach())


@pytest.mark.parametrize("config", range(10))
def test_conv_matches_torch_conv2d_on_random_configurations(config: int) -> None:
    """Forward, dE/dX, dE/dW and dE/dB against torch.nn.functional.conv2d in float64 for random
    kernels, strides, padding, dilation and groups (depthwise included)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(400 + config)
    g = int(rng.choice([1, 2, 3]))
    c = g * int(rng.integers(1, 3))
    o = c if config % 3 == 0 else g * int(rng.integers(1, 3))  # every third: depthwise-like
    if config % 3 == 0:
        g = c
    k = tuple(int(v) for v in rng.integers(1, 4, size=2))
    s = tuple(int(v) for v in rng.integers(1, 3, size=2))
    p = tuple(int(v) for v in rng.integers(0, 3, size=2))
    d = tuple(int(v) for v in rng.integers(1, 3, size=2))
    size = tuple(d[i] * (k[i] - 1) + 1 + int(rng.integers(0, 5)) for i in range(2))
    x = rng.standard_normal((int(rng.integers(1, 4)), c, *size))
    be = ailib.backends.get("numpy")
    layer = Conv2D(c, o, k, s, p, d, g, backend=be, dtype="float64", seed=config)
    _assert_conv_equals_torch(torch, rng, layer, x)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("config", range(12))
def test_conv_padding_same_and_valid_match_torch_on_random_configurations(config: int) -> None:
    """padding="same" (odd and even totals d·(k − 1): asymmetric and symmetric) and "valid":
    forward, dE/dX, dE/dW and dE/dB against torch.nn.functional.conv2d in float64, and the
    output of torch.nn.Conv2d given the same string."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(900 + config)
    g = int(rng.choice([1, 2]))
    c, o = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 6, size=2))
    d = tuple(int(v) for v in rng.integers(1, 4, size=2))
    padding = "valid" if config % 4 == 3 else "same"
    s = (1, 1) if padding == "same" else tuple(int(v) for v in rng.integers(1, 3, size=2))
    size = tuple(d[i] * (k[i] - 1) + 1 + int(rng.integers(0, 5)) for i in range(2))
    x = rng.standard_normal((int(rng.integers(1, 3)), c, *size))
    be = ailib.backends.get("numpy")
    layer = Conv2D(c, o, k, s, padding, d, g, backend=be, dtype="float64", seed=config)
    y, (tx, tw, tb, ty) = _assert_conv_equals_torch(torch, rng, layer, x)
    module = torch.nn.Conv2d(c, o, k, s, padding, d, g, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(tw)
        module.bias.copy_(tb)
        np.testing.assert_allclose(module(tx).numpy(), ty.numpy(), rtol=1e-12)
    if padding == "same":
        assert tuple(y.shape[2:]) == size
    assert layer.output_shape(*size) == tuple(ty.shape[2:])


def test_conv_random_padding_configurations_include_odd_and_even_totals() -> None:
    """The comparison above is only as good as its draws: both splits of "same" occur."""
    totals = set()
    for config in range(12):
        rng = np.random.default_rng(900 + config)
        rng.choice([1, 2]), rng.integers(1, 3), rng.integers(1, 3)
        k, d = rng.integers(1, 6, size=2), rng.integers(1, 4, size=2)
        if config % 4 != 3:
            totals |= {int(v) % 2 for v in d * (k - 1)}
    assert totals == {0, 1}


def test_conv_padding_strings_config_and_errors() -> None:
    layer = Conv2D(out_channels=2, kernel_size=(4, 3), padding="same", dilation=(1, 2))
    assert layer.padding == "same" and layer.get_config()["padding"] == "same"
    assert layer.compute_output_shape((3, 7, 6)) == (2, 7, 6)
    again = Conv2D(**layer.get_config())
    assert again.get_config() == layer.get_config()
    valid = Conv2D(1, 2, 3, stride=2, padding="valid")
    assert valid.get_config()["padding"] == "valid"
    assert valid.compute_output_shape((1, 7, 8)) == (2, 3, 3)
    assert Conv2D(1, 2, 3, padding=(1, 0)).get_config()["padding"] == [1, 0]  # unchanged
    with pytest.raises(ValueError, match=r"Conv2D: padding='same' needs stride 1.*\(2, 1\)"):
        Conv2D(1, 2, 3, stride=(2, 1), padding="same")
    for bad in ("foo", "SAME", 1.5, (1, "same"), None):
        with pytest.raises(
            ValueError,
            match=r"Conv2D: padding must be 'same', 'valid', an int >= 0 or a pair of them, "
            rf"received {re.escape(repr(bad))}",
        ):
            Conv2D(1, 2, 3, padding=bad)
    with pytest.raises(ValueError, match=r"\(1, 1\) plus padding 'valid' is smaller"):
        Conv2D(1, 2, 3, padding="valid").compute_output_shape((1, 1, 1))


def test_conv_padding_same_round_trips_through_a_model_file(tmp_path: Path) -> None:
    model = ailib.Sequential(
        [Conv2D(2, 3, (2, 3), padding="same", dilation=(3, 1)), Conv2D(3, 1, 2, padding="valid")],
        backend="numpy",
        seed=3,
    )
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 5)).astype(np.float32)
    loaded = ailib.load(model.save(tmp_path / "m.npz"), backend="array_api_strict")
    assert [layer.get_config()["padding"] for layer in loaded.layers] == ["same", "valid"]
    assert [layer.get_config() for layer in loaded.layers] == [
        layer.get_config() for layer in model.layers
    ]
    assert tuple(loaded.predict(x).shape) == (2, 1, 5, 4)
    assert_close(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("case", ["groups2", "depthwise-x2-dilated", "same-k4x2-dilation1x1"])
def test_conv_groups_float32_agrees_with_numpy(
    case: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    c = CONV_CASES[case][0]
    x = rng.standard_normal((3, c, 9, 8)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = _conv(case, be, "float32")
        y = layer.forward(be.asarray(x))
        g = np.random.default_rng(7).standard_normal(tuple(y.shape)).astype(np.float32)
        dx = layer.backward(be.asarray(g))
        arrays = (y, dx, layer.grads["W"], layer.grads["b"])
        assert all(a.dtype == be.xp.float32 for a in arrays)
        results.append([host(a) for a in arrays])
    for ref, got in zip(*results):
        assert_close(got, ref, "float32", scale=10)


def test_conv_groups_take_the_input_channels_from_the_input() -> None:
    layer = Conv2D(out_channels=6, kernel_size=3, groups=3, dilation=2, padding=2)
    assert layer.compute_output_shape((3, 8, 8)) == (6, 8, 8)
    layer.build((3, 8, 8))
    assert tuple(layer.params["W"].shape) == (6, 1, 3, 3)
    again = Conv2D(**layer.get_config())
    assert again.get_config() == layer.get_config()
    assert layer.get_config()["dilation"] == [2, 2] and layer.get_config()["groups"] == 3


def test_conv_dilation_groups_errors_name_the_layer() -> None:
    with pytest.raises(ValueError, match="Conv2D: groups=2 must divide out_channels, received"):
        Conv2D(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="Conv2D: groups=2 must divide in_channels, received"):
        Conv2D(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="Conv2D: groups=2 must divide in_channels.*=5"):
        Conv2D(out_channels=4, kernel_size=3, groups=2).compute_output_shape((5, 8, 8))
    for bad in ({"groups": 0}, {"groups": 1.5}, {"dilation": 0}, {"dilation": (1, 2, 3)}):
        with pytest.raises(ValueError, match="Conv2D: (groups|dilation)"):
            Conv2D(2, 2, 3, **bad)
    layer = Conv2D(1, 1, 3, dilation=3)
    with pytest.raises(ValueError, match=r"smaller than the kernel \(3, 3\) dilated by \(3, 3\)"):
        layer.compute_output_shape((1, 6, 8))


@pytest.mark.parametrize("bad", [2.5, True, (True, 2), np.float64(2.0), np.bool_(True), "ab"])
@pytest.mark.parametrize("cls", [Conv2D, MaxPool2D, AvgPool2D])
def test_window_sizes_that_are_not_ints_are_refused_by_name(cls: type, bad: object) -> None:
    """A kernel size that is not an int or a pair of ints gets the layer's ValueError, not the
    TypeError of ``tuple(2.5)``, and a bool is not taken for 1."""
    args = (2, 2) if cls is Conv2D else ()
    with pytest.raises(ValueError, match=f"{cls.__name__}: kernel_size must be an int >= 1"):
        cls(*args, kernel_size=bad)


# -- pooling with padding and ceil_mode ----------------------------------------------------------
def pool_out(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape: with ceil_mode, ⌈…⌉, and no window starting in the
    right padding."""
    if not ceil_mode:
        return (size + 2 * pad - kernel) // stride + 1
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    return out - 1 if (out - 1) * stride >= size + pad else out


def pool_reference(
    x: np.ndarray,
    kernel: tuple,
    stride: tuple,
    padding: tuple,
    op: str,
    include_pad: bool,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Window by window, in X's coordinates as PyTorch's CPU kernel reads them: window (a, b)
    starts at (s·a − p); the average divides by its extent clipped to the padded X
    (count_include_pad) or to X."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    oh, ow = pool_out(h, kh, sh, ph, ceil_mode), pool_out(wd, kw, sw, pw, ceil_mode)
    y = np.zeros((n, c, oh, ow))
    for a in range(oh):
        for bb in range(ow):
            h0, w0 = a * sh - ph, bb * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, wd + pw)
            patch = x[:, :, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, wd)]
            if op == "max":  # the padding's −∞ never wins: every window holds an entry of X
                y[:, :, a, bb] = patch.max(axis=(2, 3))
            else:
                count = (h1 - h0) * (w1 - w0) if include_pad else patch.shape[2] * patch.shape[3]
                y[:, :, a, bb] = patch.sum(axis=(2, 3)) / count
    return y


#: (kernel, stride, padding)
PAD_CASES = {
    "k3-s1-p1": (3, 1, 1),
    "k2-s2-p1": (2, 2, 1),
    "k3x2-s2x1-p1x0": ((3, 2), (2, 1), (1, 0)),
    # on 5 x 6 with ceil_mode: a last column of windows that runs past the (padded) input
    "k3-s2-p0": (3, 2, 0),
    "k2x3-s3x2-p1": ((2, 3), (3, 2), 1),
}
#: layer factory, reference op, include_pad
PAD_POOLS = {
    "max": (lambda k, s, p, **kw: MaxPool2D(k, s, p, **kw), "max", True),
    "avg": (lambda k, s, p, **kw: AvgPool2D(k, s, p, **kw), "avg", True),
    "avg-exclude-pad": (
        lambda k, s, p, **kw: AvgPool2D(k, s, p, count_include_pad=False, **kw),
        "avg",
        False,
    ),
}


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("case", PAD_CASES)
@pytest.mark.parametrize("pool", PAD_POOLS)
def test_padded_pool_matches_loop_reference_and_gradcheck(
    pool: str,
    case: str,
    ceil_mode: bool,
    backend: ailib.backends.Backend,
    rng: np.random.Generator,
) -> None:
    make, op, include_pad = PAD_POOLS[pool]
    k, s, p = PAD_CASES[case]
    layer = make(k, s, p, ceil_mode=ceil_mode, backend=backend, dtype="float64")
    # distinct values well apart (negative too: the padding must never win a max)
    x = rng.permutation(2 * 5 * 6).reshape(1, 2, 5, 6) * 0.01 - 1.0
    expected = pool_reference(x, _pair(k), _pair(s), _pair(p), op, include_pad, ceil_mode)
    assert_close(layer.forward(backend.asarray(x)), expected, "float64")
    layer_gradcheck(layer, x)


def test_the_ceil_mode_cases_have_windows_past_the_padded_input() -> None:
    """The cases above test ceil_mode only where it adds a window that runs past the padded
    input (and where it drops one that would start in the right padding)."""
    overhang, dropped = set(), set()
    for case, (k, s, p) in PAD_CASES.items():
        for size, kk, ss, pp in zip((5, 6), _pair(k), _pair(s), _pair(p)):
            out = pool_out(size, kk, ss, pp, True)
            if (out - 1) * ss + kk > size + 2 * pp:
                overhang.add(case)
            if math.ceil((size + 2 * pp - kk) / ss) + 1 > out:
                dropped.add(case)
    assert {"k3-s2-p0", "k2x3-s3x2-p1"} <= overhang and "k2x3-s3x2-p1" in dropped


@pytest.mark.parametrize("config", range(8))
def test_padded_pools_match_torch_on_random_configurations(config: int) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(500 + config)
    k = tuple(int(v) for v in rng.integers(1, 5, size=2))
    s = tuple(int(v) for v in rng.integers(1, 4, size=2))
    p = tuple(int(rng.integers(0, k[i] // 2 + 1)) for i in range(2))
    size = tuple(k[i] + int(rng.integers(0, 6)) for i in range(2))
    x = rng.permutation(2 * 3 * size[0] * size[1]).reshape(2, 3, *size) * 0.1 - 3.0
    be = ailib.backends.get("numpy")
    torch_pools = {
        "max": lambda t: F.max_pool2d(t, k, s, p),
        "avg": lambda t: F.avg_pool2d(t, k, s, p),
        "avg-exclude-pad": lambda t: F.avg_pool2d(t, k, s, p, count_include_pad=False),
    }
    for name, (make, _, _) in PAD_POOLS.items():
        tx = torch.tensor(x, requires_grad=True)
        ty = torch_pools[name](tx)
        grad = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(grad))
        layer = make(k, s, p, backend=be, dtype="float64")
        assert_close(layer.forward(be.asarray(x)), ty.detach().numpy(), "float64")
        assert_close(layer.backward(be.asarray(grad)), tx.grad.numpy(), "float64")


def test_padded_max_pool_of_minus_infinity_sends_the_gradient_into_the_input(
    backend: ailib.backends.Backend,
) -> None:
    """Windows whose maximum is −∞ (a masked input) tie with the −∞ padding: the gradient goes
    to the window's first entry of X, as PyTorch's does, not into the cropped padding."""
    inf = np.inf
    x = np.array([[[[-inf, -inf, 2.0], [-inf, -inf, -inf]]]])
    layer = MaxPool2D(2, 1, 1, backend=backend, dtype="float64")
    y = layer.forward(backend.asarray(x))  # (1, 1, 3, 4): window (a, b) reads X[a-1:a+1, b-1:b+1]
    expected = [[-inf, -inf, 2.0, 2.0], [-inf, -inf, 2.0, 2.0], [-inf, -inf, -inf, -inf]]
    assert_close(y, np.array([[expected]]), "float64")
    dx = layer.backward(backend.asarray(np.arange(1.0, 13.0).reshape(1, 1, 3, 4)))
    # X[0, 0] is first in windows 1, 2, 5, 6; the 2.0 wins 3, 4, 7, 8; X[1, 0] is first in 9, 10
    assert_close(dx, np.array([[[[1 + 2 + 5 + 6, 0, 3 + 4 + 7 + 8], [9 + 10, 11, 12]]]]), "float64")


def test_max_pool_window_past_the_input_of_minus_infinity_sends_the_gradient_into_the_input(
    backend: ailib.backends.Backend,
) -> None:
    """ceil_mode without padding: windows that run past X whose maximum is −∞ tie with the −∞
    beyond X; the gradient goes to their first entry of X (as PyTorch's), not into the crop."""
    inf = np.inf
    x = np.array([[[[1.0, 2.0, -inf], [0.0, 3.0, -inf], [-inf, -inf, -inf]]]])
    layer = MaxPool2D(2, 2, ceil_mode=True, backend=backend, dtype="float64")
    y = layer.forward(backend.asarray(x))
    assert_close(y, np.array([[[[3.0, -inf], [-inf, -inf]]]]), "float64")
    dx = layer.backward(backend.asarray(np.array([[[[1.0, 2.0], [3.0, 4.0]]]])))
    assert_close(dx, np.array([[[[0, 0, 2], [0, 1, 0], [3, 0, 4]]]], dtype=float), "float64")


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("pool", PAD_POOLS)
def test_padded_pool_float32_agrees_with_numpy(
    pool: str, ceil_mode: bool, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    make = PAD_POOLS[pool][0]
    x = rng.standard_normal((3, 2, 7, 8)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = make(3, 2, 1, ceil_mode=ceil_mode, backend=be)  # ceil: 4 x 5, 4 x 4 floor
        y = layer.forward(be.asarray(x))
        g = np.random.default_rng(1).standard_normal(tuple(y.shape)).astype(np.float32)
        dx = layer.backward(be.asarray(g))
        assert y.dtype == be.xp.float32 and dx.dtype == be.xp.float32
        results.append((host(y), host(dx)))
    for ref, got in zip(*results):
        assert_close(got, ref, "float32")


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_pool_padding_shapes_config_and_errors(cls: type) -> None:
    layer = cls(3, 2, 1)
    assert layer.compute_output_shape((4, 7, 7)) == (4, 4, 4)
    assert cls(**layer.get_config()).get_config() == layer.get_config()
    assert layer.get_config()["padding"] == [1, 1]
    with pytest.raises(ValueError, match=f"{cls.__name__}: padding must be at most half"):
        cls(2, padding=2)
    with pytest.raises(ValueError, match=f"{cls.__name__}: padding"):
        cls(2, padding=-1)
    with pytest.raises(ValueError, match=r"\(1, 1\) plus padding \(1, 1\) is smaller"):
        cls(4, padding=1).compute_output_shape((1, 1, 1))
    if cls is AvgPool2D:
        assert cls(2).count_include_pad and not cls(2, count_include_pad=False).count_include_pad


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_pool_ceil_mode_shapes_config_and_errors(cls: type) -> None:
    assert cls(2).ceil_mode is False and cls(2).get_config()["ceil_mode"] is False
    layer = cls(3, 2, 1, ceil_mode=True)
    assert layer.compute_output_shape((4, 8, 7)) == (4, 5, 4)  # floor: (4, 4, 4)
    assert cls(3, 2, 1).compute_output_shape((4, 8, 7)) == (4, 4, 4)
    # ⌈(6 + 2 − 2) / 3⌉ + 1 = 3 windows, but the third would start in the right padding
    assert cls(2, 3, 1, ceil_mode=True).compute_output_shape((1, 6, 6)) == (1, 3, 3)
    assert cls(2, 3, 1, ceil_mode=True).compute_output_shape((1, 5, 5)) == (1, 2, 2)
    config = layer.get_config()
    assert config["ceil_mode"] is True and cls(**config).get_config() == config
    for bad in ("yes", 1, None, np.bool_(True)):
        with pytest.raises(
            ValueError,
            match=rf"{cls.__name__}: ceil_mode must be True or False, received {re.escape(repr(bad))}",
        ):
            cls(2, ceil_mode=bad)


@pytest.mark.parametrize("config", range(16))
def test_pools_with_ceil_mode_match_torch_on_random_configurations(config: int) -> None:
    """MaxPool2D and AvgPool2D (count_include_pad True and False) with ceil_mode=True against
    torch.nn.functional in float64, forward and dE/dX, on random kernels, strides, padding and
    odd and even sizes, most with a last window past the padded input."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    k, s, p, size = _ceil_configuration(config)
    rng = np.random.default_rng(700 + config)
    x = rng.permutation(2 * 3 * size[0] * size[1]).reshape(2, 3, *size) * 0.1 - 3.0
    be = ailib.backends.get("numpy")
    torch_pools = {
        "max": lambda t: F.max_pool2d(t, k, s, p, ceil_mode=True),
        "avg": lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=True),
        "avg-exclude-pad": lambda t: F.avg_pool2d(
            t, k, s, p, ceil_mode=True, count_include_pad=False
        ),
    }
    modules = {
        "max": torch.nn.MaxPool2d(k, s, p, ceil_mode=True),
        "avg": torch.nn.AvgPool2d(k, s, p, ceil_mode=True),
        "avg-exclude-pad": torch.nn.AvgPool2d(k, s, p, ceil_mode=True, count_include_pad=False),
    }
    for name, (make, op, include_pad) in PAD_POOLS.items():
        tx = torch.tensor(x, requires_grad=True)
        ty = torch_pools[name](tx)
        np.testing.assert_array_equal(modules[name](tx).detach().numpy(), ty.detach().numpy())
        grad = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(grad))
        expected = pool_reference(x, k, s, p, op, include_pad, ceil_mode=True)
        np.testing.assert_allclose(ty.detach().numpy(), expected, rtol=1e-12)  # the summary
        layer = make(k, s, p, ceil_mode=True, backend=be, dtype="float64")
        assert_close(layer.forward(be.asarray(x)), ty.detach().numpy(), "float64")
        assert_close(layer.backward(be.asarray(grad)), tx.grad.numpy(), "float64")


def _ceil_configuration(config: int) -> tuple[tuple, tuple, tuple, tuple]:
    rng = np.random.default_rng(600 + config)
    k = tuple(int(v) for v in rng.integers(1, 6, size=2))
    s = tuple(int(v) for v in rng.integers(2, 5, size=2))
    p = tuple(int(rng.integers(0, k[i] // 2 + 1)) for i in range(2))
    size = tuple(max(1, k[i] - 2 * p[i]) + int(rng.integers(0, 7)) for i in range(2))
    return k, s, p, size


def test_the_random_ceil_mode_configurations_reach_every_case() -> None:
    """The comparison above is only as good as its draws: windows past the padded input (with
    and without padding), a window dropped for starting in the right padding, odd and even
    sizes."""
    overhang, overhang_padded, dropped, parities = 0, 0, 0, set()
    for config in range(16):
        k, s, p, size = _ceil_configuration(config)
        for kk, ss, pp, n in zip(k, s, p, size):
            out = pool_out(n, kk, ss, pp, True)
            past = (out - 1) * ss + kk > n + 2 * pp
            overhang += past
            overhang_padded += past and pp > 0
            dropped += math.ceil((n + 2 * pp - kk) / ss) + 1 > out
            parities.add(n % 2)
    assert overhang >= 8 and overhang_padded >= 3 and dropped >= 1 and parities == {0, 1}


#: (kernel, stride, dilation, crop) of `fold` cases: overlapping, strided, dilated, non-covering
FOLD_CASES = [
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((3, 2), (1, 1), (2, 1), (2, 2, 0, 1)),
    ((2, 3), (2, 1), (1, 1), (1, 0, 1, 1)),
    ((3, 3), (2, 2), (1, 2), (1, 1, 2, 2)),
    ((2, 2), (2, 2), (1, 1), (0, 0, 0, 0)),
    ((2, 2), (3, 3), (1, 1), (1, 1, 0, 0)),
    ((1, 3), (1, 3), (1, 1), (0, 0, 1, 1)),
]


@pytest.mark.parametrize("case", range(len(FOLD_CASES)))
def test_fold_is_the_adjoint_of_windows_with_the_padding_cropped(
    case: int, backend: ailib.backends.Backend
) -> None:
    """<windows(X̃), P> = <X, fold(P)> for X̃ = X with ``crop`` rows and columns of zeros around
    it: `fold` places the pieces and cuts the padding in one (the conv and pool gradients)."""
    kernel, stride, dilation, crop = FOLD_CASES[case]
    top, bottom, left, right = crop
    data = np.random.default_rng(case)
    x = data.standard_normal((2, 3, 7, 8))
    size = (7 + top + bottom, 8 + left + right)
    out = tuple(output_size(n, k, s, 0, d) for n, k, s, d in zip(size, kernel, stride, dilation))
    pieces = [data.standard_normal((2, 3, *out)) for _ in range(kernel[0] * kernel[1])]
    xp, device = backend.xp, backend.device
    image = pad_edges(xp, device, backend.asarray(x), *crop)
    cut = windows(image, kernel, stride, out, dilation)
    lhs = sum(float(np.sum(host(a) * p)) for a, p in zip(cut, pieces))
    folded = fold(
        xp, device, [backend.asarray(p) for p in pieces], kernel, stride, size, dilation, crop
    )
    assert tuple(folded.shape) == x.shape
    assert lhs == pytest.approx(float(np.sum(x * host(folded))), rel=1e-12, abs=1e-12)
