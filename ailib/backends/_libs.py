"""One constructor per array library. Each imports its library only when called, normalises the
device it is given to the one the library reports for its arrays, and raises
`BackendUnavailable` with the reason and the fix when the library or device cannot run here."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend, BackendUnavailable, to_numpy
from ._cupy import make_cupy
from ._imports import INSTALL_HINTS, compat, import_library
from ._replay import ReplayStep
from ._torch_replay import TorchReplayStep

__all__ = ["INSTALL_HINTS", "MAKERS", "BackendUnavailable"]


def make_numpy(device: Any = None) -> Backend:
    if device not in (None, "cpu", "cpu:0"):
        raise BackendUnavailable(f"numpy runs on the 'cpu' device only, not {device!r}")
    return Backend(
        "numpy",
        compat("numpy"),
        "cpu",
        to_host=np.asarray,
        is_array=lambda x: isinstance(x, np.ndarray),
        compiler=ReplayStep,
        take_rows=_numpy_take_rows,
        library=np,
        spec="numpy",
    )


def _numpy_take_rows(
    a: np.ndarray, index: np.ndarray, out: np.ndarray | None = None, *, in_range: bool = False
) -> Any:
    """Rows ``index`` of ``a``, into ``out`` if given. NumPy buffers ``out`` (writes a
    temporary, then copies) when indices are checked (``mode="raise"``), so with ``out`` the
    indices are checked first, once (not at all when the caller vouches for them,
    ``in_range``), and the rows taken with ``mode="clip"``, which then changes nothing."""
    if out is None:
        return np.take(a, index, axis=0)
    if in_range:
        return a.take(index, 0, out, "clip")  # the method: np.take's wrapper costs 1 us
    n = a.shape[0]
    if index.size and (int(index.min()) < -n or int(index.max()) >= n):
        raise IndexError(f"row index out of range for {n} rows")
    if index.size and int(index.min()) < 0:
        return np.take(a, index, axis=0, out=out)  # negative rows: NumPy's own handling
    return np.take(a, index, axis=0, out=out, mode="clip")


def _torch_devices(torch: Any) -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "devices here: " + ", ".join(["'cpu'"] + [f"'cuda:{i}'" for i in range(count)])


def _torch_device(torch: Any, device: Any) -> Any:
    """The device torch reports for tensors made on ``device`` ('cuda' -> cuda:0, 'cpu:0' ->
    cpu), so that `Backend.owns` is true for every tensor the backend makes."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise BackendUnavailable(
            f"torch has no device {device!r} ({exc}); {_torch_devices(torch)}"
        ) from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BackendUnavailable(
                f"torch is installed but no CUDA device was found (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda})"
            )
        if dev.index is not None and dev.index >= count:
            raise BackendUnavailable(f"torch has no device {device!r}; {_torch_devices(torch)}")
    try:
        return torch.empty(0, device=dev).device
    except Exception as exc:  # e.g. a device type this build of torch was not compiled for
        raise BackendUnavailable(
            f"torch cannot allocate on device {device!r} ({type(exc).__name__}: {exc}); "
            f"{_torch_devices(torch)}"
        ) from exc


def make_torch(device: Any = None) -> Backend:
    torch = import_library("torch")
    xp = compat("torch")
    dev = _torch_device(torch, device)
    return Backend(
        "torch",
        xp,
        dev,
        to_host=lambda x: x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x),
        is_array=torch.is_tensor,
        synchronize=(lambda arrays: torch.cuda.synchronize(dev))
        if dev.type == "cuda"
        else (lambda arrays: None),
        flat_updates=dev.type == "cuda",
        compiler=(lambda fn: TorchReplayStep(torch, fn)) if dev.type == "cpu" else None,
        library=torch,
        spec="torch" if dev.type == "cpu" else f"torch:{dev}",
    )


def _jax_device(jax: Any, device: Any) -> Any:
    """A JAX Device from None (the default), a Device, or a name: "cpu", "gpu", "cuda",
    optionally with an index ("cpu:0", "gpu:1"), as JAX prints its devices."""
    if isinstance(device, jax.Device):
        return device
    named = "" if device is None else str(device)
    platform, _, index = named.partition(":")
    try:
        found = jax.devices(platform) if platform else jax.devices()
        return found[int(index or 0)]
    except (RuntimeError, ValueError, IndexError) as exc:
        here = ", ".join(f"'{d.platform}:{d.id}'" for d in jax.devices())
        raise BackendUnavailable(
            f"jax has no device {device!r} ({type(exc).__name__}: {exc}); devices here: {here}"
        ) from exc


