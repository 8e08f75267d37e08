"""The `Backend` object: everything ailib needs to know about the array library underneath.

A backend bundles
- ``xp``: the array-API namespace (through array-api-compat where the library needs it),
- ``device``: where arrays live,
- ``float_dtype``: the default floating dtype (float32 on every backend),
- what the standard lacks: moving arrays to and from the host, synchronising, random numbers.

Layers, losses, optimizers and models only ever talk to a `Backend`; this package is the
only place that imports numpy, cupy, torch or jax.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

DTYPE_NAMES = ("float32", "float64", "int32", "int64", "uint8", "bool")


class Random:
    """A seeded random source for one backend.

    Values are drawn with NumPy's PCG64 on the host and then moved to the backend's device, so the
    same seed gives the same numbers on every backend (this is what makes cross-backend runs
    comparable). Backends with a fast device generator (CuPy, PyTorch) override `bernoulli_mask`,
    the only draw made inside a training loop.
    """

    def __init__(self, backend: Backend, seed: int | None) -> None:
        self.backend = backend
        self.seed = seed
        self.host = np.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], low: float, high: float, dtype: Any = None) -> Any:
        """Samples of U(low, high) with the given shape, on the backend's device."""
        return self.backend.asarray(self.host.uniform(low, high, size=shape), dtype=dtype)

    def normal(self, shape: tuple[int, ...], mean: float, std: float, dtype: Any = None) -> Any:
        """Samples of N(mean, std**2) with the given shape, on the backend's device."""
        return self.backend.asarray(self.host.normal(mean, std, size=shape), dtype=dtype)

    def permutation(self, n: int) -> Any:
        """A random permutation of 0..n-1 as an int64 index array on the device."""
        return self.backend.asarray(self.host.permutation(n), dtype=self.backend.xp.int64)

    def bernoulli_mask(self, shape: tuple[int, ...], keep: float, dtype: Any = None) -> Any:
        """A {0, 1} array of the given dtype, each entry 1 with probability ``keep``."""
        return self.backend.asarray(self.host.random(size=shape) < keep, dtype=dtype)


class Backend:
    """One array library on one device, seen through the array API standard.

    Attributes:
        name: the backend's name ("numpy", "cupy", "torch", "jax", "array_api_strict").
        xp: the array-API namespace; layers call only this.
        device: the device arrays are created on.
        float_dtype: the default floating dtype, ``xp.float32``.
        mutable: whether arrays can be updated in place (False for JAX).
    """

    def __init__(
        self,
        name: str,
        xp: Any,
        device: Any,
        *,
        to_host: Callable[[Any], np.ndarray],
        is_array: Callable[[Any], bool],
        synchronize: Callable[[tuple[Any, ...]], None] = lambda arrays: None,
        mutable: bool = True,
        random_cls: type[Random] = Random,
        library: Any = None,
    ) -> None:
        self.name = name
        self.xp = xp
        self.device = device
        self.float_dtype = xp.float32
        self.mutable = mutable
        self.library = library
        self._to_host = to_host
        self._is_array = is_array
        self._synchronize = synchronize
        self._random_cls = random_cls

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r})"

    # -- dtypes ------------------------------------------------------------------------------
    def dtype(self, spec: Any = None) -> Any:
        """The namespace's dtype for ``spec``: None (the default float), a name or a dtype."""
        if spec is None:
            return self.float_dtype
        if isinstance(spec, str):
            if spec not in DTYPE_NAMES:
                raise ValueError(
                    f"unknown dtype {spec!r}; expected one of {', '.join(DTYPE_NAMES)}"
                )
            return getattr(self.xp, spec)
        if isinstance(spec, np.dtype) or (isinstance(spec, type) and issubclass(spec, np.generic)):
            return getattr(self.xp, np.dtype(spec).name)
        return spec

    def dtype_name(self, dtype: Any) -> str:
        """The standard name of a dtype of this namespace ("float32", ...)."""
        for name in DTYPE_NAMES:
            if dtype == getattr(self.xp, name, None):
                return name
        return str(dtype)

    def is_floating(self, dtype: Any) -> bool:
        return self.xp.isdtype(dtype, "real floating")

    # -- arrays ------------------------------------------------------------------------------
    def owns(self, x: Any) -> bool:
        """True when ``x`` is an array of this library on this backend's device."""
        return self._is_array(x) and self.device_of(x) == self.device

    def device_of(self, x: Any) -> Any:
        import array_api_compat

        return array_api_compat.device(x)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` (a host NumPy array, a Python scalar/list or an array of this backend) on this
        backend's device, cast to ``dtype`` (a name or a dtype) when given."""
        dtype = None if dtype is None else self.dtype(dtype)
        if self._is_array(x):
            if self.device_of(x) != self.device:
                x = self.move(x)
            if dtype is not None and x.dtype != dtype:
                x = self.xp.astype(x, dtype)
            return x
        if (
            not isinstance(x, np.ndarray)
            and not np.isscalar(x)
            and not isinstance(x, (list, tuple))
        ):
            # an array of another library: go through the host, never silently through __array__
            x = to_numpy(x)
        host = np.asarray(x)
        if dtype is None and host.dtype == np.float64 and not isinstance(x, np.ndarray):
            dtype = self.float_dtype  # Python floats become the default float, not float64
        host_dtype = None if dtype is None else np.dtype(self.dtype_name(dtype))
        host = np.ascontiguousarray(host, dtype=host_dtype)
        return self._from_host(host)

    def _from_host(self, host: np.ndarray) -> Any:
        return self.xp.asarray(host, device=self.device)

    def move(self, x: Any) -> Any:
        """An array of this library moved onto this backend's device."""
        return self._from_host(self.to_host(x))

    def to_host(self, x: Any) -> np.ndarray:
        """A NumPy copy (or view) of ``x`` on the host. The only way ailib reads device data."""
        return self._to_host(x)

    def to_float(self, x: Any) -> float:
        """A 0-d array as a Python float (this waits for the device: call it rarely)."""
        return float(self.to_host(x))

    def synchronize(self, *arrays: Any) -> None:
        """Wait until the device has finished the work queued so far (for timing). JAX, which has
        no global queue to wait on, waits for the given ``arrays`` instead."""
        self._synchronize(arrays)

    def random(self, seed: int | None = None) -> Random:
        """A seeded random source; the same seed gives the same draws on every backend."""
        return self._random_cls(self, seed)


def to_numpy(x: Any) -> np.ndarray:
    """Any supported array (NumPy, CuPy, PyTorch, JAX, array-api-strict) as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return x.get()
    if module == "torch":
        return x.detach().cpu().numpy()
    if module == "array_api_strict":
        import array_api_strict

        return np.from_dlpack(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(x)
