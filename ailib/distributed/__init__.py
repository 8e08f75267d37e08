"""Data-parallel training on existing engines: MPI (mpi4py), NCCL (CuPy), torch.distributed.

Every process (rank) holds the whole model and trains on its share of each global batch; the
gradients are summed over ranks once per step. This package gives the pieces:

    >>> import ailib.distributed as dist
    >>> comm = dist.init(backend="numpy")          # size 1 without a launcher: no MPI needed
    >>> comm.rank, comm.size
    (0, 1)
    >>> start, stop = dist.shard(100, comm.rank, comm.size)   # this rank's rows of a batch
    >>> # params = dist.broadcast_arrays(comm, params)        # rank 0's initial weights
    >>> # grads = dist.average_gradients(comm, grads, stop - start, 100)   # one packed allreduce

- `init` chooses the engine from the launcher's environment (mpiexec/srun -> MPI, torchrun ->
  torch.distributed, nothing -> one process) and the backend (CuPy -> NCCL, torch on CUDA ->
  torch.distributed with NCCL); see ``_launch`` for the table.
- A `Communicator` has ``rank``, ``size``, ``allreduce_`` and ``broadcast_`` of one array,
  ``allreduce_values`` of Python numbers, ``barrier`` and ``abort``.
- `fit(..., distributed=comm)` (any ailib model) trains data-parallel through `DataParallel`.
- `abort_on_error` turns an exception on one rank into the end of the job, shown once; a
  collective that waits longer than ``timeout`` (a rank died or hangs) ends the job too.

Like ``ailib.backends``, this package hands arrays to the libraries underneath; it imports
mpi4py, torch or cupy only when an engine that needs them is made. Launching and what is
averaged: docs/distributed.md.
"""

from __future__ import annotations

from ._arrays import (
    Layout,
    allreduce_arrays,
    average_gradients,
    broadcast_arrays,
    pack,
    shard,
    unpack,
)
from ._comm import DEFAULT_TIMEOUT, Communicator, PeerLost, Watchdog, host_buffer
from ._faults import abort_on_error
from ._launch import ENGINES, LAUNCH_HELP, choose_engine, init, launcher, rank_device
from ._training import DataParallel, broadcast_object

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENGINES",
    "LAUNCH_HELP",
    "Communicator",
    "DataParallel",
    "Layout",
    "PeerLost",
    "Watchdog",
    "abort_on_error",
    "allreduce_arrays",
    "average_gradients",
    "broadcast_arrays",
    "broadcast_object",
    "choose_engine",
    "host_buffer",
    "init",
    "launcher",
    "pack",
    "rank_device",
    "shard",
    "unpack",
]