def _jax_context(jax: Any, dev: Any) -> Any:
    """The context a JAX backend runs its models in (`Backend.context`): on a GPU (or any
    device but the CPU) ``jax.default_matmul_precision("highest")``, because JAX multiplies
    float32 matrices there in TF32 by default (10 bits of mantissa: results 1e-3 apart from
    the CPU's and every other backend's); it holds for the block only, and jit-compiled steps
    traced inside it keep it. None on the CPU, where float32 products are full float32."""
    if getattr(dev, "platform", "cpu") == "cpu":
        return None
    return lambda: jax.default_matmul_precision("highest")


def _jax_spec(jax: Any, dev: Any) -> str:
    """`Backend.spec` of a JAX device: "jax" for JAX's default device, else
    "jax:<platform>:<index>", the index among that platform's devices (as `_jax_device`
    reads it)."""
    if dev == jax.devices()[0]:
        return "jax"
    return f"jax:{dev.platform}:{jax.devices(dev.platform).index(dev)}"


def _enable_x64(jax: Any) -> None:
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def _jit(jax: Any, fn: Any, static_argnums: tuple[int, ...] = ()) -> Any:
    """``jax.jit(fn)`` with the first argument's buffers (parameters, optimizer state)
    donated: the compiled step writes its new values into their memory instead of allocating
    new arrays (on the CPU, 2.0 against 2.4-2.9 ms for the MLP's step at batch 128). The
    arrays passed in are deleted by the call, as their new values replace them. One array
    given twice (JAX refuses to donate a buffer twice) is copied for its second place."""
    compiled = jax.jit(fn, donate_argnums=(0,), static_argnums=static_argnums)

    def step(values: list[Any], *args: Any) -> Any:
        seen: set[int] = set()
        for i, value in enumerate(values):
            if id(value) in seen:
                values = list(values)
                values[i] = jax.numpy.array(value, copy=True)
            seen.add(id(value))
        return compiled(values, *args)

    return step


def _jit_take(jax: Any, jnp: Any) -> Any:
    """``jnp.take(a, index, axis=0)`` compiled: eager ``jnp.take`` dispatches its index
    arithmetic and the gather one operation at a time (about 0.5 ms a batch on the CPU)."""
    take = jax.jit(lambda a, index: jnp.take(a, index, axis=0))
    # indices known to be in range: no bounds handling (jnp.take's default fills out-of-range
    # rows, which costs a compare and a select per element: 59 against 28 µs for 32 MNIST rows)
    clipped = jax.jit(lambda a, index: jnp.take(a, index, axis=0, mode="clip"))
    return lambda a, index, out=None, in_range=False: (clipped if in_range else take)(a, index)


def _jit_take_batch(jax: Any, jnp: Any) -> Any:
    """`Backend.take_batch` for JAX: the slice of the permutation and the gathers of every
    array, compiled as one call per batch size (the start is an argument, not a constant). The
    order is a permutation of the rows, so the gathers skip bounds handling (``mode="clip"``
    changes nothing for indices in range, and halves the gather's time)."""

    def gather(arrays: Any, order: Any, start: Any, size: int) -> Any:
        index = jax.lax.dynamic_slice_in_dim(order, start, size)
        return jax.tree_util.tree_map(lambda a: jnp.take(a, index, axis=0, mode="clip"), arrays)

    compiled = jax.jit(gather, static_argnums=3)

    def take_batch(arrays: Any, order: Any, start: int, stop: int) -> Any:
        return compiled(arrays, order, start, stop - start)

    return take_batch


