"""The `Layer` base class: a forward map X -> Y and its backward map dE/dY -> dE/dX.

Every layer implements one method, ``call(X) -> (Y, backprop)`` (the protocol of Thinc): the
forward math, and right under it a closure ``backprop(dE/dY, input_grad=True)`` that mirrors it
(docs/math.md, section 1). What backward needs (X, Y, im2col columns, masks) lives in that
closure, not on the layer, so one layer object can be called at several places of a model; each
call's backprop adds its dE/d(parameter) into ``layer.grads`` (`Layer.accumulate`), so a layer
used twice gets the sum of both uses (docs/math.md §12), and returns dE/dX for the layer before
(or None, without forming it, when ``input_grad=False``). Models zero the gradients at the start
of each backward pass. Layers compute gradients; optimizers update.

The seed's single-use API stays: `forward(X)` runs `call` and keeps its backprop, `backward(dE/dY)`
sets ``grads`` to that call's gradients and returns dE/dX.

Weights are made once, when their shapes are known (Keras' ``build``): from the constructor
(``Dense(784, 128)``) or from the input shape (``Dense(128)``, sized by what flows into it). A model
builds its layers on its own backend and dtype, from its seed, in the order it calls them; a layer
used alone builds itself on first use. See `Layer.build`.
"""

from __future__ import annotations

from typing import Any, Callable

from .. import backends, graph
from .._checks import floating_dtype, positive_int
from .._checks import seed as checked_seed
from ..backends import Backend, Random

#: ``backprop(dE/dY, input_grad=True) -> dE/dX`` (None when input_grad is False), the closure
#: that `Layer.call` returns with Y; merge layers return one dE/dX per input, as a list
Backprop = Callable[..., Any]


