"""Layers: `Dense` (the seed's section 2) and activation layers (section 3), on any backend."""

from .activations import Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .dense import Dense

#: every layer class by name: what a saved model's config may name (see ailib.io)
LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Dense, Identity, Tanh, Sigmoid, ReLU, LeakyReLU, Softmax)
}

__all__ = [
    "LAYERS",
    "Activation",
    "Dense",
    "Identity",
    "Layer",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
