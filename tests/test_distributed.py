"""ailib.distributed: communicators, shards, packed gradients and faults.

The multi-rank tests start real jobs on localhost: ``mpiexec -n 2`` and ``-n 3`` (MPI engine,
and torch.distributed with its address shared over MPI) and two processes with torchrun's
environment (torch.distributed over Gloo). Each rank runs tests/distributed_worker.py, which
prints what it saw; the checks here compare that with a NumPy reference. They are skipped, with
the reason, where MPI or torch cannot start.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import ailib
import ailib.distributed as dist

from .distributed_worker import BATCHES, per_sample_grads
from .helpers import assert_close, host

#: under pytest-xdist (`make test`), this module's MPI jobs run on one worker, one at a time
pytestmark = pytest.mark.xdist_group("mpi")

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(ROOT / "tests" / "distributed_worker.py")
#: one BLAS thread per rank: two ranks on two cores with threaded BLAS run several times slower
RANK_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
LAUNCHER_VARIABLES = dist._launch.MPI_VARIABLES + dist._launch.TORCH_VARIABLES
#: a job that ends in bounded time ends well within this (startup ~1-10 s on a loaded machine)
BOUND_S = 60


# -- launching jobs ------------------------------------------------------------------------------
@dataclass
class Job:
    returncode: int
    seconds: float
    output: str  # stdout and stderr of every rank
    results: dict[int, dict]  # rank -> what it wrote when it finished


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(RANK_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _results(out: Path) -> dict[int, dict]:
    found = [json.loads(f.read_text()) for f in sorted(out.glob("rank-*.json"))]
    return {result["rank"]: result for result in found}


def _mpiexec() -> str | None:
    """The mpiexec next to this Python (the mpich wheel installs it there), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


@pytest.fixture(scope="module")
def mpiexec() -> str:
    """mpiexec, after checking that a 2-rank mpi4py job starts here; skipped with the reason."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install mpi4py mpich)")
    launcher = _mpiexec()
    if launcher is None:
        pytest.skip("no mpiexec found (pip install mpich)")
    probe = "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"
    try:
        run = subprocess.run(
            [launcher, "-n", "2", sys.executable, "-c", probe],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=BOUND_S,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"MPI cannot start here: '{launcher} -n 2' did not finish in {BOUND_S} s")
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"MPI cannot start here: '{launcher} -n 2' failed: {tail[0]}")
    return launcher


def run_mpi(launcher: str, n: int, scenario: str, *args: str) -> Job:
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        run = subprocess.run(
            [launcher, "-n", str(n), sys.executable, WORKER, scenario, out, *args],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=BOUND_S,
        )
        seconds = time.monotonic() - start
        return Job(run.returncode, seconds, run.stdout + run.stderr, _results(Path(out)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torch(n: int, scenario: str, *args: str) -> Job:
    """n ranks started with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) but no
    launcher watching them: nothing but ailib and torch.distributed ends the others if one dies."""
    pytest.importorskip("torch.distributed", reason="torch is not installed")
    common = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    common["WORLD_SIZE"] = str(n)
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        ranks = [
            subprocess.Popen(
                [sys.executable, WORKER, scenario, out, *args],
                env={**common, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in range(n)
        ]
        outputs = []
        try:
            for p in ranks:
                outputs.append(p.communicate(timeout=BOUND_S)[0])
        finally:
            for p in ranks:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        seconds = time.monotonic() - start
        returncode = max(p.returncode for p in ranks)
        return Job(returncode, seconds, "".join(outputs), _results(Path(out)))


# -- the collective jobs, started once each --------------------------------------------------------
ALL_HOST = "numpy,array_api_strict,array_api_strict:device1"
JOBS = {
    # (launcher, ranks, worker arguments)
    # jax:cpu:1: JAX's second CPU device (tests/conftest.py), which the ranks inherit
    "mpi-2": ("mpi", 2, ["--backends", ALL_HOST + ",jax,jax:cpu:1"]),
    "mpi-3": ("mpi", 3, ["--backends", "numpy,array_api_strict"]),
    # ... and then rank 1 dies: see test_a_killed_rank_ends_the_other_torch_ranks_...
    "torchrun-env-2": (
        "torch",
        2,
        ["--backends", "torch,numpy,array_api_strict:device1", "--then-die"],
    ),
    "torch-over-mpi-2": ("mpi", 2, ["--engine", "torch", "--backends", "numpy"]),
}
EXPECTED_ENGINE = {"mpi-2": "mpi", "mpi-3": "mpi", "torchrun-env-2": "torch"}
EXPECTED_ENGINE["torch-over-mpi-2"] = "torch"
_started: dict[str, Job] = {}


def collective_job(name: str, request: pytest.FixtureRequest) -> Job:
    """The job ``name`` of JOBS, started once per test session."""
    if name not in _started:
        how, n, args = JOBS[name]
        if how == "mpi":
            _started[name] = run_mpi(request.getfixturevalue("mpiexec"), n, "collectives", *args)
        else:
            _started[name] = run_torch(n, "collectives", *args)
    return _started[name]


@pytest.fixture(params=list(JOBS))
def job(request: pytest.FixtureRequest) -> Job:
    """Each collective job's per-rank results."""
    found = collective_job(request.param, request)
    _, n, args = JOBS[request.param]
    assert sorted(found.results) == list(range(n)), found.output[-3000:]
    assert found.returncode == 0 or "--then-die" in args, found.output[-3000:]
    return found


