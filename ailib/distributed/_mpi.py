"""The MPI communicator (mpi4py): host buffers for NumPy, array-api-strict and JAX; device arrays
staged through the host, or handed to MPI directly where the MPI library is CUDA-aware.

mpi4py is imported when an `MPICommunicator` is made, never by ``import ailib``.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

import array_api_compat

from ._comm import DEFAULT_TIMEOUT, Communicator, PeerLost, host_buffer


def import_mpi() -> Any:
    """mpi4py's MPI module, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "data-parallel training over MPI needs mpi4py and an MPI library: "
            f"pip install mpi4py mpich (or 'ailib[mpi]') ({exc})"
        ) from exc
    return MPI


def mpi_cuda_aware(MPI: Any) -> bool:
    """Whether the MPI library reads CUDA device memory (MPIX_Query_cuda_support, offered by
    MPICH and Open MPI). False where the query is missing: we never guess."""
    try:
        query = ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support
    except (AttributeError, OSError):
        return False
    query.restype = ctypes.c_int
    return bool(query())


def _is_cuda_array(x: Any) -> bool:
    if array_api_compat.is_cupy_array(x):
        return True
    return array_api_compat.is_torch_array(x) and x.device.type == "cuda"


def _wait_for_device(x: Any) -> None:
    """MPI reads device memory outside the library's stream: wait for the work that writes it."""
    if array_api_compat.is_cupy_array(x):
        sys.modules["cupy"].cuda.get_current_stream().synchronize()
    else:
        sys.modules["torch"].cuda.synchronize(x.device)


class MPICommunicator(Communicator):
    """A communicator over an MPI communicator (default ``MPI.COMM_WORLD``).

    Args:
        comm: the mpi4py communicator to use.
        timeout: seconds a collective may wait before the watchdog aborts the job (None: never).
        cuda_aware: hand CUDA arrays (CuPy, torch on CUDA) to MPI directly instead of staging
            them through the host. None: when the MPI library says it reads device memory
            (MPIX_Query_cuda_support) or ``AILIB_MPI_CUDA_AWARE=1`` is set. Forcing True on an
            MPI that does not read device memory crashes in MPI, so leave it None unless sure.
    """

    engine = "mpi"

    def __init__(
        self,
        comm: Any = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        cuda_aware: bool | None = None,
    ) -> None:
        MPI = import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank = node.Get_rank()
        node.Free()
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), local_rank, timeout)
        if cuda_aware is None:
            cuda_aware = mpi_cuda_aware(MPI) or os.environ.get("AILIB_MPI_CUDA_AWARE") == "1"
        self.cuda_aware = bool(cuda_aware)

    def _allreduce(self, buffer: Any) -> Any:
        return self._collective(buffer, lambda b: self.comm.Allreduce(self.MPI.IN_PLACE, b))

    def _broadcast(self, buffer: Any, root: int) -> Any:
        return self._collective(buffer, lambda b: self.comm.Bcast(b, root=root))

    def _collective(self, buffer: Any, call: Any) -> Any:
        try:
            if self.cuda_aware and _is_cuda_array(buffer):
                _wait_for_device(buffer)
                call(buffer)
                return buffer
            host, put_back = host_buffer(buffer)
            call(host)
            return put_back(host)
        except self.MPI.Exception as exc:
            raise PeerLost(f"rank {self.rank}: MPI collective failed: {exc}") from exc

    def _barrier(self) -> None:
        try:
            self.comm.Barrier()
        except self.MPI.Exception as exc:
            raise PeerLost(f"rank {self.rank}: MPI barrier failed: {exc}") from exc

    def _abort(self, error: BaseException | None) -> None:
        self.MPI.COMM_WORLD.Abort(1)
