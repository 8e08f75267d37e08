"""ailib: a small neural-network library written once against the Python array API standard.

The same layers run on NumPy, CuPy, PyTorch, JAX or array-api-strict arrays:

    >>> import ailib
    >>> from ailib.layers import Dense, Tanh
    >>> model = ailib.Sequential([Dense(2, 3), Tanh(), Dense(3, 1), Tanh()], backend="numpy", seed=0)

and graphs of them, with residual connections, several inputs and outputs, shared layers:

    >>> from ailib.layers import Add
    >>> x = ailib.Input((2,))
    >>> h = Tanh()(Dense(2)(x))
    >>> model = ailib.Model(x, Dense(1)(Add()([x, h])), backend="numpy", seed=0)

Importing ailib imports no GPU or framework library; a backend's library is imported when that
backend is first asked for.
"""

from . import (
    backends,
    callbacks,
    datasets,
    distributed,
    graph,
    layers,
    losses,
    optimizers,
    schedules,
    training,
)
from .backends import BackendUnavailable, get_default, set_backend
from .graph import Input, Symbol
from .io import CheckpointMismatch, ModelFileError, load
from .model import Model, Sequential
from .training import TrainingDiverged

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "Input",
    "Model",
    "CheckpointMismatch",
    "ModelFileError",
    "Sequential",
    "Symbol",
    "TrainingDiverged",
    "backends",
    "callbacks",
    "datasets",
    "distributed",
    "get_default",
    "graph",
    "layers",
    "load",
    "losses",
    "optimizers",
    "schedules",
    "set_backend",
    "training",
]