def _each_backend(job: Job, section: str):
    """(rank, key, value) for every rank and backend/dtype entry of a result section."""
    for rank, result in job.results.items():
        for key, value in result[section].items():
            yield rank, key, value


def test_every_rank_knows_its_rank_size_and_engine(job: Job, request: pytest.FixtureRequest):
    name = request.node.callspec.params["job"]
    for rank, result in job.results.items():
        assert result["rank"] == rank and result["size"] == len(job.results)
        assert result["engine"] == EXPECTED_ENGINE[name]


def test_allreduce_sums_over_ranks_in_place_on_every_backend(job: Job):
    size = len(job.results)
    base = np.arange(6.0).reshape(2, 3)
    expected = sum(base * (r + 1) + r for r in range(size))
    seen = 0
    for _, key, got in _each_backend(job, "allreduce"):
        name, dtype = key.split("/")
        np.testing.assert_array_equal(np.asarray(got["values"]), expected, err_msg=key)
        assert got["dtype"] == dtype and got["same_device"], key
        assert got["in_place"] == (name.split(":")[0] != "jax"), key  # JAX's are immutable
        seen += 1
    assert seen >= 2 * size  # numpy at least, both dtypes, on every rank


def test_broadcast_copies_the_root_to_every_rank(job: Job):
    size = len(job.results)
    for _, key, got in _each_backend(job, "broadcast"):
        np.testing.assert_array_equal(got, np.full(3, 10.0 + size - 1), err_msg=key)


def test_allreduce_values_sums_python_numbers_and_keeps_ints(job: Job):
    size = len(job.results)
    for result in job.results.values():
        values = result["values"]
        assert values["count"] == size * (size + 1) // 2 and isinstance(values["count"], int)
        assert values["loss"] == pytest.approx(0.25 * size * (size - 1) / 2)
        assert values["flag"] == 1  # True on rank 0 only: bools are counted
        assert result["values_list"] == [size * (size - 1) // 2, 1.5 * size]


def test_shards_of_each_rank_cover_the_global_batch_once(job: Job):
    for n in BATCHES:
        shares = sorted(tuple(r["shards"][str(n)]) for r in job.results.values())
        covered = [i for start, stop in shares for i in range(start, stop)]
        assert covered == list(range(n))


def test_average_gradients_equal_one_process_on_the_whole_batch(job: Job):
    """Uneven shares (7 rows on 2 or 3 ranks) and ranks with no rows (1 or 2 rows on 3 ranks,
    whose local mean is NaN) still give exactly the mean over the global batch."""
    for rank, name, per_batch in _each_backend(job, "average"):
        for n, grads in per_batch.items():
            for got, per_sample in zip(grads, per_sample_grads(int(n))):
                dtype = per_sample.dtype.name
                assert got["dtype"] == dtype and got["same_device"], (rank, name, n)
                assert_close(np.asarray(got["values"]), per_sample.mean(axis=0), dtype)


def test_broadcast_arrays_gives_every_rank_the_weights_of_rank_0(job: Job):
    for _, _, params in _each_backend(job, "params"):
        np.testing.assert_array_equal(params[0], np.zeros((2, 2)))
        np.testing.assert_array_equal(params[1], np.arange(3))
    for rank, name, placed in _each_backend(job, "params_placed"):
        assert placed, (rank, name)


# -- faults ----------------------------------------------------------------------------------------
def test_an_error_on_one_rank_ends_every_rank_and_is_shown_once(mpiexec: str):
    run = run_mpi(mpiexec, 3, "fail")
    assert run.returncode != 0 and not run.results, run.output
    assert run.output.count("ValueError: rank 1 broke on purpose") == 1, run.output
    assert "rank 1 of 3 failed; ending all ranks" in run.output
    assert run.seconds < BOUND_S


def test_a_stuck_rank_ends_the_job_after_the_timeout(mpiexec: str):
    """Rank 1 stops taking part (it sleeps for 600 s); the others' watchdog ends the job
    shortly after their 2 s timeout instead of waiting."""
    run = run_mpi(mpiexec, 3, "hang", "--timeout", "2")
    assert run.returncode != 0 and not run.results, run.output
    assert "did not complete within 2 s" in run.output
    assert run.seconds < BOUND_S


def test_a_killed_rank_ends_the_mpi_job(mpiexec: str):
    run = run_mpi(mpiexec, 3, "die")
    assert run.returncode != 0 and not run.results, run.output
    assert run.seconds < BOUND_S


def test_a_killed_rank_ends_the_other_torch_ranks_without_any_launcher(
    request: pytest.FixtureRequest,
):
    """The torchrun-env job's rank 1 kills itself after the collectives; rank 0, blocked in its
    next all_reduce with no launcher to end it, fails with one line and exits."""
    run = collective_job("torchrun-env-2", request)
    assert run.returncode != 0, run.output
    assert run.output.count("rank 0 stopping:") == 1, run.output
    assert run.seconds < BOUND_S


def test_ranks_with_different_models_all_refuse_to_broadcast(mpiexec: str):
    run = run_mpi(mpiexec, 3, "mismatch")
    assert run.returncode == 0 and sorted(run.results) == [0, 1, 2], run.output
    for result in run.results.values():
        assert "1 of 3 ranks hold arrays that differ" in result["error"]
        # every rank names the rank that differs and rank 0's arrays; rank 1 its own too
        assert "(rank 1; rank 0: 2 arrays, 7 values" in result["error"], result["error"]
    assert "rank 1: 2 arrays, 8 values)" in run.results[1]["error"]
    assert "rank 0: 2 arrays, 7 values)" in run.results[0]["error"]  # not "rank 0" twice


# -- one process, no launcher ----------------------------------------------------------------------
def test_import_and_init_without_a_launcher_import_no_mpi_torch_or_cupy():
    code = (
        "import sys, ailib, ailib.distributed as d\n"
        "comm = d.init()\n"
        "assert (comm.size, comm.rank, comm.engine) == (1, 0, 'single'), comm\n"
        "loaded = [m for m in ('mpi4py', 'torch', 'cupy', 'jax') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True, timeout=BOUND_S)


def test_an_mpi_launcher_without_mpi4py_says_what_to_install():
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "import ailib.distributed as d\n"
        "try:\n    d.init()\nexcept ImportError as e:\n    print(e)\n"
    )
    env = {**_env(), "PMI_RANK": "0", "PMI_SIZE": "2"}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=BOUND_S
    )
    assert "pip install mpi4py mpich" in run.stdout, run.stdout + run.stderr


