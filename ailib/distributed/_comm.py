"""The `Communicator` interface, the single-process communicator, host staging and the watchdog.

Every engine (`_mpi`, `_nccl`, `_torch`) subclasses `Communicator` and implements four private
methods on one array each: ``_allreduce``, ``_broadcast``, ``_barrier`` and ``_abort``. The
public methods here add what every engine shares: argument checks, the watchdog that ends a job
whose collective has waited too long, and the reduction of small host values.
"""

from __future__ import annotations

import numbers
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NoReturn

import array_api_compat
import numpy as np

from ..backends import to_numpy

#: seconds a collective may wait for the other ranks before the job is ended (see `Watchdog`)
DEFAULT_TIMEOUT = 300.0


#: seconds between printing a rank's error and aborting the job: MPI_Abort kills the processes
#: at once, and a launcher that has not yet forwarded the rank's output (likely on a busy
#: machine) would lose the one message that says what went wrong
FORWARD_GRACE_S = 0.5


class PeerLost(RuntimeError):
    """A collective could not complete because another rank died, hung or aborted.

    `abort_on_error` reports it in one line (the failing rank has already printed its own error)
    and ends this rank too."""


# -- host staging ------------------------------------------------------------------------------
def host_buffer(x: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """A contiguous NumPy buffer with the values of ``x``, and ``put_back(buffer) -> result``.

    NumPy arrays and contiguous CPU torch tensors are used in place (no copy): ``put_back``
    returns ``x``, already holding the result. Any other array (array-api-strict, CuPy, JAX,
    CUDA tensors) is copied to the host; ``put_back`` writes the buffer back into ``x`` and
    returns ``x``, or returns a new array where arrays are immutable (JAX).
    """
    if array_api_compat.is_numpy_array(x) and x.flags.c_contiguous and x.flags.writeable:
        return x, lambda buffer: x
    if (
        array_api_compat.is_torch_array(x)
        and x.device.type == "cpu"
        and x.is_contiguous()
        and not x.requires_grad
    ):
        return x.numpy(), lambda buffer: x
    host = np.array(to_numpy(x), copy=True, order="C")

    def put_back(buffer: np.ndarray) -> Any:
        xp = array_api_compat.array_namespace(x)
        result = xp.asarray(buffer, device=array_api_compat.device(x))
        if array_api_compat.is_jax_array(x):
            return result
        x[...] = result
        return x

    return host, put_back


# -- the watchdog ------------------------------------------------------------------------------
class Watchdog:
    """Calls ``expire(what)`` when a guarded collective runs longer than ``timeout`` seconds.

    A blocking MPI call cannot be interrupted from Python: if a rank dies without its launcher
    noticing, or hangs, the others would wait forever. The watchdog is one daemon thread that
    sleeps until the deadline of the collective in flight; ``expire`` ends the job (MPI_Abort).
    Guarding a collective costs a lock and a notify. ``timeout=None`` disables it.
    """

    def __init__(self, timeout: float | None, expire: Callable[[str], None]) -> None:
        self.timeout = timeout
        self._expire = expire
        self._cond = threading.Condition()
        self._what = ""
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        if self.timeout is None:
            yield
            return
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="ailib-distributed-watchdog", daemon=True
                )
                self._thread.start()
            self._what, self._deadline = what, time.monotonic() + self.timeout
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._deadline = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                what = self._what
                break
        self._expire(what)


