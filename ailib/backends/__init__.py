"""Backend selection: the one place that knows which array library is underneath.

    >>> import ailib
    >>> be = ailib.backends.get("numpy")
    >>> be.xp, be.device, be.float_dtype

`get(name)` builds (and caches) a `Backend` for "numpy", "cupy", "torch", "jax" or
"array_api_strict", or picks one with "auto" (`auto_choice`: CuPy when a GPU is usable, else
NumPy, the rule of ``ailib train --backend auto``); `available()` lists those that really run here; `set_backend(name)` sets the
process-wide default that every ``backend=`` keyword overrides; `namespace(x)` is the namespace
to compute with for an array that arrived without its backend.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager

from ._base import API_VERSION, Backend, BackendUnavailable, Random, device_of, to_numpy
from ._counting import OpCounter, counting
from ._fused import (
    LAUNCHES,
    affine,
    clip,
    matmul,
    relu_backward,
    softmax_cross_entropy,
    subtract_scaled,
)
from ._host import all_finite, extremes, host_numbers, quickly_finite
from ._libs import MAKERS
from ._replay import ReplayStep, TraceError

NAMES: tuple[str, ...] = tuple(MAKERS)
ALIASES = {
    "np": "numpy",
    "cp": "cupy",
    "pytorch": "torch",
    "strict": "array_api_strict",
    "array-api-strict": "array_api_strict",
}

#: backends by (name, repr of the device as written) and by (name, repr of the normalised
#: device), so that every spelling of one device gives the same object
_cache: dict[tuple[str, str], Backend] = {}
_default: Backend | None = None
_log = logging.getLogger(__name__)

#: what "auto" tries, in order; the first that runs here is taken. numpy always runs.
AUTO_ORDER: tuple[str, ...] = ("cupy", "numpy")


@dataclass(frozen=True)
class AutoChoice:
    """What ``backend="auto"`` took and why: ``name`` is the backend chosen, ``passed_over``
    maps each backend tried before it to the reason it cannot run here."""

    name: str
    passed_over: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        """``numpy (auto: cupy unavailable: cupy is not installed: pip install ...)``"""
        if not self.passed_over:
            return f"{self.name} (auto: the first of {', '.join(AUTO_ORDER)} that runs here)"
        why = "; ".join(
            f"{name} unavailable: {reason}" for name, reason in self.passed_over.items()
        )
        return f"{self.name} (auto: {why})"


def auto_choice() -> AutoChoice:
    """The backend ``"auto"`` stands for here: the first of `AUTO_ORDER` that runs (CuPy when a
    CUDA GPU is usable, else NumPy), with the reason each one before it was passed over. Torch
    and JAX are never chosen automatically: ask for them by name."""
    passed_over: dict[str, str] = {}
    for name in AUTO_ORDER:
        reason = why_unavailable(name)
        if reason is None:
            return AutoChoice(name, passed_over)
        passed_over[name] = reason.splitlines()[0]
    raise BackendUnavailable(f"auto: no backend runs here ({passed_over})")


def _parse(name: str) -> tuple[str, Any]:
    """'torch:cuda' -> ('torch', 'cuda'); 'numpy' -> ('numpy', None)."""
    base, _, device = name.partition(":")
    base = ALIASES.get(base.lower(), base.lower())
    if base not in MAKERS:
        raise ValueError(f"unknown backend {name!r}; valid names are: {', '.join(NAMES)}, or auto")
    return base, (device or None)


def get(name: str | Backend | None = None, device: Any = None) -> Backend:
    """The `Backend` called ``name`` ("numpy", "cupy", "torch", "jax", "array_api_strict"),
    optionally on ``device`` (also written "torch:cuda"). None gives the process-wide default;
    "auto" the one `auto_choice` picks (logged at INFO level on the "ailib.backends" logger,
    with the reasons the others were passed over).

    The device is normalised to the one the library reports for its arrays (torch "cuda" ->
    cuda:0, "cpu:0" -> cpu; cupy 1, "1", "cuda:1" -> Device(1); jax "cpu", "cpu:0" -> the JAX
    Device), and every spelling of one device returns the same `Backend` object.

    Raises:
        ValueError: the name is unknown (the message lists the valid names).
        BackendUnavailable: the backend is known but cannot run here, or has no such device (the
            message says why, what exists and how to fix it).
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        return get_default()
    if isinstance(name, str) and name.lower() == "auto":
        choice = auto_choice()
        _log.info("backend: %s", choice)
        return get(choice.name, device)
    base, parsed_device = _parse(name)
    device = device if device is not None else parsed_device
    key = (base, repr(device))
    if key not in _cache:
        backend = MAKERS[base](device)
        _cache[key] = _cache.setdefault((base, repr(backend.device)), backend)
    return _cache[key]