def test_a_single_process_communicator_changes_nothing(backend):
    comm = dist.init(backend=backend)
    x = backend.asarray(np.arange(4.0))
    assert comm.allreduce_(x) is x and comm.broadcast_(x) is x
    assert comm.allreduce_values({"n": 3, "loss": 1.5}) == {"n": 3, "loss": 1.5}
    grads = [backend.asarray(np.ones((2, 2))), backend.asarray(np.arange(3.0))]
    for got, want in zip(dist.average_gradients(comm, grads, 4, 4), grads):
        assert_close(got, want)
    comm.barrier()
    with pytest.raises(SystemExit):
        comm.abort(RuntimeError("x"))


def test_abort_on_error_in_one_process_raises_the_error_unchanged():
    comm = dist.init()
    with pytest.raises(KeyError, match="missing"), dist.abort_on_error(comm):
        raise KeyError("missing")


def test_bad_arguments_are_refused_with_what_was_expected():
    comm = dist.init()
    with pytest.raises(TypeError, match="expects an array"):
        comm.allreduce_(3.0)
    with pytest.raises(TypeError, match="Python numbers.*'loss'"):
        comm.allreduce_values({"loss": np.ones(2)})
    with pytest.raises(ValueError, match="root must be a rank in 0..0"):
        comm.broadcast_(np.ones(2), root=1)
    with pytest.raises(ValueError, match="unknown engine 'gloo'"):
        dist.init(engine="gloo")
    with pytest.raises(ValueError, match="n_local <= n_global"):
        dist.average_gradients(comm, [np.ones(2)], 5, 4)
    with pytest.raises(ValueError, match="one process holds the whole batch"):
        dist.average_gradients(comm, [np.ones(2)], 3, 4)
    with pytest.raises(ValueError, match="timeout must be a positive"):
        dist.init(timeout=0)


# -- shards, packing, engine choice ------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 11, 128, 1001])
def test_shards_are_contiguous_cover_the_batch_and_differ_by_at_most_one(n: int, size: int):
    shares = [dist.shard(n, r, size) for r in range(size)]
    assert shares[0][0] == 0 and shares[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
    counts = [stop - start for start, stop in shares]
    assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)


def test_shard_refuses_a_rank_outside_the_group():
    with pytest.raises(ValueError, match="0 <= rank < size"):
        dist.shard(10, 3, 3)