class Layer:
    """Base class of every layer.

    Attributes:
        params: trainable arrays by name (``layer.params["W"]``).
        grads: dE/d(param) by the same names, summed over the calls backpropagated since the
            last `zero_grad`.
        buffers: arrays that are state but not trained (e.g. running statistics); saved with the model.
        training: train mode (True) or eval mode (False); models switch it.
        backend: the `Backend` the arrays live on. dtype: their floating dtype.
        built: whether the weights exist (see `build`).
        seed: seed of the layer's own random draws when no model seed is given.
    """

    #: merge layers (Add, Concatenate, Multiply) take a list of inputs
    multi_input = False

    def __init__(
        self,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> None:
        seed = checked_seed(seed, type(self).__name__)
        self.backend = backends.get(backend)
        self.dtype = floating_dtype(self.backend, dtype, type(self).__name__)
        self.seed = seed
        self.built = False
        self._params: dict[str, Any] = {}
        self._buffers: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.training = True
        self.trainable = True
        self.latest: Backprop | None = None  # the backprop of the latest `forward`

    @property
    def params(self) -> dict[str, Any]:
        """Trainable arrays by name; a layer whose sizes are all known makes them on first use."""
        if not self.built and self.sized:
            self.build()
        return self._params

    @params.setter
    def params(self, value: dict[str, Any]) -> None:
        self._params = value

    @property
    def buffers(self) -> dict[str, Any]:
        """Untrained state by name (running statistics), made with the parameters."""
        if not self.built and self.sized:
            self.build()
        return self._buffers

    @buffers.setter
    def buffers(self, value: dict[str, Any]) -> None:
        self._buffers = value

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def name(self) -> str:
        return type(self).__name__

    def call(self, x: Any) -> tuple[Any, Backprop]:
        """(Y, backprop): Y = f(X), and the closure ``backprop(dE/dY, input_grad=True)`` that adds
        this call's dE/d(param) to ``grads`` and returns dE/dX (None when ``input_grad`` is False:
        what a model's first layer with parameters is asked, since nothing needs its dE/dX).
        Train or eval behaviour follows ``self.training`` at the time of the call."""
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        """Y = f(X) for single use: runs `call` (building the layer from X's shape first if
        needed) and keeps its backprop for `backward`."""
        if not self.built:
            self.build(None if self.sized else graph.sample_shape(x))
        y, self.latest = self.call(x)
        return y

    def backward(self, grad_out: Any) -> Any:
        """Given dE/dY of the latest `forward`, sets ``grads`` to that call's dE/d(param) and
        returns dE/dX."""
        backprop = self._latest()
        self.zero_grad()
        return backprop(grad_out)

    def backward_params(self, grad_out: Any) -> None:
        """Like `backward`, but fills ``grads`` only, without forming dE/dX."""
        backprop = self._latest()
        self.zero_grad()
        backprop(grad_out, input_grad=False)

    def _latest(self) -> Backprop:
        if self.latest is None:
            raise RuntimeError(f"{self.name}.backward called before forward")
        return self.latest

    def zero_grad(self) -> None:
        """Forget the gradients (models call this at the start of each backward pass; it also
        frees the previous step's dE/dW before the next one is formed)."""
        self.grads.clear()

    def accumulate(self, name: str, grad: Any) -> None:
        """grads[name] += grad: each call's backprop adds its share, so a layer used at several
        places of a model gets the sum over its uses (docs/math.md §12)."""
        total = self.grads.get(name)
        # NOTE: a new array, not +=: the first share may be an array others still hold (dE/dY)
        self.grads[name] = grad if total is None else total + grad

    def __call__(self, x: Any) -> Any:
        """On arrays, `forward`; on symbols (`ailib.Input` and what layers return from it), a new
        node of a graph and its output symbol (`ailib.graph.connect`)."""
        if graph.is_symbolic(x):
            return graph.connect(self, x)
        return self.forward(x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.name}({args})"

    # -- configuration, devices, initialisation ----------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable) that rebuild this layer's architecture."""
        return {}

    # -- shapes and building -----------------------------------------------------------------
    def compute_output_shape(self, input_shape: Any) -> tuple[int, ...]:
        """One sample's output shape for one sample's input shape (no batch axis; merge layers
        take a list of shapes). Raises ValueError, naming the layer, for an input it cannot
        take. Default: the shape is kept (elementwise layers)."""
        return tuple(input_shape)

    def infer_sizes(self, input_shape: Any) -> None:
        """Fix the sizes the constructor left open (``Dense(128)``'s input size) from one
        sample's input shape; sizes already fixed are checked by `compute_output_shape`."""

    @property
    def sized(self) -> bool:
        """Whether every weight's shape is known (always, for layers without weights)."""
        return True

    def reset_parameters(self, rng: Random) -> None:
        """Draw fresh initial parameters from ``rng`` (no-op for layers without parameters)."""

    def build(self, input_shape: Any = None, rng: Random | None = None) -> Layer:
        """Make the weights, once, on the layer's backend and dtype: take the open sizes from
        ``input_shape`` (one sample's shape; may be None when the constructor gave every size),
        then draw from ``rng`` (default: ``backend.random(self.seed)``). Calling it on a built
        layer only checks ``input_shape``.

        Raises:
            ValueError: the input shape does not fit the layer, or a size is still unknown.
        """
        if input_shape is not None:
            self.infer_sizes(input_shape)
            self.compute_output_shape(input_shape)
        if self.built:
            return self
        if not self.sized:
            raise ValueError(
                f"{self.name}: its input size is not known, so its weights cannot be made yet; "
                f"give it to the constructor, call the layer on data, or use it in a model "
                f"that starts with ailib.Input(shape)"
            )
        self.built = True  # first: reset_parameters may store through the `params` property
        try:
            self.reset_parameters(rng if rng is not None else self.backend.random(self.seed))
        except BaseException:
            self.built = False
            raise
        return self

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
        of the shapes `array_shapes` gives) as its weights: nothing is drawn, since a layer
        makes its weights only when built, and it counts as built (unless its config leaves a
        size open: it then holds nothing and is built by its first input)."""
        layer = cls(**config, backend=backend, dtype=dtype)
        be = layer.backend
        layer.params = {k: be.asarray(v, dtype=layer.dtype) for k, v in params.items()}
        layer.buffers = {k: be.asarray(v, dtype=layer.dtype) for k, v in buffers.items()}
        layer.built = layer.sized
        return layer

    def to(self, backend: str | Backend | None = None, dtype: Any = None) -> Layer:
        """Put the layer on ``backend`` with floating dtype ``dtype``, in place. A layer without
        weights yet just records them (its weights will be made there); one with weights has
        them copied over (through the host) and cast."""
        new = backends.get(backend) if backend is not None else self.backend
        new_dtype = (
            new.dtype(dtype)
            if dtype is not None
            else new.dtype(self.backend.dtype_name(self.dtype))
        )
        for store in (self._params, self._buffers):
            for key, value in store.items():
                host = self.backend.to_host(value)
                cast = new_dtype if host.dtype.kind == "f" else None
                store[key] = new.asarray(host, dtype=cast)
        self.grads, self.latest = {}, None
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
                f"received {where}; move it with ailib.backends.get({be.spec!r}).asarray(x)"
            )
        expected = self.dtype if isinstance(dtype, str) else dtype
        if expected is None and not be.is_floating(x.dtype):
            raise TypeError(
                f"{self.name}: expected a floating array, received {be.dtype_name(x.dtype)}; cast "
                f"with xp.astype(x, xp.{be.dtype_name(self.dtype)})"
            )
        if expected is not None and x.dtype != expected:
            if be.dtype_name(x.dtype) == be.dtype_name(expected):  # one of another library
                raise TypeError(
                    f"{self.name}: the input's dtype {x.dtype!r} and the one expected, "
                    f"{expected!r} (the layer's weights'), are {be.dtype_name(expected)} of two "
                    f"libraries: an array not of backend {be.name!r} was set into the layer's "
                    f"params or buffers; set arrays of the backend, e.g. "
                    f"ailib.backends.get({be.spec!r}).asarray(a)"
                )
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


def size_or_none(value: Any, what: str, who: str) -> int | None:
    """``value`` as a positive int, or None (a size to be taken from the input shape); raises
    ValueError naming the layer otherwise."""
    return None if value is None else positive_int(value, what, who)


def config_size(config: dict[str, Any], key: str, who: str) -> int:
    """``config[key]`` when it is a positive int (not a bool), else a ValueError naming it."""
    return positive_int(config.get(key), key, who)


def config_flag(config: dict[str, Any], key: str, default: bool, who: str) -> bool:
    """``config[key]`` (``default`` when absent) when it is a bool, else a ValueError naming it."""
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{who}: {key} must be true or false, received {value!r}")
    return value
