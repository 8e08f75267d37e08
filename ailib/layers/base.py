"""The `Layer` base class: a forward map X -> Y and its backward map dE/dY -> dE/dX.

Every layer follows the seed document's contract (docs/math.md, section 1): `forward(X)` keeps
what it needs from X, `backward(dE/dY)` fills ``grads`` with dE/d(parameter) for each entry of
``params`` and returns dE/dX for the layer before. Layers compute gradients; optimizers update.
"""

from __future__ import annotations

from typing import Any

from .. import backends
from ..backends import Backend


class Layer:
    """Base class of every layer.

    Attributes:
        params: trainable arrays by name (``layer.params["W"]``).
        grads: dE/d(param) by the same names, filled by `backward`.
        buffers: arrays that are state but not trained (e.g. running statistics); saved with the model.
        training: train mode (True) or eval mode (False); `Sequential` switches it.
        backend: the `Backend` the arrays live on. dtype: their floating dtype.
    """

    def __init__(self, *, backend: str | Backend | None = None, dtype: Any = None) -> None:
        self.backend = backends.get(backend)
        self.dtype = self.backend.dtype(dtype)
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.training = True
        self.trainable = True

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def name(self) -> str:
        return type(self).__name__

    def forward(self, x: Any) -> Any:
        """Y = f(X); keeps what `backward` needs."""
        raise NotImplementedError

    def backward(self, grad_out: Any) -> Any:
        """Given dE/dY, fills ``self.grads`` and returns dE/dX."""
        raise NotImplementedError

    def backward_params(self, grad_out: Any) -> None:
        """Given dE/dY, fills ``self.grads`` only. `Sequential.train_step` calls this on its first
        layer with parameters, whose dE/dX nothing needs; this default calls `backward` and drops
        dE/dX, layers for which dE/dX is real work (Dense: a third of the backward matmuls)
        override it."""
        self.backward(grad_out)

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.name}({args})"

    # -- configuration, devices, initialisation ----------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable) that rebuild this layer's architecture."""
        return {}

    def reset_parameters(self, rng: backends.Random) -> None:
        """Draw fresh initial parameters from ``rng`` (no-op for layers without parameters)."""

    @classmethod
    def array_shapes(cls, config: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
        """The shapes of the params and buffers a layer built from ``config`` (what `get_config`
        returns, with lists for tuples) holds, found without allocating anything:
        ``{"params": {"W": (out, in), ...}, "buffers": {...}}``; all are floating arrays of the
        layer's dtype. `ailib.io` checks a file's arrays against them before reading any. Raises
        ValueError when a size in ``config`` is missing or not a positive int. Layers with
        params or buffers override this."""
        return {"params": {}, "buffers": {}}

    @classmethod
    def from_arrays(
        cls,
        config: dict[str, Any],
        params: dict[str, Any],
        buffers: dict[str, Any],
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> Layer:
        """The layer ``cls(**config)`` holding ``params`` and ``buffers`` (host or device arrays
        of the shapes `array_shapes` gives), built without drawing initial values first."""
        layer = cls.__new__(cls)
        # NOTE: constructors draw initial parameters through reset_parameters; shadowing it on
        # the instance skips that allocation, whose values would be overwritten right away.
        layer.reset_parameters = lambda rng: None  # type: ignore[method-assign]
        try:
            layer.__init__(**config, backend=backend, dtype=dtype)  # type: ignore[misc]
        finally:
            del layer.reset_parameters
        be = layer.backend
        for store, arrays in ((layer.params, params), (layer.buffers, buffers)):
            store.clear()
            for name, value in arrays.items():
                store[name] = be.asarray(value, dtype=layer.dtype)
        return layer

    def to(self, backend: str | Backend | None = None, dtype: Any = None) -> Layer:
        """Move parameters and buffers to ``backend`` and cast floating ones to ``dtype``, in place."""
        new = backends.get(backend) if backend is not None else self.backend
        new_dtype = (
            new.dtype(dtype)
            if dtype is not None
            else new.dtype(self.backend.dtype_name(self.dtype))
        )
        for store in (self.params, self.buffers):
            for key, value in store.items():
                host = self.backend.to_host(value)
                cast = new_dtype if host.dtype.kind == "f" else None
                store[key] = new.asarray(host, dtype=cast)
        self.grads = {}
        self.backend, self.dtype = new, new_dtype
        return self

    def train(self, mode: bool = True) -> Layer:
        self.training = mode
        return self

    def eval(self) -> Layer:
        return self.train(False)

    # -- input checks (errors name the layer, the expectation and what was received) ----------
    def check_input(
        self,
        x: Any,
        *,
        ndim: int | None = None,
        features: int | None = None,
        axis: int = -1,
        dtype: Any = "layer",
    ) -> None:
        """Raise a clear error unless ``x`` is an array of this layer's backend and device, of
        ``dtype`` (default: the layer's; None: any real floating dtype), with the expected rank and
        size along ``axis``."""
        be = self.backend
        if not be.owns(x):
            where = f"{type(x).__module__}.{type(x).__name__}"
            if be._is_array(x):
                where += f" on device {be.device_of(x)!r}"
            raise TypeError(
                f"{self.name}: expected an array of backend {be.name!r} on device {be.device!r}, "
                f"received {where}; move it with ailib.backends.get({be.name!r}).asarray(x)"
            )
        expected = self.dtype if isinstance(dtype, str) else dtype
        if expected is None and not be.is_floating(x.dtype):
            raise TypeError(
                f"{self.name}: expected a floating array, received {be.dtype_name(x.dtype)}; cast "
                f"with xp.astype(x, xp.{be.dtype_name(self.dtype)})"
            )
        if expected is not None and x.dtype != expected:
            raise TypeError(
                f"{self.name}: expected dtype {be.dtype_name(expected)}, received "
                f"{be.dtype_name(x.dtype)}; cast with xp.astype(x, xp.{be.dtype_name(expected)})"
            )
        if ndim is not None and x.ndim != ndim:
            raise ValueError(
                f"{self.name}: expected a {ndim}-d input, received shape {tuple(x.shape)} "
                f"({x.ndim}-d)"
            )
        if features is not None and x.shape[axis] != features:
            raise ValueError(
                f"{self.name}: expected {features} features along axis {axis}, received shape "
                f"{tuple(x.shape)}"
            )

    def check_grad(self, grad_out: Any, expected_shape: tuple[int, ...]) -> None:
        if tuple(grad_out.shape) != tuple(expected_shape):
            raise ValueError(
                f"{self.name}.backward: expected dE/dY of shape {tuple(expected_shape)}, received "
                f"{tuple(grad_out.shape)}"
            )

    def require_forward(self, cached: Any) -> None:
        if cached is None:
            raise RuntimeError(f"{self.name}.backward called before forward")


def config_size(config: dict[str, Any], key: str, who: str) -> int:
    """``config[key]`` when it is a positive int (not a bool), else a ValueError naming it."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {key} must be a positive int, received {value!r}")
    return value


def config_flag(config: dict[str, Any], key: str, default: bool, who: str) -> bool:
    """``config[key]`` (``default`` when absent) when it is a bool, else a ValueError naming it."""
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{who}: {key} must be true or false, received {value!r}")
    return value