def test_pack_makes_one_buffer_per_dtype_and_unpack_restores_every_array(backend):
    rng = np.random.default_rng(0)
    arrays = [
        backend.asarray(rng.standard_normal((3, 4)), dtype="float32"),
        backend.asarray(rng.standard_normal(5), dtype="float64"),
        backend.asarray(rng.standard_normal((2, 2, 2)), dtype="float32"),
        backend.asarray(rng.standard_normal(1), dtype="float64"),
    ]
    buffers, layout = dist.pack(arrays)
    assert [tuple(b.shape) for b in buffers] == [(20,), (6,)]
    assert [backend.dtype_name(b.dtype) for b in buffers] == ["float32", "float64"]
    assert all(backend.device_of(b) == backend.device for b in buffers)
    for got, want in zip(dist.unpack(buffers, layout), arrays):
        assert tuple(got.shape) == tuple(want.shape) and got.dtype == want.dtype
        np.testing.assert_array_equal(host(got), host(want))


def test_host_staging_writes_the_result_back_into_the_callers_array(backend):
    """What every engine does with an array it cannot hand over directly: a host buffer, then
    the result written back (NumPy and CPU torch: the buffer is the array's own memory)."""
    x = backend.asarray(np.arange(6.0).reshape(2, 3))
    buffer, put_back = dist.host_buffer(x)
    buffer *= 2  # what an engine's in-place reduction does to the host buffer
    y = put_back(buffer)
    assert (y is x) == backend.mutable and backend.device_of(y) == backend.device
    np.testing.assert_array_equal(host(y), 2 * np.arange(6.0).reshape(2, 3))


def test_pack_of_nothing_is_nothing():
    buffers, layout = dist.pack([])
    assert buffers == [] and dist.unpack(buffers, layout) == []


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"PMI_RANK": "1", "PMI_SIZE": "2"}, "mpi"),  # MPICH / Intel MPI (Hydra)
        ({"OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),  # Open MPI
        ({"PMIX_RANK": "0"}, "mpi"),  # srun --mpi=pmix
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "torchrun"),
        ({"RANK": "0"}, None),  # not enough for a torch.distributed rendezvous
    ],
)
def test_the_launcher_is_read_from_the_environment(env: dict, expected: str | None):
    assert dist.launcher(env) == expected


def _no_nccl_question() -> bool:
    raise AssertionError("NCCL availability was asked although NCCL could not be chosen")


@pytest.mark.parametrize(
    "launched_by, library, on_gpu, nccl, expected",
    [
        (None, "cupy", True, _no_nccl_question, "single"),
        ("torchrun", "numpy", False, _no_nccl_question, "torch"),
        ("torchrun", "torch", True, _no_nccl_question, "torch"),
        ("mpi", "numpy", False, _no_nccl_question, "mpi"),
        ("mpi", "array_api_strict", False, _no_nccl_question, "mpi"),
        ("mpi", "jax", False, _no_nccl_question, "mpi"),
        ("mpi", "torch", False, _no_nccl_question, "mpi"),
        ("mpi", "torch", True, _no_nccl_question, "torch"),
        ("mpi", "cupy", True, lambda: True, "nccl"),
        ("mpi", "cupy", True, lambda: False, "mpi"),  # CuPy without NCCL: through the host
    ],
)
def test_the_engine_follows_the_launcher_and_the_backend(
    launched_by, library, on_gpu, nccl, expected
):
    assert dist.choose_engine(launched_by, library, on_gpu, nccl) == expected


@pytest.mark.parametrize(
    "spec, local_rank, expected",
    [
        ("cupy", 5, ("cupy", 1)),  # 4 GPUs visible: rank 5 on a node takes GPU 1
        ("torch:cuda", 2, ("torch", "cuda:2")),
        ("jax:gpu", 6, ("jax", "gpu:2")),
        ("torch:cuda:1", 2, ("torch", "cuda:1")),  # an explicit device is kept
        ("numpy", 3, ("numpy", None)),
        ("torch", 3, ("torch", None)),
    ],
)
def test_each_rank_takes_its_own_gpu(spec: str, local_rank: int, expected: tuple):
    assert dist.rank_device(spec, local_rank, gpu_count=lambda library: 4) == expected


def test_the_watchdog_fires_only_for_a_collective_that_outlives_its_timeout():
    fired = []
    done = threading.Event()
    watchdog = dist.Watchdog(0.2, lambda what: (fired.append(what), done.set()))
    with watchdog.guard("quick"):
        pass
    time.sleep(0.5)
    assert fired == []
    with watchdog.guard("slow"):
        assert done.wait(BOUND_S)
    assert fired == ["slow"]


def test_the_ailib_package_exposes_distributed():
    assert ailib.distributed is dist
