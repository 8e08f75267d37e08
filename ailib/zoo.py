"""Ready-made architectures used by the `ailib` command, the examples and the benchmarks.

`mlp` and `cnn` return lists of layers (for `ailib.Sequential`); `resnet` returns the input and
output symbols of a graph (for `ailib.Model`). `build(name, backend=, seed=)` makes either.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .graph import Input, Symbol
from .layers import (
    Add,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Reshape,
)
from .layers.base import Layer
from .model import Model, Sequential


def mlp(
    in_features: int = 784, hidden: Sequence[int] = (256, 128), classes: int = 10, **kwargs: Any
) -> list[Layer]:
    """Dense → ReLU → … → Dense(classes): logits for `SoftmaxCrossEntropy`. He-initialised."""
    layers: list[Layer] = []
    sizes = [in_features, *hidden]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [Dense(fan_in, fan_out, init="he_normal", **kwargs), ReLU(**kwargs)]
    layers.append(Dense(sizes[-1], classes, init="glorot_uniform", **kwargs))
    return layers


def cnn(
    in_channels: int = 1,
    classes: int = 10,
    size: int = 28,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.25,
    **kwargs: Any,
) -> list[Layer]:
    """A LeNet-style network: logits for `SoftmaxCrossEntropy`. He-initialised.

    Reshape((in_channels, size, size)) → [Conv2D(3×3, padding 1) → MaxPool2D(2) → ReLU] per entry
    of ``channels`` → Flatten → Dense(hidden) → ReLU → Dropout(dropout) → Dense(classes).
    (Pooling before ReLU computes the same function as after, since ReLU is monotone and so
    commutes with max, and applies ReLU to a 4x smaller array.)

    Input: images (N, in_channels, size, size) in NCHW layout, or the same pixels as flat rows
    (N, in_channels·size·size) — e.g. (N, 784) MNIST rows — which the first layer reshapes.
    ``size`` must be divisible by 2 ** len(channels).
    """
    if size % 2 ** len(channels):
        raise ValueError(
            f"cnn: size {size} must be divisible by 2**{len(channels)} (one halving per max-pool)"
        )
    layers: list[Layer] = [Reshape((in_channels, size, size), **kwargs)]
    for fan_in, fan_out in zip([in_channels, *channels[:-1]], channels):
        layers += [
            Conv2D(fan_in, fan_out, 3, padding=1, **kwargs),
            MaxPool2D(2, **kwargs),
            ReLU(**kwargs),
        ]
    side = size // 2 ** len(channels)
    layers += [
        Flatten(**kwargs),
        Dense(channels[-1] * side * side, hidden, init="he_normal", **kwargs),
        ReLU(**kwargs),
    ]
    if dropout:
        layers.append(Dropout(dropout, **kwargs))
    layers.append(Dense(hidden, classes, init="glorot_uniform", **kwargs))
    return layers


def resnet(
    in_channels: int = 1,
    classes: int = 10,
    size: int = 28,
    channels: Sequence[int] = (16, 32, 64),
    blocks: int = 1,
) -> tuple[Symbol, Symbol]:
    """A small residual network (He et al., 2016) for size x size images: (input, output)
    symbols for `ailib.Model`; the output is logits for `SoftmaxCrossEntropy`.

    Input: flat rows (N, in_channels·size·size), e.g. (N, 784) MNIST rows, reshaped to NCHW.
    Stem: Conv2D(3×3) → BatchNorm2D → ReLU with ``channels[0]`` channels. Then one stage per entry
    of ``channels``, each of ``blocks`` residual blocks (the first of every stage after the first
    halves the image with stride 2):

        Y = ReLU(BN(Conv(ReLU(BN(Conv(X))))) + S(X))

    where the shortcut S is the identity, or a 1×1 Conv2D (stride 2) → BatchNorm2D where the
    block changes the shape. Then GlobalAvgPool2D → Dense(classes). Convolutions before a
    BatchNorm have no bias (BN's β is one). He-initialised.

    28×28 with the defaults: 28 → 14 → 7 pixels, 78k parameters.
    """
    if blocks < 1 or not channels:
        raise ValueError(
            f"resnet: need blocks >= 1 and some channels, received {blocks}, {channels}"
        )
    x = Input((in_channels * size * size,), name="pixels")
    h = Reshape((in_channels, size, size))(x)
    h = ReLU()(BatchNorm2D()(Conv2D(in_channels, channels[0], 3, padding=1, bias=False)(h)))
    width = channels[0]
    for stage, out in enumerate(channels):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            h = _residual_block(h, width, out, stride)
            width = out
    return x, Dense(width, classes, init="glorot_uniform")(GlobalAvgPool2D()(h))


def _residual_block(x: Symbol, fan_in: int, out: int, stride: int) -> Symbol:
    h = ReLU()(BatchNorm2D()(Conv2D(fan_in, out, 3, stride, padding=1, bias=False)(x)))
    h = BatchNorm2D()(Conv2D(out, out, 3, padding=1, bias=False)(h))
    shortcut = x
    if stride != 1 or fan_in != out:  # the shapes differ: project x to Y's shape
        shortcut = BatchNorm2D()(Conv2D(fan_in, out, 1, stride, bias=False)(x))
    return ReLU()(Add()([h, shortcut]))


#: builders by name, as the command line's --model names them
MODELS: dict[str, Callable[..., Any]] = {"mlp": mlp, "cnn": cnn, "resnet": resnet}


def build(
    name: str,
    *,
    backend: Any = None,
    dtype: Any = "float32",
    seed: int | None = None,
    **kwargs: Any,
) -> Model:
    """The model ``MODELS[name](**kwargs)`` describes, on ``backend`` with weights from ``seed``:
    a `Sequential` for a list of layers, a `Model` for (input, output) symbols."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    made = MODELS[name](**kwargs)
    if isinstance(made, tuple):
        return Model(*made, backend=backend, dtype=dtype, seed=seed)
    return Sequential(made, backend=backend, dtype=dtype, seed=seed)
