"""`init`: which launcher started this process, which engine fits the backend, and the
communicator for it.

| launcher (from the environment)   | backend                  | engine                          |
|-----------------------------------|--------------------------|---------------------------------|
| none                              | any                      | single (size 1, no MPI needed)  |
| torchrun (RANK, WORLD_SIZE, ...)  | any                      | torch: NCCL on CUDA, else Gloo  |
| mpiexec / srun (PMI_*, OMPI_* ...)| cupy                     | nccl (MPI through the host if   |
|                                   |                          | CuPy has no NCCL)               |
| mpiexec / srun                    | torch on CUDA            | torch (NCCL), address over MPI  |
| mpiexec / srun                    | numpy, strict, jax, torch CPU | mpi                        |
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any, Callable, Mapping

from .. import backends
from ._comm import DEFAULT_TIMEOUT, Communicator

ENGINES = ("single", "mpi", "nccl", "torch")
#: set by MPI launchers: Open MPI, MPICH/Intel MPI (Hydra, PMI), PMIx (srun --mpi=pmix), MVAPICH
MPI_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
#: set by torchrun (python -m torch.distributed.run) for env:// rendezvous
TORCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR")

LAUNCH_HELP = """\
start one process per rank with a launcher, for example:
  mpiexec -n 4 python train.py                    (one machine; MPI from 'pip install mpi4py mpich')
  srun --mpi=pmix -n 8 python train.py            (Slurm)
  mpiexec -n 8 -f hostfile python train.py        (several machines)
  torchrun --nproc-per-node 4 train.py            (torch.distributed)
see docs/distributed.md"""


def launcher(env: Mapping[str, str] | None = None) -> str | None:
    """ "torchrun", "mpi" or None: what started this process, read from ``env`` (os.environ)."""
    env = os.environ if env is None else env
    if all(name in env for name in TORCH_VARIABLES):
        return "torchrun"
    if any(name in env for name in MPI_VARIABLES):
        return "mpi"
    return None


def choose_engine(
    launched_by: str | None,
    library: str,
    on_gpu: bool,
    nccl_available: Callable[[], bool],
) -> str:
    """The engine for a process started by ``launched_by`` whose arrays belong to ``library``
    ("numpy", "cupy", "torch", ...), on a GPU or not (see the table in this module's docstring).
    ``nccl_available`` is asked only when NCCL would be chosen."""
    if launched_by is None:
        return "single"
    if launched_by == "torchrun":
        return "torch"
    if library == "cupy":
        return "nccl" if nccl_available() else "mpi"
    if library == "torch" and on_gpu:
        return "torch"
    return "mpi"


def _nccl_available() -> bool:
    from ._nccl import import_nccl

    try:
        import_nccl()
    except ImportError:
        return False
    return True


def _gpu_count(library: str) -> int:
    if library == "cupy":
        return importlib.import_module("cupy").cuda.runtime.getDeviceCount()
    if library == "torch":
        return importlib.import_module("torch").cuda.device_count()
    return len(importlib.import_module("jax").devices("gpu"))


def rank_device(spec: str, local_rank: int, gpu_count: Callable[[str], int]) -> tuple[str, Any]:
    """(library, device) for this rank from a backend name: a GPU backend named without a device
    index ("cupy", "torch:cuda", "jax:gpu") gets GPU ``local_rank`` modulo ``gpu_count(library)``
    (the GPUs this process sees: one visible GPU per rank also works); any other name keeps
    its own device (None: the backend's default)."""
    library, _, device = spec.partition(":")
    library = backends.ALIASES.get(library.lower(), library.lower())
    kind = {"cupy": "", "torch": "cuda", "jax": "gpu"}.get(library)
    if kind is None or device != kind:
        return library, device or None
    index = local_rank % max(1, gpu_count(library))
    return library, index if library == "cupy" else f"{kind}:{index}"


def rank_backend(spec: Any, local_rank: int) -> backends.Backend:
    """The `Backend` this rank uses (see `rank_device`); a `Backend` or None is used as is."""
    if spec is None or isinstance(spec, backends.Backend):
        return backends.get(spec)
    library, device = rank_device(str(spec), local_rank, _gpu_count)
    return backends.get(library, device=device)


def _on_gpu(backend: backends.Backend) -> bool:
    return backend.name == "cupy" or (
        backend.name == "torch" and getattr(backend.device, "type", "") == "cuda"
    )


def init(
    backend: Any = None,
    *,
    engine: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Communicator:
    """The communicator of this job, chosen from the launcher's environment and the backend.

    Args:
        backend: the ailib backend the model will use (a name or a `Backend`; None: the
            default). A GPU backend without a device index gets this rank's GPU.
        engine: force "single", "mpi", "nccl" or "torch" instead of choosing.
        timeout: seconds a collective may wait for the other ranks before the job is ended with
            an error; None waits forever.
        env: the environment to read (default ``os.environ``).

    Returns:
        A `Communicator`; ``comm.backend`` is the `Backend` this rank should build its model on.

    Raises:
        ImportError: the launcher or engine needs mpi4py, torch or CuPy's NCCL, which are
            missing (the message says what to install).
        ValueError: an unknown engine.
    """
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    launched_by = launcher(env)
    mpi = None
    if engine in ("mpi", "nccl") or (launched_by == "mpi" and engine != "single"):
        from ._mpi import MPICommunicator

        mpi = MPICommunicator(timeout=timeout)
        local_rank = mpi.local_rank
    else:
        local_rank = int((os.environ if env is None else env).get("LOCAL_RANK", "0"))
    be = rank_backend(backend, local_rank)
    chosen = engine or choose_engine(launched_by, be.name, _on_gpu(be), _nccl_available)
    if engine is None and launched_by == "mpi" and be.name == "cupy" and chosen == "mpi":
        warnings.warn(
            "CuPy has no NCCL here: gradients go through the host over MPI (slower). "
            "Install a CuPy build with NCCL for GPU-to-GPU allreduce.",
            RuntimeWarning,
            stacklevel=2,
        )
    comm = _make(chosen, be, mpi, timeout)
    comm.backend = be
    return comm


def _make(engine: str, be: backends.Backend, mpi: Any, timeout: float | None) -> Communicator:
    if engine == "single":
        return Communicator(timeout=timeout)
    if engine == "mpi":
        return mpi
    if engine == "nccl":
        from ._nccl import NCCLCommunicator

        # ncclCommInitRank binds the communicator to the CUDA device current at the call; the
        # CuPy backend never makes its device current for the process (only inside its
        # context), so without this every rank of a node would bind GPU 0
        with be.context():
            return NCCLCommunicator(mpi.comm, timeout=timeout)
    from ._torch import TorchCommunicator

    device = be.device if be.name == "torch" else "cpu"
    return TorchCommunicator(device, timeout=timeout, mpi=mpi)
