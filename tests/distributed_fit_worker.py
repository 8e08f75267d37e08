"""One rank of a data-parallel `fit`, started by tests/test_distributed_fit.py under ``mpiexec -n
N``. Writes its final weights, history and what it printed to ``OUT/rank-<r>.json``; the test
compares them with one process trained on the same global batches (`train` here, in-process).

    python tests/distributed_fit_worker.py KIND OUT [--epochs E] [--checkpoint P] [--resume]
        [--fail] [--diverge] [--interrupt] [--differ] [--other-rows] [--other-schedule]

KIND: "sequential" (an MLP, Adam, validation data, a checkpoint) or "graph" (a residual graph
model, SGD with momentum). ``--fail``: rank 1 raises in a callback during the first epoch; ``--diverge``: every rank's loss
becomes NaN at step 2; ``--interrupt``: every rank is interrupted at step 2 (Ctrl-C);
``--differ``: rank 1 trains on one row fewer (the same number of batches, a shorter last one)
with another learning rate, which fit refuses before the first step; ``--other-rows``: rank 1
holds as many rows as rank 0, but others (a data set split by hand), which fit refuses before
the first step too; ``--other-schedule``: rank 1 halves the learning rate from epoch 2 on, which
fit refuses at the start of epoch 2.
"""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

import ailib
import ailib.distributed as dist
from ailib.callbacks import Callback
from ailib.layers import Add, BatchNorm1D, Dense, ReLU, Tanh

#: 29 rows in global batches of 8 (8, 8, 8, 5) or 7 (7, 7, 7, 8): shares of 4/4 and 3/2 rows on
#: 2 ranks, 3/3/2 and 2/2/1 (sequential), 3/2/2 and 3/3/2 (graph) on 3; BatchNorm, which
#: needs 2 rows per rank, gets batches of 10
ROWS, FEATURES, CLASSES = 29, 6, 3
BATCH = {"sequential": 8, "graph": 7, "batchnorm": 10}


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, validation x, validation y): the same on every rank."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((ROWS + 11, FEATURES))
    y = rng.integers(0, CLASSES, ROWS + 11)
    return x[:ROWS], y[:ROWS], x[ROWS:], y[ROWS:]


def model(kind: str, seed: int | None = 3) -> Any:
    """A float64 model: an MLP ("sequential") or a residual graph ("graph")."""
    if kind == "sequential":
        layers = [Dense(FEATURES, 16), Tanh(), Dense(16, 8), ReLU(), Dense(8, CLASSES)]
        return ailib.Sequential(layers, backend="numpy", dtype="float64", seed=seed)
    if kind == "batchnorm":
        layers = [Dense(FEATURES, 8), BatchNorm1D(8), ReLU(), Dense(8, CLASSES)]
        return ailib.Sequential(layers, backend="numpy", dtype="float64", seed=seed)
    x = ailib.Input((FEATURES,))
    h = Tanh()(Dense(12)(x))
    h = Add()([h, ReLU()(Dense(12)(h))])
    return ailib.Model(x, Dense(CLASSES)(h), backend="numpy", dtype="float64", seed=seed)


class NaNWeightsEverywhere(Callback):
    """Every rank's first layer becomes NaN at step 2: the reduced loss diverges on all ranks."""

    def on_batch_begin(self, step: int, logs: dict) -> None:
        if step == 2:
            layer = self.model.layers[0]
            layer.params["W"] = layer.params["W"] * float("nan")


class InterruptEverywhere(Callback):
    """Ctrl-C as a launcher delivers it: every rank is interrupted (here at step 2)."""

    def on_batch_end(self, step: int, logs: dict) -> None:
        if step == 2:
            raise KeyboardInterrupt


class FailOnRank1(Callback):
    def on_batch_end(self, step: int, logs: dict) -> None:
        if self.trainer.parallel.comm.rank == 1 and step == 2:
            raise RuntimeError("rank 1 broke in a callback on purpose")


def halved(epoch: int) -> float:
    """Adam's 0.01 in epoch 1, 0.005 from epoch 2 on (`LearningRateScheduler` counts from 1)."""
    return 0.01 if epoch == 1 else 0.005


def train(
    kind: str,
    epochs: int,
    comm: dist.Communicator | None = None,
    checkpoint: str | None = None,
    resume: bool = False,
    callbacks: tuple = (),
    seed: int | None = 3,
    differ: bool = False,
    other_rows: bool = False,
    lr_schedule: Any = None,
) -> tuple[Any, dict]:
    """(model, history) of the fit the test checks: on one process with ``comm=None``.
    ``differ``: one row fewer and another learning rate; ``other_rows``: the rows in another
    order (what a rank must not do)."""
    x, y, xv, yv = data()
    if differ:
        x, y = x[:-1], y[:-1]
    if other_rows:
        x, y = x[::-1], y[::-1]
    net = model(kind, seed)
    optimizers = ailib.optimizers
    lr = 0.02 if differ else 0.01
    optimizer = optimizers.SGD(lr=0.1, momentum=0.9) if kind == "graph" else optimizers.Adam(lr)
    history = net.fit(
        x,
        y,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=BATCH.get(kind, 8),
        validation_data=(xv, yv) if kind == "sequential" else None,
        checkpoint=checkpoint,
        resume=resume,
        verbose=True,
        log_every=2,
        callbacks=list(callbacks),
        lr_schedule=lr_schedule,
        distributed=comm,
    )
    return net, history


def weights(net: Any) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in net.params.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["sequential", "graph"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--diverge", action="store_true")
    parser.add_argument("--interrupt", action="store_true")
    parser.add_argument("--differ", action="store_true")
    parser.add_argument("--other-rows", action="store_true")
    parser.add_argument("--other-schedule", action="store_true")
    args = parser.parse_args()
    comm = dist.init(backend="numpy", timeout=60)
    printed = io.StringIO()
    with redirect_stdout(printed), redirect_stderr(printed):  # fit reports on stderr
        net, history = train(
            args.kind,
            args.epochs,
            comm,
            args.checkpoint,
            args.resume,
            callbacks=(FailOnRank1(),) * args.fail
            + (NaNWeightsEverywhere(),) * args.diverge
            + (InterruptEverywhere(),) * args.interrupt,
            seed=None if args.resume else 3 + comm.rank,  # rank 0's weights must win
            differ=args.differ and comm.rank == 1,
            other_rows=args.other_rows and comm.rank == 1,
            lr_schedule=halved if args.other_schedule and comm.rank == 1 else None,
        )
        bn, _ = train("batchnorm", 1, comm, seed=3 + comm.rank)
    history = {k: v for k, v in history.items() if k != "seconds"}
    result = {
        "rank": comm.rank,
        "size": comm.size,
        "engine": comm.engine,
        "weights": weights(net),
        "history": history,
        "printed": printed.getvalue(),
        "batchnorm": {
            "weights": weights(bn),
            "buffers": {
                f"{i}/{k}": np.asarray(v).tolist()
                for i, layer in enumerate(bn.layers)
                for k, v in layer.buffers.items()
            },
        },
    }
    (args.out / f"rank-{comm.rank}.json").write_text(json.dumps(result))
    comm.close()


if __name__ == "__main__":
    main()
