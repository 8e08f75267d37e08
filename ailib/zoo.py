"""Ready-made architectures used by the `ailib` command, the examples and the benchmarks."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .layers import Dense, ReLU
from .layers.base import Layer


def mlp(in_features: int = 784, hidden: Sequence[int] = (256, 128), classes: int = 10,
        **kwargs: Any) -> list[Layer]:
    """Dense → ReLU → … → Dense(classes): logits for `SoftmaxCrossEntropy`. He-initialised."""
    layers: list[Layer] = []
    sizes = [in_features, *hidden]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [Dense(fan_in, fan_out, init="he_normal", **kwargs), ReLU(**kwargs)]
    layers.append(Dense(sizes[-1], classes, init="glorot_uniform", **kwargs))
    return layers


#: builders by name, as the command line's --model names them
MODELS: dict[str, Callable[..., list[Layer]]] = {"mlp": mlp}