def available() -> list[str]:
    """Names of the backends that can really run here, in `NAMES` order (cupy: a CuPy that
    imports, sees a CUDA device and has run an elementwise kernel and a matrix product there).
    Never raises: a backend whose construction fails in any way is left out."""
    return [name for name in NAMES if why_unavailable(name) is None]


def why_unavailable(name: str) -> str | None:
    """None if ``name`` runs here, else the reason it does not. Never raises for a known name:
    an unexpected error while building the backend is reported as the reason."""
    try:
        get(name)
    except BackendUnavailable as exc:
        return str(exc)
    except Exception as exc:
        if name.split(":")[0].lower() not in MAKERS and name.split(":")[0].lower() not in ALIASES:
            raise
        return f"building the {name} backend failed ({type(exc).__name__}: {exc})"
    return None


def device_context(x: Any) -> ContextManager[Any]:
    """``with device_context(x):`` runs the enclosed operations on ``x``'s device: for a CuPy
    array, the context of its backend (CuPy launches kernels on the current device); for any
    other array, nothing."""
    if type(x).__module__.split(".")[0] == "cupy":
        return get("cupy", x.device.id).context()
    return nullcontext()


def namespace(x: Any) -> Any:
    """The array-API namespace to compute with for the array ``x``: array-api-compat's, except
    for a CuPy array, for which it is the namespace of the CuPy backend of ``x``'s device (which
    allocates on that device, not on the current one)."""
    kind = type(x)
    found = _NAMESPACES.get(kind)
    if found is not None:
        return found
    library = kind.__module__.split(".")[0]
    if library == "cupy":
        return get("cupy", x.device.id).xp
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    if library in _SAME_NAMESPACE:
        _NAMESPACES[kind] = xp
    return xp


#: `namespace`'s answers by array type, for the libraries whose every array of one type has
#: one namespace (not CuPy's, which is per device, nor the counting backend's proxies, which
#: is per counter): array-api-compat's lookup costs several microseconds, and a training step
#: asks about ten times
_NAMESPACES: dict[type, Any] = {}
_SAME_NAMESPACE = frozenset({"numpy", "torch", "jax", "jaxlib", "array_api_strict"})


def set_backend(name: str | Backend, device: Any = None) -> Backend:
    """Make ``name`` the process-wide default backend; ``backend=`` keywords still override it."""
    global _default
    _default = get(name, device)
    return _default


def get_default() -> Backend:
    """The process-wide default backend (numpy until `set_backend` is called)."""
    global _default
    if _default is None:
        _default = get("numpy")
    return _default


__all__ = [
    "API_VERSION",
    "AUTO_ORDER",
    "LAUNCHES",
    "NAMES",
    "AutoChoice",
    "Backend",
    "BackendUnavailable",
    "OpCounter",
    "Random",
    "ReplayStep",
    "TraceError",
    "affine",
    "matmul",
    "all_finite",
    "auto_choice",
    "available",
    "clip",
    "counting",
    "device_context",
    "device_of",
    "extremes",
    "get",
    "get_default",
    "host_numbers",
    "namespace",
    "quickly_finite",
    "relu_backward",
    "set_backend",
    "softmax_cross_entropy",
    "subtract_scaled",
    "to_numpy",
    "why_unavailable",
]
