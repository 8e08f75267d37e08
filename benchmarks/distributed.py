"""Data-parallel overhead: what one training step's gradient exchange costs at 1, 2 and 4 ranks,
next to what the step's computation costs on each rank's share of the batch.

    python -m benchmarks.distributed                     # 1, 2, 4 ranks; MPI and torch (Gloo)
    python -m benchmarks.distributed --ranks 1,2 --engines mpi --steps 20 --repeats 3 --no-fit

The model is the benchmark MLP (784-256-128-10): 235,146 parameters in 6 arrays. For every
(ranks, engine) one job is started with ``mpiexec -n RANKS`` (one BLAS thread per rank); each
rank measures, after a warm-up, the median over ``--repeats`` blocks of ``--steps`` steps of
- ``allreduce_``: one flat buffer of 235,146 values, float32 and float64;
- ``average_gradients``: the 6 gradient arrays packed, scaled by n_r/N, allreduced once and
  unpacked: what the training loop will call every step;
- compute: forward, backward and SGD of the hand-written NumPy MLP (benchmarks/contenders.py)
  on this rank's share of a global batch of ``--batch-size`` rows, all ranks at once.
Rank 0 reports. Then, end to end, ``Sequential.fit(..., distributed=comm)`` of the same MLP
(float32, Adam, ``--fit-rows`` synthetic rows, global batch ``--batch-size``): samples/s of the
last of ``--fit-epochs`` epochs, the speed-up and scaling efficiency (samples/s at N ranks / (N x
samples/s at 1 rank)), and the step split into the gradient exchange (time inside
``DataParallel.reduce_gradients``) and the rest (forward, backward, update, batching).
On a machine with fewer cores than ranks the ranks share cores: the figures then show the
overhead, not the speed-up. Writes ``<out>.json`` and ``<out>.md`` (default
``benchmarks/results/distributed``; the committed run is ``distributed-2cores``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import machine

RESULTS = Path(__file__).parent / "results"
SIZES = (784, 256, 128, 10)
#: (W, b) shapes of the MLP: W is (out, in)
SHAPES = [s for a, b in zip(SIZES[:-1], SIZES[1:]) for s in ((b, a), (b,))]
PARAMS = sum(int(np.prod(s)) for s in SHAPES)  # 235,146
RANK_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- one rank ----------------------------------------------------------------------------------
def _median_ms(comm: Any, step: Callable[[], Any], steps: int, repeats: int) -> float:
    for _ in range(3):
        step()
    blocks = []
    for _ in range(repeats):
        comm.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        blocks.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(blocks)


def worker(args: argparse.Namespace) -> None:
    import ailib.distributed as dist

    from .contenders import NumpyReference, make_data

    comm = dist.init(backend="numpy", engine=args.engine)
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"ranks": comm.size, "engine": comm.engine, "dtypes": {}}
    start, stop = dist.shard(args.batch_size, comm.rank, comm.size)
    for dtype in ("float32", "float64"):
        flat = np.ones(PARAMS, dtype=dtype)
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        result["dtypes"][dtype] = {
            "allreduce_ms": _median_ms(
                comm, lambda flat=flat: comm.allreduce_(flat), args.steps, args.repeats
            ),
            "average_gradients_ms": _median_ms(
                comm,
                lambda grads=grads: dist.average_gradients(
                    comm, grads, stop - start, args.batch_size
                ),
                args.steps,
                args.repeats,
            ),
        }
    weights = [
        (rng.standard_normal((b, a)).astype(np.float32) * np.sqrt(2 / a), np.zeros(b, np.float32))
        for a, b in zip(SIZES[:-1], SIZES[1:])
    ]
    model = NumpyReference(weights)
    x, y = make_data(stop - start, seed=comm.rank)
    result["local_batch"] = stop - start
    result["compute_ms"] = _median_ms(comm, lambda: model.step(x, y), args.steps, args.repeats)
    if comm.is_root:
        Path(args.worker).write_text(json.dumps(result))
    comm.close()


def fit_worker(args: argparse.Namespace) -> None:
    """One rank of the end-to-end run: fit with distributed=comm, timing the exchange."""
    import ailib
    import ailib.distributed as dist
    from ailib import zoo

    from .contenders import make_data

    comm = dist.init(backend="numpy", engine=args.engine)
    exchange = {"seconds": 0.0, "steps": 0}
    reduce = dist.DataParallel.reduce_gradients

    def timed(self: Any, model: Any, n_local: int) -> int:
        start = time.perf_counter()
        try:
            return reduce(self, model, n_local)
        finally:
            exchange["seconds"] += time.perf_counter() - start
            exchange["steps"] += 1

    dist.DataParallel.reduce_gradients = timed  # this benchmark process only
    x, y = make_data(args.fit_rows, seed=0)
    model = ailib.Sequential(
        zoo.mlp(784, SIZES[1:-1], SIZES[-1]), backend="numpy", seed=0, input_shape=(784,)
    )
    epochs: list[float] = []

    class Clock(ailib.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict) -> None:
            exchange.update(seconds=0.0, steps=0)

        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            epochs.append(logs["seconds"])

    history = model.fit(
        x,
        y,
        optimizer=ailib.optimizers.Adam(1e-3),
        epochs=args.fit_epochs,
        batch_size=args.batch_size,
        callbacks=[Clock()],
        distributed=comm,
        verbose=False,  # timed: no progress display
    )
    seconds, steps = epochs[-1], max(1, exchange["steps"])
    result = {
        "ranks": comm.size,
        "engine": comm.engine,
        "rows": args.fit_rows,
        "samples_per_s": args.fit_rows / seconds,
        "step_ms": seconds / steps * 1e3,
        "exchange_ms": exchange["seconds"] / steps * 1e3,
        "loss": history["loss"][-1],
    }
    if comm.is_root:
        Path(args.worker).write_text(json.dumps(result))
    comm.close()


# -- the runner --------------------------------------------------------------------------------
def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def run_job(
    ranks: int, engine: str, args: argparse.Namespace, fit: bool = False
) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        command = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "benchmarks.distributed"]
        command += ["--worker", str(out), "--engine", engine, "--steps", str(args.steps)]
        command += ["--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
        command += ["--fit-rows", str(args.fit_rows), "--fit-epochs", str(args.fit_epochs)]
        command += ["--fit"] if fit else []
        env = {**os.environ, **RANK_ENV}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if run.returncode != 0 or not out.exists():
            print(f"  {ranks} ranks, {engine}: failed\n{run.stdout}{run.stderr}", file=sys.stderr)
            return None
        return json.loads(out.read_text())


def markdown(
    rows: list[dict[str, Any]],
    fits: list[dict[str, Any]],
    info: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    lines = [
        "# Data-parallel overhead: gradient exchange vs computation per step",
        "",
        f"MLP {'-'.join(map(str, SIZES))} ({PARAMS:,} parameters), global batch "
        f"{args.batch_size}; {info.get('cores', '?')} cores ({info.get('cpu', '?')}), one BLAS "
        f"thread per rank. Median of {args.repeats} blocks of {args.steps} steps, rank 0.",
        "",
        *(f"**Note:** {note}." for note in machine.warnings(info)),
        "",
        "| ranks | engine | allreduce f32 (ms) | allreduce f64 (ms) | average_gradients f32 (ms) "
        "| compute f32 (ms, local batch) | exchange / compute |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        f32, f64 = r["dtypes"]["float32"], r["dtypes"]["float64"]
        ratio = f32["average_gradients_ms"] / r["compute_ms"] if r["compute_ms"] else float("nan")
        lines.append(
            f"| {r['ranks']} | {r['engine']} | {f32['allreduce_ms']:.3f} | "
            f"{f64['allreduce_ms']:.3f} | {f32['average_gradients_ms']:.3f} | "
            f"{r['compute_ms']:.2f} ({r['local_batch']}) | {ratio:.2f} |"
        )
    lines += [
        "",
        "With one rank the exchange is skipped (a communicator of size 1 does nothing).",
        "",
        "## Training throughput and scaling efficiency",
        "",
        f"`Sequential.fit(..., distributed=comm)`: the same MLP in float32, Adam, "
        f"{args.fit_rows:,} synthetic rows, global batch {args.batch_size}; the last of "
        f"{args.fit_epochs} epochs. Efficiency = samples/s at N ranks / (N x samples/s at 1 "
        "rank). Exchange: the packed gradient allreduce of each step "
        "(`DataParallel.reduce_gradients`); the rest of the step is forward, backward, update "
        "and batching on the rank's share. The exchange includes waiting for the slowest rank, "
        "so on shared cores it is larger than the bare allreduce above.",
        "",
        "| ranks | engine | samples/s | speed-up | efficiency | step (ms) | exchange (ms/step) "
        "| rest (ms/step) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = {f["engine"]: f["samples_per_s"] for f in fits if f["ranks"] == 1}
    one = next(iter(base.values()), float("nan"))
    for f in fits:
        speedup = f["samples_per_s"] / one
        lines.append(
            f"| {f['ranks']} | {f['engine']} | {f['samples_per_s']:,.0f} | {speedup:.2f} | "
            f"{speedup / f['ranks']:.0%} | {f['step_ms']:.2f} | {f['exchange_ms']:.2f} | "
            f"{f['step_ms'] - f['exchange_ms']:.2f} |"
        )
    lines += [
        "",
        f"With {info.get('cores', '?')} cores, ranks beyond the core count share them: there "
        "the table shows what data-parallel training costs, not what it gains. On a machine "
        "with a core (or GPU) per rank the rest of the step shrinks with the share while the "
        "exchange stays about the size of the model.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts")
    parser.add_argument("--engines", default="mpi,torch", help="mpi and/or torch (Gloo)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--fit-rows", type=int, default=8192, help="rows of the fit runs")
    parser.add_argument("--fit-epochs", type=int, default=2, help="the last one is timed")
    parser.add_argument("--no-fit", action="store_true", help="skip the fit runs")
    parser.add_argument("--out", default=str(RESULTS / "distributed"))
    parser.add_argument("--fit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run as one rank
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        fit_worker(args) if args.fit else worker(args)
        return
    engines = args.engines.split(",")
    if "torch" in engines:
        try:
            import torch.distributed  # noqa: F401
        except ImportError:
            print("torch is not installed: measuring the MPI engine only", file=sys.stderr)
            engines.remove("torch")
    info = machine.describe()  # before the jobs: the load average says how busy the machine was
    rows = []
    for ranks in (int(r) for r in args.ranks.split(",")):
        for engine in engines if ranks > 1 else engines[:1]:
            print(f"{ranks} ranks, {engine} ...", file=sys.stderr, flush=True)
            row = run_job(ranks, engine, args)
            if row is not None:
                rows.append(row)
    fits = []
    for ranks in [] if args.no_fit else (int(r) for r in args.ranks.split(",")):
        print(f"fit: {ranks} ranks, {engines[0]} ...", file=sys.stderr, flush=True)
        row = run_job(ranks, engines[0], args, fit=True)
        if row is not None:
            fits.append(row)
    report = markdown(rows, fits, info, args)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"machine": info, "rows": rows, "fits": fits}, indent=1)
    )
    out.with_suffix(".md").write_text(report)


if __name__ == "__main__":
    main()
