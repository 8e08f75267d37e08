"""Embedding: integer indices -> rows of a trained table (docs/math.md §13)."""

from __future__ import annotations

import math
from typing import Any

from .. import backends
from .._checks import positive_int
from ..backends import Backend, Random
from . import init as initializers
from .base import Backprop, Layer, config_size

#: the most one-hot entries (rows × vocabulary) formed at once by the backward pass
ONE_HOT_BUDGET = 1 << 22


class Embedding(Layer):
    """Y[n, …, :] = W[X[n, …], :]: every index picks one row of the table W.

    Shapes: X (N, …) of indices in [0, num_embeddings) -> Y (N, …, embedding_dim);
    W (num_embeddings, embedding_dim), ``params["W"]``. Indices come as an integer array, or as
    a floating one holding whole numbers (what a model gives when its input was cast to floats;
    exact below 2**24 in float32); anything else is refused, as are indices out of range.

    Backward: with the M = N·… indices flattened, Y's rows are O·W, O the (M, V) one-hot matrix
    of the indices (O[m, v] = 1 where X_m = v), so
        dE/dW = Oᵀ·dE/dY      (V, D): row v sums dE/dY over the positions where X = v.
    It is formed as that matrix product, in slices of at most ``ONE_HOT_BUDGET`` one-hot entries.
    Why not ``dW[X] += dE/dY``: the standard has no scatter-add, JAX arrays are immutable and
    CuPy's scatter with repeated indices keeps one of them (undefined), while repeated indices
    are the rule here. A sort-based segment sum (argsort, cumulative sums, searchsorted) would
    take O(M log M) instead of O(M·V·D), but a difference of running sums loses precision in
    float32; the product is exact up to summation order, one GEMM per slice (the fast path on a
    GPU), and bounded in memory. For vocabularies of many thousands on a CPU it is the slow part.

    Indices are not differentiable: backprop returns None for dE/dX, and a model backpropagates
    nothing further along that path (an input read by an Embedding gets no gradient).

    Args:
        num_embeddings: V, the number of rows (the vocabulary size).
        embedding_dim: D, the length of each row.
        init: initialiser of W by name; "normal" (N(0, 1), as PyTorch) by default.
        seed: seed of the initial weights when the model has no seed.
    """

    #: a model may pass its integer input to this layer as it is (see `ailib.Model`)
    takes_indices = True

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        init: str = "normal",
        seed: int | None = None,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype, seed=seed)
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings", self.name)
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim", self.name)
        self.init = init
        initializers.get(init)  # fail early on an unknown name

    def get_config(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "init": self.init,
        }

    @classmethod
    def array_shapes(cls, config: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
        v, d = (config_size(config, k, cls.__name__) for k in ("num_embeddings", "embedding_dim"))
        return {"params": {"W": (v, d)}, "buffers": {}}

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape, self.embedding_dim)

    def reset_parameters(self, rng: Random) -> None:
        v, d = self.num_embeddings, self.embedding_dim
        self.params["W"] = initializers.get(self.init)(rng, (v, d), v, d, self.dtype)

    def call(self, x: Any) -> tuple[Any, Backprop]:
        """Y = W[X] (rows gathered by `take`); backprop: dE/dW = Oᵀ·dE/dY, no dE/dX."""
        xp, w = self.xp, self.params["W"]
        indices = self._indices(x)
        lead, dim = tuple(x.shape), self.embedding_dim
        flat = xp.reshape(indices, (-1,))
        y = xp.reshape(xp.take(w, flat, axis=0), (*lead, dim))

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, (*lead, dim))
            grad = xp.reshape(grad_out, (-1, dim))
            self.accumulate(
                "W", sum_rows_by_index(xp, self.backend.device, flat, grad, self.num_embeddings)
            )
            return None  # indices have no gradient

        return y, backprop

    def _indices(self, x: Any) -> Any:
        """``x`` as an int32 or int64 index array, checked: whole numbers in [0, num_embeddings).
        Reads one or two numbers back to the host."""
        be, xp = self.backend, self.xp
        # the backend and the device here; the dtype, which is not the layer's, below
        self.check_input(x, dtype=getattr(x, "dtype", None))
        if x.ndim < 1:
            raise ValueError(
                f"{self.name}: expected indices of shape (N, ...), received a 0-d array"
            )
        integral = xp.isdtype(x.dtype, "integral")
        if not integral and not be.is_floating(x.dtype):
            raise TypeError(
                f"{self.name}: expected integer indices, received dtype {be.dtype_name(x.dtype)}"
            )
        if not integral and bool(xp.any(xp.floor(x) != x)):  # NaN fails this test too
            raise ValueError(
                f"{self.name}: expected integer indices, received floats that are not whole numbers"
            )
        if math.prod(x.shape):
            low, high = (float(v) for v in backends.extremes(be, x))  # inf is caught, not cast
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(
                    f"{self.name}: indices must lie in [0, {self.num_embeddings - 1}] for "
                    f"{self.num_embeddings} rows, received indices in [{low:g}, {high:g}]"
                )
        # NOTE: int32 or int64, which every library's take accepts; not int64 for all: JAX
        # without 64-bit mode has no int64
        return x if x.dtype in (xp.int32, xp.int64) else xp.astype(x, xp.int32)


def sum_rows_by_index(xp: Any, device: Any, indices: Any, rows: Any, count: int) -> Any:
    """S (count, D) with S[v] = Σ of rows[m] over the m where indices[m] = v, as Oᵀ·rows with O
    the one-hot matrix of ``indices`` (M,), formed ``ONE_HOT_BUDGET`` entries at a time."""
    vocabulary = xp.expand_dims(xp.arange(count, dtype=indices.dtype, device=device), axis=0)
    step = max(1, ONE_HOT_BUDGET // count)
    total = xp.zeros((count, rows.shape[1]), dtype=rows.dtype, device=device)
    size = indices.shape[0]
    for start in range(0, size, step):
        stop = min(start + step, size)  # a stop past the end is outside the standard
        one_hot = xp.expand_dims(indices[start:stop], axis=1) == vocabulary
        part = rows[start:stop, ...]
        total = total + xp.matmul(xp.matrix_transpose(xp.astype(one_hot, rows.dtype)), part)
    return total
