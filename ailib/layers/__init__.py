"""Layers: `Dense` (the seed's section 2), activation layers (section 3), convolution, pooling,
reshaping, dropout, batch and layer normalization (docs/math.md §7-§10), the merge layers of graph
models (§12) and embeddings (§13), on any backend."""

from .activations import (
    GELU,
    Activation,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .merge import Add, Concatenate, Multiply
from .normalization import BatchNorm1D, BatchNorm2D, LayerNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .reshape import Flatten, Reshape

#: every layer class by name: what a saved model's config may name (see ailib.io)
LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Dense,
        Identity,
        Tanh,
        Sigmoid,
        ReLU,
        LeakyReLU,
        Softmax,
        Conv2D,
        MaxPool2D,
        AvgPool2D,
        GlobalAvgPool2D,
        Flatten,
        Reshape,
        Dropout,
        BatchNorm1D,
        BatchNorm2D,
        Add,
        Concatenate,
        Multiply,
        GELU,
        SiLU,
        LayerNorm,
        Embedding,
    )
}

__all__ = [
    "LAYERS",
    "Activation",
    "Add",
    "AvgPool2D",
    "BatchNorm1D",
    "BatchNorm2D",
    "Concatenate",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GELU",
    "GlobalAvgPool2D",
    "Identity",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "MaxPool2D",
    "Multiply",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "SiLU",
    "Softmax",
    "Tanh",
]
