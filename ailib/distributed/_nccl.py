"""The NCCL communicator for CuPy arrays (CuPy's own bindings, ``cupy.cuda.nccl``).

The process group comes from MPI: rank 0 makes the NCCL unique id and broadcasts it over MPI,
as ChainerMN does. CuPy arrays of a dtype NCCL knows go GPU to GPU; anything else (host values,
other libraries' arrays) goes through the MPI communicator, staged through the host.
cupy is imported when an `NCCLCommunicator` is made, never by ``import ailib``.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from ._mpi import MPICommunicator

#: NCCL's code for each dtype it reduces (the names of cupy.cuda.nccl's constants)
NCCL_DTYPES = {
    "float16": "NCCL_FLOAT16",
    "float32": "NCCL_FLOAT32",
    "float64": "NCCL_FLOAT64",
    "int32": "NCCL_INT32",
    "int64": "NCCL_INT64",
    "uint8": "NCCL_UINT8",
}


def import_nccl() -> Any:
    """``cupy.cuda.nccl``, or an ImportError saying why it is unusable."""
    from cupy.cuda import nccl

    if not getattr(nccl, "available", True):
        raise ImportError("cupy was built without NCCL (cupy.cuda.nccl.available is False)")
    return nccl


class NCCLCommunicator(MPICommunicator):
    """An MPI communicator whose CuPy-array collectives run on NCCL, GPU to GPU.

    Arguments are those of `MPICommunicator`. It is made, and its collectives run, with the
    rank's GPU current (``with backend.context():``, as `ailib.distributed.init` and the
    training loop do): NCCL binds a communicator to the device current when it is made. A
    collective returns once its result is in the buffer: the stream is synchronised inside the
    watchdog's guard, so a stuck peer is noticed.
    """

    engine = "nccl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import cupy

        self.cupy, self.nccl = cupy, import_nccl()
        unique_id = self.nccl.get_unique_id() if self.rank == 0 else None
        unique_id = self.comm.bcast(unique_id, root=0)
        self.group = self.nccl.NcclCommunicator(self.size, unique_id, self.rank)

    def _on_gpu(self, buffer: Any) -> bool:
        return (
            array_api_compat.is_cupy_array(buffer)
            and buffer.flags.c_contiguous
            and buffer.dtype.name in NCCL_DTYPES
        )

    def _allreduce(self, buffer: Any) -> Any:
        if not self._on_gpu(buffer):  # host values, other libraries: MPI through the host
            return super()._allreduce(buffer)
        stream = self.cupy.cuda.get_current_stream()
        code = getattr(self.nccl, NCCL_DTYPES[buffer.dtype.name])
        ptr = buffer.data.ptr
        self.group.allReduce(ptr, ptr, buffer.size, code, self.nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()
        return buffer

    def _broadcast(self, buffer: Any, root: int) -> Any:
        if not self._on_gpu(buffer):
            return super()._broadcast(buffer, root)
        stream = self.cupy.cuda.get_current_stream()
        code = getattr(self.nccl, NCCL_DTYPES[buffer.dtype.name])
        self.group.bcast(buffer.data.ptr, buffer.size, code, root, stream.ptr)
        stream.synchronize()
        return buffer

    def _abort(self, error: BaseException | None) -> None:
        self.group.abort()  # frees peers blocked in NCCL kernels on this side
        super()._abort(error)

    def close(self) -> None:
        self.group.destroy()