# -- the interface -----------------------------------------------------------------------------
class Communicator:
    """A group of ``size`` processes (ranks 0 .. size-1) that reduce and share arrays.

    Attributes:
        rank: this process's index in the group.
        size: the number of processes.
        local_rank: this process's index among the ranks on its machine (which GPU to use).
        engine: "single", "mpi", "nccl" or "torch".
        timeout: seconds a collective may wait for the others before the job is ended with an
            error (None: wait forever).

    Collectives must be called by every rank in the same order with buffers of the same shape
    and dtype. Buffers are arrays of any ailib backend; NumPy arrays and CPU torch tensors go to
    the engine without a copy, others are staged through the host unless the engine reads device
    memory directly (NCCL, torch on CUDA, CUDA-aware MPI).
    """

    engine = "single"
    #: seconds the watchdog waits beyond ``timeout`` (engines with their own timeout, like
    #: torch.distributed, get the first word; the watchdog is the backstop)
    watchdog_margin = 0.0

    def __init__(
        self,
        rank: int = 0,
        size: int = 1,
        local_rank: int = 0,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}"
            )
        self.rank = rank
        self.size = size
        self.local_rank = local_rank
        self.backend: Any = None  # the rank's ailib Backend, set by init()
        self._timeout = timeout
        limit = None if timeout is None else timeout + self.watchdog_margin
        self.watchdog = Watchdog(limit, self._expired)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, engine={self.engine!r})"

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints and writes files."""
        return self.rank == 0

    # -- collectives ---------------------------------------------------------------------------
    def allreduce_(self, buffer: Any) -> Any:
        """Sum ``buffer`` over all ranks, elementwise: afterwards every rank holds Σ_r buffer_r.

        The sum is written into ``buffer``, which is also returned; JAX arrays are immutable, so
        there a new array is returned: always use the result, ``g = comm.allreduce_(g)``.
        """
        self._check_array(buffer, "allreduce_")
        if self.size == 1:
            return buffer
        with self.watchdog.guard("allreduce_"):
            return self._allreduce(buffer)

    def broadcast_(self, buffer: Any, root: int = 0) -> Any:
        """Copy rank ``root``'s ``buffer`` to every rank (in place; returned, see `allreduce_`)."""
        self._check_array(buffer, "broadcast_")
        self._check_root(root)
        if self.size == 1:
            return buffer
        with self.watchdog.guard("broadcast_"):
            return self._broadcast(buffer, root)

    def allreduce_values(self, values: Any) -> Any:
        """Sum small host values over all ranks: a dict, list or tuple of Python numbers (or one
        number). Returns the same structure; ints stay ints (exact up to 2**53), bools are
        counted as ints. Every rank must pass the same keys in the same order.

        Use it for (sum, count) pairs: ``comm.allreduce_values({"loss": s, "n": n})``.
        """
        keys, numbers_ = _flatten_values(values)
        if self.size > 1:
            buffer = np.asarray([float(v) for v in numbers_], dtype=np.float64)
            with self.watchdog.guard("allreduce_values"):
                buffer = self._allreduce(buffer)
            numbers_ = [
                int(round(float(s))) if isinstance(v, numbers.Integral) else float(s)
                for v, s in zip(numbers_, buffer)
            ]
        return _unflatten_values(values, keys, numbers_)

    def barrier(self) -> None:
        """Wait until every rank has reached this call."""
        if self.size > 1:
            with self.watchdog.guard("barrier"):
                self._barrier()

    def abort(self, error: BaseException | None = None) -> NoReturn:
        """End every rank of the job now, with exit status 1. Never returns.

        Prints nothing: `abort_on_error` shows the error once, on the rank where it happened.
        With one process it raises ``SystemExit(1)`` from ``error``.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        self._abort(error)
        os._exit(1)  # the engine's abort does not return; this is the guard if it ever does

    def close(self) -> None:
        """Release the engine's resources (the process group); the communicator is unusable after."""

    # -- what engines implement ------------------------------------------------------------------
    def _allreduce(self, buffer: Any) -> Any:
        return buffer

    def _broadcast(self, buffer: Any, root: int) -> Any:
        return buffer

    def _barrier(self) -> None:
        pass

    def _abort(self, error: BaseException | None) -> None:
        raise SystemExit(1) from error

    def _expired(self, what: str) -> None:
        """Called by the watchdog thread: say why, then end the whole job."""
        print(
            f"ailib.distributed: rank {self.rank} of {self.size}: {what} did not complete within "
            f"{self.watchdog.timeout:g} s; another rank has died or is stuck. Ending the job "
            "(raise the limit with init(timeout=...) if a rank legitimately takes longer).",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(FORWARD_GRACE_S)  # let the launcher forward the message before the abort
        self._abort(None)
        os._exit(1)

    # -- checks --------------------------------------------------------------------------------
    def _check_array(self, buffer: Any, what: str) -> None:
        if not array_api_compat.is_array_api_obj(buffer) or isinstance(buffer, numbers.Number):
            raise TypeError(
                f"{what} expects an array (NumPy, CuPy, torch, JAX or array-api-strict), "
                f"got {type(buffer).__name__}; use allreduce_values for Python numbers"
            )

    def _check_root(self, root: int) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in 0..{self.size - 1}, got {root}")


def _flatten_values(values: Any) -> tuple[list[Any] | None, list[Any]]:
    if isinstance(values, dict):
        keys, items = list(values), list(values.values())
    elif isinstance(values, (list, tuple)):
        keys, items = None, list(values)
    else:
        keys, items = None, [values]
    for i, v in enumerate(items):
        if not isinstance(v, numbers.Real):
            where = keys[i] if keys is not None else i
            raise TypeError(
                f"allreduce_values expects Python numbers, got {type(v).__name__} at {where!r}; "
                "read arrays back with float(...) first, or use allreduce_ for arrays"
            )
    return keys, items


def _unflatten_values(values: Any, keys: list[Any] | None, items: list[Any]) -> Any:
    if isinstance(values, dict):
        return dict(zip(keys or [], items))
    if isinstance(values, (list, tuple)):
        return type(values)(items)
    return items[0]
