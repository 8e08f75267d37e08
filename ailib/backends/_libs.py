"""One constructor per array library. Each imports its library only when called, and raises
`BackendUnavailable` with the reason and the fix when the library cannot run here."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ._base import Backend, Random, to_numpy

INSTALL_HINTS = {
    "cupy": "pip install 'ailib[cuda12]' (or 'ailib[cuda13]' for CUDA 13)",
    "torch": "pip install 'ailib[torch]'",
    "jax": "pip install 'ailib[jax]'",
    "array_api_strict": "pip install array-api-strict (part of 'ailib[test]')",
}


class BackendUnavailable(RuntimeError):
    """A known backend that cannot run on this machine; the message says why and how to fix it."""


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendUnavailable(f"{name} is not installed: {INSTALL_HINTS[name]} ({exc})") from exc


def _compat(library: str) -> Any:
    return importlib.import_module(f"array_api_compat.{library}")


def make_numpy(device: Any = None) -> Backend:
    if device not in (None, "cpu"):
        raise BackendUnavailable(f"numpy runs on the 'cpu' device only, not {device!r}")
    return Backend(
        "numpy",
        _compat("numpy"),
        "cpu",
        to_host=np.asarray,
        is_array=lambda x: isinstance(x, np.ndarray),
        library=np,
    )


class _CupyRandom(Random):
    def __init__(self, backend: Backend, seed: int | None) -> None:
        super().__init__(backend, seed)
        self.device_rng = backend.library.random.default_rng(seed)

    def bernoulli_mask(self, shape: tuple[int, ...], keep: float, dtype: Any = None) -> Any:
        dtype = self.backend.dtype(dtype)
        u = self.device_rng.random(size=shape, dtype=self.backend.library.float32)
        return self.backend.xp.astype(u < keep, dtype)


def make_cupy(device: Any = None) -> Backend:
    cupy = _import("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing driver libraries, ...
        raise BackendUnavailable(
            f"cupy is installed but no CUDA device was found ({type(exc).__name__}: {exc})"
        ) from exc
    if count == 0:
        raise BackendUnavailable("cupy is installed but no CUDA device was found")
    index = 0 if device is None else int(getattr(device, "id", device))
    dev = cupy.cuda.Device(index)
    dev.use()
    return Backend(
        "cupy",
        _compat("cupy"),
        dev,
        to_host=lambda x: x.get() if isinstance(x, cupy.ndarray) else np.asarray(x),
        is_array=lambda x: isinstance(x, cupy.ndarray),
        synchronize=lambda arrays: cupy.cuda.get_current_stream().synchronize(),
        random_cls=_CupyRandom,
        library=cupy,
    )


class _TorchRandom(Random):
    def __init__(self, backend: Backend, seed: int | None) -> None:
        super().__init__(backend, seed)
        torch = backend.library
        self.device_rng = torch.Generator(device=backend.device)
        if seed is None:
            self.device_rng.seed()
        else:
            self.device_rng.manual_seed(int(seed))

    def bernoulli_mask(self, shape: tuple[int, ...], keep: float, dtype: Any = None) -> Any:
        torch = self.backend.library
        u = torch.rand(shape, generator=self.device_rng, device=self.backend.device)
        return (u < keep).to(self.backend.dtype(dtype))


def make_torch(device: Any = None) -> Backend:
    torch = _import("torch")
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("torch is installed but no CUDA device was found")
    return Backend(
        "torch",
        _compat("torch"),
        dev,
        to_host=lambda x: x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x),
        is_array=torch.is_tensor,
        synchronize=(lambda arrays: torch.cuda.synchronize(dev))
        if dev.type == "cuda"
        else (lambda arrays: None),
        random_cls=_TorchRandom,
        library=torch,
    )


def make_jax(device: Any = None) -> Backend:
    jax = _import("jax")
    jax.config.update("jax_enable_x64", True)  # float64 for gradient checks; float32 stays default
    jnp = importlib.import_module("jax.numpy")
    if device is None or isinstance(device, str):
        try:  # "cpu", "gpu", "cuda" or "gpu:1" name a platform and an index
            platform, _, index = (device or "").partition(":")
            dev = (jax.devices(platform) if platform else jax.devices())[int(index or 0)]
        except (RuntimeError, IndexError) as exc:
            raise BackendUnavailable(f"jax has no device {device!r} here ({exc})") from exc
    else:
        dev = device
    return Backend(
        "jax",
        jnp,
        dev,
        to_host=lambda x: np.asarray(jax.device_get(x)),
        is_array=lambda x: isinstance(x, jax.Array),
        synchronize=lambda arrays: jax.block_until_ready(arrays),
        mutable=False,
        library=jax,
    )


def make_array_api_strict(device: Any = None) -> Backend:
    xs = _import("array_api_strict")
    try:
        dev = xs.Device("CPU_DEVICE") if device is None else xs.Device(str(device))
    except ValueError as exc:
        raise BackendUnavailable(f"array_api_strict has no device {device!r} ({exc})") from exc
    return Backend(
        "array_api_strict",
        xs,
        dev,
        to_host=to_numpy,
        is_array=lambda x: isinstance(x, xs._array_object.Array),
        library=xs,
    )


MAKERS = {
    "numpy": make_numpy,
    "cupy": make_cupy,
    "torch": make_torch,
    "jax": make_jax,
    "array_api_strict": make_array_api_strict,
}
