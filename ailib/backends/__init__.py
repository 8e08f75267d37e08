"""Backend selection: the one place that knows which array library is underneath.

    >>> import ailib
    >>> be = ailib.backends.get("numpy")
    >>> be.xp, be.device, be.float_dtype

`get(name)` builds (and caches) a `Backend` for "numpy", "cupy", "torch", "jax" or
"array_api_strict"; `available()` lists those that really run here; `set_backend(name)` sets the
process-wide default that every ``backend=`` keyword overrides.
"""

from __future__ import annotations

from typing import Any

from ._base import Backend, Random, to_numpy
from ._host import extremes, host_numbers
from ._libs import MAKERS, BackendUnavailable

NAMES: tuple[str, ...] = tuple(MAKERS)
ALIASES = {
    "np": "numpy",
    "cp": "cupy",
    "pytorch": "torch",
    "strict": "array_api_strict",
    "array-api-strict": "array_api_strict",
}

_cache: dict[tuple[str, str], Backend] = {}
_default: Backend | None = None


def _parse(name: str) -> tuple[str, Any]:
    """'torch:cuda' -> ('torch', 'cuda'); 'numpy' -> ('numpy', None)."""
    base, _, device = name.partition(":")
    base = ALIASES.get(base.lower(), base.lower())
    if base not in MAKERS:
        raise ValueError(f"unknown backend {name!r}; valid names are: {', '.join(NAMES)}")
    return base, (device or None)


def get(name: str | Backend | None = None, device: Any = None) -> Backend:
    """The `Backend` called ``name`` ("numpy", "cupy", "torch", "jax", "array_api_strict"),
    optionally on ``device`` (also written "torch:cuda"). None gives the process-wide default.

    Raises:
        ValueError: the name is unknown (the message lists the valid names).
        BackendUnavailable: the backend is known but cannot run here (the message says why and
            how to fix it).
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        return get_default()
    base, parsed_device = _parse(name)
    device = device if device is not None else parsed_device
    key = (base, str(device))
    if key not in _cache:
        _cache[key] = MAKERS[base](device)
    return _cache[key]


def available() -> list[str]:
    """Names of the backends that can really run here (cupy: importable AND a CUDA device)."""
    names = []
    for name in NAMES:
        try:
            get(name)
        except BackendUnavailable:
            continue
        names.append(name)
    return names


def why_unavailable(name: str) -> str | None:
    """None if ``name`` runs here, else the reason it does not."""
    try:
        get(name)
    except BackendUnavailable as exc:
        return str(exc)
    return None


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
    "NAMES",
    "Backend",
    "BackendUnavailable",
    "Random",
    "available",
    "extremes",
    "get",
    "get_default",
    "host_numbers",
    "set_backend",
    "to_numpy",
    "why_unavailable",
]
