"""The torch.distributed communicator: Gloo on CPU, NCCL on CUDA.

It joins the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, LOCAL_RANK), or, under an MPI launcher, one whose address rank 0 shares
over MPI. torch is imported when a `TorchCommunicator` is made, never by ``import ailib``.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import array_api_compat

from ._comm import DEFAULT_TIMEOUT, Communicator, PeerLost, host_buffer

#: what torch.distributed is told when ailib's timeout is None ("wait forever")
_NO_TIMEOUT = datetime.timedelta(days=365)


def _mpi_rendezvous(mpi: Any) -> tuple[str, int, int, int]:
    """(init_method, rank, size, local_rank) for a process group started by an MPI launcher:
    rank 0 picks a free port on its host and tells the others over MPI."""
    address = None
    if mpi.rank == 0:
        single_node = mpi.comm.allreduce(mpi.local_rank == mpi.rank) == mpi.size
        host = os.environ.get("MASTER_ADDR") or (
            "127.0.0.1" if single_node else socket.gethostname()
        )
        with socket.socket() as s:
            s.bind(("", 0))
            address = f"tcp://{host}:{s.getsockname()[1]}"
    else:
        mpi.comm.allreduce(mpi.local_rank == mpi.rank)
    address = mpi.comm.bcast(address, root=0)
    return address, mpi.rank, mpi.size, mpi.local_rank


class TorchCommunicator(Communicator):
    """A communicator over a torch.distributed process group.

    Args:
        device: "cpu" (Gloo) or "cuda"/"cuda:i" (NCCL; without an index, the GPU is
            ``local_rank``). Buffers of other devices and libraries are staged.
        timeout: seconds a collective may wait; torch.distributed enforces it (Gloo raises,
            NCCL's watchdog ends the process), the ailib watchdog is a backstop 30 s later.
        mpi: an `MPICommunicator` to share the rendezvous address over, when the job was
            started by an MPI launcher rather than torchrun.
    """

    engine = "torch"
    watchdog_margin = 30.0

    def __init__(
        self,
        device: Any = "cpu",
        timeout: float | None = DEFAULT_TIMEOUT,
        mpi: Any = None,
    ) -> None:
        try:
            import torch
            import torch.distributed as dist
        except ImportError as exc:
            raise ImportError(
                f"the torch engine needs torch: pip install 'ailib[torch]' ({exc})"
            ) from exc
        if not dist.is_available():
            raise ImportError("this build of torch has no torch.distributed support")
        self.torch, self.dist = torch, dist
        if mpi is not None:
            init_method, rank, size, local_rank = _mpi_rendezvous(mpi)
        else:
            init_method, rank, size = "env://", None, None
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            dist.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo",
                init_method=init_method,
                rank=-1 if rank is None else rank,
                world_size=-1 if size is None else size,
                timeout=_NO_TIMEOUT if timeout is None else datetime.timedelta(seconds=timeout),
            )
        super().__init__(dist.get_rank(), dist.get_world_size(), local_rank, timeout)

    def _tensor(self, buffer: Any) -> tuple[Any, Any]:
        """A tensor on the group's device holding ``buffer``, and ``put_back(tensor)``."""
        if (
            array_api_compat.is_torch_array(buffer)
            and buffer.device == self.device
            and buffer.is_contiguous()
        ):
            return buffer.detach(), lambda tensor: buffer
        host, put_back = host_buffer(buffer)
        tensor = self.torch.from_numpy(host)
        if self.device.type == "cpu":
            return tensor, lambda t: put_back(host)

        def back(t: Any) -> Any:
            host[...] = t.cpu().numpy()
            return put_back(host)

        return tensor.to(self.device), back

    def _run(self, what: str, buffer: Any, call: Any) -> Any:
        tensor, put_back = self._tensor(buffer)
        try:
            call(tensor)
        except RuntimeError as exc:  # DistBackendError, Gloo's connection and timeout errors
            raise PeerLost(f"rank {self.rank}: torch.distributed {what} failed: {exc}") from exc
        return put_back(tensor)

    def _allreduce(self, buffer: Any) -> Any:
        return self._run("all_reduce", buffer, self.dist.all_reduce)

    def _broadcast(self, buffer: Any, root: int) -> Any:
        return self._run("broadcast", buffer, lambda t: self.dist.broadcast(t, src=root))

    def _barrier(self) -> None:
        # an all_reduce of one number: the same code path (and timeout) on Gloo and NCCL
        self._run("barrier", self.torch.zeros(1, device=self.device), self.dist.all_reduce)

    def _abort(self, error: BaseException | None) -> None:
        # torch.distributed has no "abort the job": this process ends (abort() calls os._exit),
        # and the others' next collective fails (connection closed) or times out
        return None

    def close(self) -> None:
        if self._owns_group and self.dist.is_initialized():
            self.dist.destroy_process_group()
