"""One rank of a multi-process test, started by tests/test_distributed.py under ``mpiexec -n N``
or with torchrun's environment. Writes what it saw to ``OUT/rank-<r>.json`` when it finishes;
the test compares the ranks' files with a NumPy reference.

    python tests/distributed_worker.py SCENARIO OUT [--engine E] [--timeout S] [--backends a,b]

Scenarios: collectives, fail, hang, die, mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import numpy as np

import ailib
import ailib.distributed as dist

#: global batch sizes for the shard and packed-gradient checks (7 and 2 do not divide by 2 or 3)
BATCHES = (0, 1, 2, 7, 10, 11)


def per_sample_grads(n: int) -> list[np.ndarray]:
    """Per-sample gradients of a pretend model for a global batch of n rows: the same on every
    rank (same seed), three arrays of two dtypes."""
    rng = np.random.default_rng(n)
    return [
        rng.standard_normal((n, 2, 3)),
        rng.standard_normal((n, 4)),
        rng.standard_normal((n, 3)).astype(np.float32),
    ]


def collectives(comm: dist.Communicator, backends: list[str]) -> dict:
    r, size = comm.rank, comm.size
    out: dict = {"rank": r, "size": size, "engine": comm.engine, "skipped": {}}
    out["values"] = comm.allreduce_values({"count": r + 1, "loss": 0.25 * r, "flag": r == 0})
    out["values_list"] = comm.allreduce_values([r, 1.5])
    out["shards"] = {n: dist.shard(n, r, size) for n in BATCHES}
    out["allreduce"], out["broadcast"], out["average"], out["params"] = {}, {}, {}, {}
    out["params_placed"] = {}
    for name in backends:
        reason = ailib.backends.why_unavailable(name)
        if reason is not None:
            out["skipped"][name] = reason
            continue
        be = ailib.backends.get(name)
        for dtype in ("float32", "float64"):
            key = f"{name}/{dtype}"
            x = be.asarray(np.arange(6.0).reshape(2, 3) * (r + 1) + r, dtype=dtype)
            y = comm.allreduce_(x)
            out["allreduce"][key] = {
                "values": be.to_host(y).tolist(),
                "dtype": be.dtype_name(y.dtype),
                "same_device": be.device_of(y) == be.device,
                "in_place": y is x,
            }
            b = comm.broadcast_(be.asarray(np.full(3, 10.0 + r), dtype=dtype), root=size - 1)
            out["broadcast"][key] = be.to_host(b).tolist()
        average = {}
        for n in BATCHES[1:]:
            start, stop = dist.shard(n, r, size)
            # a rank with no rows holds NaN (a mean over nothing): it must contribute zeros
            mine = [
                be.asarray(
                    g[start:stop].mean(axis=0)
                    if stop > start
                    else np.full(g.shape[1:], np.nan, g.dtype)
                )
                for g in per_sample_grads(n)
            ]
            got = dist.average_gradients(comm, mine, stop - start, n)
            average[n] = [
                {
                    "values": be.to_host(g).tolist(),
                    "dtype": be.dtype_name(g.dtype),
                    "same_device": be.device_of(g) == be.device,
                }
                for g in got
            ]
        out["average"][name] = average
        params = [be.asarray(np.full((2, 2), float(r))), be.asarray(np.arange(3) + r)]
        got = dist.broadcast_arrays(comm, params)
        out["params"][name] = [be.to_host(p).tolist() for p in got]
        out["params_placed"][name] = all(be.device_of(p) == be.device for p in got)
    return out


def faults(comm: dist.Communicator, scenario: str) -> dict:
    """Rank 1 raises, dies or hangs after a first collective; the others go on to a second."""
    comm.allreduce_(np.ones(4))  # every rank is up
    if comm.rank == 1 and scenario == "fail":
        raise ValueError("rank 1 broke on purpose")
    if comm.rank == 1 and scenario == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if comm.rank == 1 and scenario == "hang":
        time.sleep(600)
    comm.allreduce_(np.ones(4))
    return {"rank": comm.rank, "finished": True}


def mismatch(comm: dist.Communicator) -> dict:
    """Rank 1 built a different model: every rank must refuse to broadcast."""
    shapes = [(2, 2), (3,)] if comm.rank != 1 else [(2, 2), (4,)]
    try:
        dist.broadcast_arrays(comm, [np.zeros(s) for s in shapes])
    except ValueError as exc:
        return {"rank": comm.rank, "error": str(exc)}
    return {"rank": comm.rank, "error": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["collectives", "fail", "hang", "die", "mismatch"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--engine", default=None)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--backends", default="numpy")
    parser.add_argument(
        "--then-die", action="store_true", help="after collectives, run the die scenario"
    )
    args = parser.parse_args()
    comm = dist.init(engine=args.engine, timeout=args.timeout)
    with dist.abort_on_error(comm):
        if args.scenario == "collectives":
            result = collectives(comm, args.backends.split(","))
        elif args.scenario == "mismatch":
            result = mismatch(comm)
        else:
            result = faults(comm, args.scenario)
        (args.out / f"rank-{comm.rank}.json").write_text(json.dumps(result))
        if args.then_die:  # one torch job checks both (torch takes seconds to import)
            faults(comm, "die")
    comm.close()


if __name__ == "__main__":
    main()