def _jit_loop(jax: Any, step: Any) -> Any:
    """`Backend.loop_compiler` for JAX: ``step(values, lr, x, y) -> (values, grads, grad norm,
    E, Y, correct count)``, a pure training step, becomes

        run(values, lr, arrays, order, start, count, size, most)
            -> (values, grads, grad norm, E of each step (a list of ``most`` 0-d arrays, the
                first ``count`` of them the steps'), correct count summed over the steps (or
                None), Y of the last step)

    which takes ``count`` (1 <= count <= most) steps in one compiled call: step i trains on
    rows ``order[start + i·size : start + (i+1)·size]`` of every array of ``arrays`` (the
    slice and gathers inside the call, ``mode="clip"``: the order is a permutation), each
    step on the values the one before it left. ``size`` and ``most`` are constants of the
    compiled function, ``start`` and ``count`` are not: one compile serves every run of up
    to ``most`` steps of one batch size. One call instead of one per step (and one more per
    gather) is what pays on the CPU, where XLA's threads and the dispatching thread share
    the cores (MLP at batch 128, two cores: docs/performance.md).

    Integer values (Adam's step count, passed as a Python int) are carried as arrays of
    JAX's default integer dtype; the caller keeps its own count on the host."""
    jnp, lax = jax.numpy, jax.lax
    tree_map = jax.tree_util.tree_map

    def strong(value: Any, like: Any) -> Any:
        # the loop's carry must keep its types exactly: a Python int (weakly typed) or a
        # result promoted by a weakly typed scalar is cast back to the carried dtype
        return lax.convert_element_type(value, like.dtype)

    def run(
        values: list[Any],
        lr: Any,
        arrays: Any,
        order: Any,
        start: Any,
        count: Any,
        size: int,
        most: int,
    ) -> Any:
        values = [lax.convert_element_type(v, jnp.asarray(v).dtype) for v in values]

        def one(i: Any, values: list[Any]) -> Any:
            index = lax.dynamic_slice_in_dim(order, start + i * size, size)
            x, y = tree_map(lambda a: jnp.take(a, index, axis=0, mode="clip"), arrays)
            new, grads, norm, error, y_pred, hits = step(values, lr, x, y)
            return [strong(n, v) for n, v in zip(new, values)], grads, norm, error, y_pred, hits

        if most == 1:
            new, grads, norm, error, y_pred, hits = one(0, values)
            return new, grads, norm, [error], hits, y_pred
        # the carry's first values: zeros of the shapes one step gives
        shapes = jax.eval_shape(one, 0, values)
        grads, norm, _, y_pred, hits = tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1:])

        def body(i: Any, carry: Any) -> Any:
            values, _, _, errors, _, total = carry
            new, grads, norm, error, y_pred, hits = one(i, values)
            errors = lax.dynamic_update_index_in_dim(errors, error, i, 0)
            total = None if hits is None else total + hits
            return new, grads, norm, errors, y_pred, total

        errors = jnp.zeros((most,), shapes[3].dtype)
        new, grads, norm, errors, y_pred, hits = lax.fori_loop(
            0, count, body, (values, grads, norm, errors, y_pred, hits)
        )
        # each step's error an array of its own (callbacks get them one by one: slicing
        # them out eagerly afterwards costs a dispatch, or a compile, each)
        return new, grads, norm, [errors[i] for i in range(most)], hits, y_pred

    return _jit(jax, run, static_argnums=(6, 7))


def make_jax(device: Any = None) -> Backend:
    """JAX without its process-wide x64 mode: float32 and int32 (labels, permutations) need
    none. Only an explicit request for float64 or int64 (``backend.dtype("float64")``, e.g.
    ``Sequential(..., dtype="float64")``) turns x64 on, because JAX has no other way to hold
    64-bit arrays."""
    jax = import_library("jax")
    jnp = import_library("jax.numpy")
    dev = _jax_device(jax, device)
    return Backend(
        "jax",
        jnp,
        dev,
        to_host=lambda x: np.asarray(jax.device_get(x)),
        is_array=lambda x: isinstance(x, jax.Array),
        synchronize=lambda arrays: jax.block_until_ready(arrays),
        mutable=False,
        compiler=lambda fn: _jit(jax, fn),
        loop_compiler=lambda fn: _jit_loop(jax, fn),
        trace_refusals=(
            jax.errors.ConcretizationTypeError,  # float(x), bool(x) (a subclass) on a tracer
            jax.errors.TracerArrayConversionError,  # np.asarray(tracer)
            jax.errors.TracerIntegerConversionError,  # int(x), an index from a tracer
        ),
        inference_compiler=lambda fn, static_argnums=(): jax.jit(fn, static_argnums=static_argnums),
        library=jax,
        index_dtype=jnp.int32,
        wide_dtype_hook=lambda: _enable_x64(jax),
        take_rows=_jit_take(jax, jnp),
        take_batch=_jit_take_batch(jax, jnp),
        context=_jax_context(jax, dev),
        spec=_jax_spec(jax, dev),
    )


def make_array_api_strict(device: Any = None) -> Backend:
    xs = import_library("array_api_strict")
    if isinstance(device, xs.Device):
        dev = device
    else:
        try:
            dev = xs.Device("CPU_DEVICE" if device is None else str(device))
        except ValueError as exc:
            here = ", ".join(_strict_name(d) for d in xs.__array_namespace_info__().devices())
            raise BackendUnavailable(
                f"array_api_strict has no device {device!r}; devices here: {here}"
            ) from exc
    name = _strict_name(dev)
    return Backend(
        "array_api_strict",
        xs,
        dev,
        to_host=to_numpy,
        is_array=lambda x: isinstance(x, xs._array_object.Array),
        library=xs,
        spec="array_api_strict" if name == "CPU_DEVICE" else f"array_api_strict:{name}",
    )


def _strict_name(device: Any) -> str:
    """'device1' for ``array_api_strict.Device('device1')`` (the name it was made from)."""
    return repr(device).split("'")[1]


MAKERS = {
    "numpy": make_numpy,
    "cupy": make_cupy,
    "torch": make_torch,
    "jax": make_jax,
    "array_api_strict": make_array_api_strict,
}
