"""Ready-made architectures used by the `ailib` command, the examples and the benchmarks."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Reshape
from .layers.base import Layer


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


#: builders by name, as the command line's --model names them
MODELS: dict[str, Callable[..., list[Layer]]] = {"mlp": mlp, "cnn": cnn}
