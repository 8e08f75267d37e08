"""ailib: a small neural-network library written once against the Python array API standard.

The same layers run on NumPy, CuPy, PyTorch, JAX or array-api-strict arrays:

    >>> import ailib
    >>> from ailib.layers import Dense, Tanh
    >>> model = ailib.Sequential([Dense(2, 3), Tanh(), Dense(3, 1), Tanh()], backend="numpy", seed=0)

Importing ailib imports no GPU or framework library; a backend's library is imported when that
backend is first asked for.
"""

from . import (
    backends,
    callbacks,
    datasets,
    distributed,
    layers,
    losses,
    optimizers,
    schedules,
    training,
)
from .backends import BackendUnavailable, get_default, set_backend
from .io import ModelFileError, load
from .model import Sequential
from .training import TrainingDiverged

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "ModelFileError",
    "Sequential",
    "TrainingDiverged",
    "backends",
    "callbacks",
    "datasets",
    "distributed",
    "get_default",
    "layers",
    "load",
    "losses",
    "optimizers",
    "schedules",
    "set_backend",
    "training",
]
