"""`DataParallel`: what `fit(..., distributed=comm)` does differently on each rank, behind the few
calls the training loop (`ailib.training.Trainer`) makes. The loop itself stays the one of a
single process: this class decides which rows each rank sees and sums what must be summed.

Per run (`start`): rank 0's weights, buffers and shuffling state reach every rank.
Per global batch (`shards`): each rank takes its `shard` of the rows, in the order every rank
drew from the same generator.
Per step (`reduce_gradients`): the mean gradient over the global batch, one packed allreduce.
Per read of the losses (`reduce_losses`, `reduce_hits`): (sum, count) over the ranks.
Per epoch (`end_epoch`): the ranks' running statistics (BatchNorm) averaged.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from typing import Any, Iterable, Iterator

import numpy as np  # host values only: the bytes of a broadcast object

from ..backends import Random
from ._arrays import allreduce_arrays, average_gradients, broadcast_arrays, shard
from ._comm import Communicator
from ._faults import abort_on_error

#: added (times the rank) to the key of every layer's random stream on ranks other than 0, so
#: that Dropout draws different masks for the rows of different ranks (a 64-bit golden ratio)
RANK_STREAM_STEP = 0x9E3779B97F4A7C15


def broadcast_object(comm: Communicator, value: Any, root: int = 0) -> Any:
    """Rank ``root``'s ``value`` (anything `json` writes: numbers, strings, lists, dicts, big
    ints) on every rank; what the other ranks pass is ignored. Two collectives: the length,
    then the bytes."""
    if comm.size == 1:
        return value
    data = json.dumps(value).encode("utf-8") if comm.rank == root else b""
    length = comm.allreduce_values([len(data)])[0]
    buffer = np.zeros(length, dtype=np.uint8)
    if comm.rank == root:
        buffer[:] = np.frombuffer(data, dtype=np.uint8)
    buffer = comm.broadcast_(buffer, root)
    return json.loads(bytes(buffer).decode("utf-8"))


class RanksDiffer(ValueError):
    """The ranks of one data-parallel run were given different data or settings. Every rank
    raises it alike (from values shared over the ranks), so rank 0 alone reports it."""

    on_every_rank = True


def _batches_settings(data: Any) -> dict[str, Any]:
    """What every rank's batches must share: rows, batches, the first and last batch's rows
    (arrays: every batch but the last has the first's size) and shuffling; what is known."""
    bounds = getattr(data, "bounds", None)
    found: dict[str, Any] = {}
    if bounds:
        found["rows"] = sum(stop - start for start, stop in bounds)
        found["batch_size"] = bounds[0][1] - bounds[0][0]
        found["last_batch"] = bounds[-1][1] - bounds[-1][0]
        found["shuffle"] = bool(getattr(data, "shuffle", False))
        found["data"] = _fingerprint(data)
    if getattr(data, "steps", None) is not None:
        found["batches"] = data.steps
    return found


def _fingerprint(data: Any) -> str:
    """A digest of three rows (first, middle, last) of every array of ``data`` (x, then y):
    equal on ranks given the same data, different where a rank holds other rows of the same
    count (a data set split by hand before fit, which shards every global batch itself, or
    another data set). Three small reads from the device per array, once per run."""
    arrays = [a for part in (data.x, data.y) for a in (part if isinstance(part, list) else [part])]
    n = arrays[0].shape[0]
    picked = sorted({0, n // 2, n - 1})
    digest = hashlib.sha256()
    for a in arrays:
        for i in picked:
            row = np.ascontiguousarray(data.backend.to_host(a[i, ...]))
            digest.update(f"{row.dtype.str}{row.shape}".encode())
            digest.update(row.tobytes())
    return f"rows {', '.join(map(str, picked))}: sha256 {digest.hexdigest()[:16]}"


def _rows(a: Any, start: int, stop: int) -> Any:
    if isinstance(a, list):
        return [item[start:stop, ...] for item in a]
    return a[start:stop, ...]


def _count(a: Any) -> int:
    return (a[0] if isinstance(a, list) else a).shape[0]


class DataParallel:
    """Data-parallel training over ``comm``: every rank holds the model, trains on its share of
    each global batch, and applies the same update (see docs/distributed.md).

    What one step computes, with N rows in the global batch and n_r of them on rank r
    (`shard`): each rank's backward gives its mean gradient g_r; `reduce_gradients` replaces it
    with Σ_r (n_r/N) g_r = (1/N) Σ_i ∇E_i, the gradient one process computes on the whole
    batch, so N ranks follow one process's weights up to rounding.

    BatchNorm: in training mode each rank normalises with the statistics of its own rows (as
    PyTorch's DistributedDataParallel without SyncBatchNorm); the running statistics are
    averaged over the ranks at the end of every epoch, so evaluation, checkpoints and the saved
    model use one set. With BatchNorm the result therefore differs from one process's (which
    normalises over the whole batch); without it, it does not.

    Attributes:
        comm: the `Communicator`.
        global_rows: the number of rows of the current global batch (set by `shards`).
        samples: the rows of every global batch yielded so far in this pass.
    """

    def __init__(self, comm: Communicator) -> None:
        if not isinstance(comm, Communicator):
            raise TypeError(
                f"fit: distributed must be an ailib.distributed.Communicator (from "
                f"ailib.distributed.init()), received {type(comm).__name__}"
            )
        self.comm = comm
        self.global_rows = 0
        self.samples = 0

    @property
    def is_root(self) -> bool:
        return self.comm.is_root

    def guard(self) -> Any:
        """The context training runs in: with several ranks, an error on one ends every rank
        (`abort_on_error`) instead of leaving the others waiting in their next allreduce."""
        return abort_on_error(self.comm) if self.comm.size > 1 else nullcontext()

    # -- once per run --------------------------------------------------------------------------
    def start(
        self,
        model: Any,
        data: Any,
        initial_epoch: int,
        who: str,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Make every rank start from rank 0's state: its weights and buffers, its shuffling
        generator (so every rank draws the same permutations even without a seed) and its
        random streams (then offset per rank, see `RANK_STREAM_STEP`). Checks first that every
        rank resumes from the same epoch (a checkpoint every rank can read), then that every
        rank trains alike (`check_same_run`): the shape of ``data``'s batches and ``settings``
        (JSON-able values: epochs, the optimizer's, ...)."""
        comm = self.comm
        epochs = comm.allreduce_values([initial_epoch, initial_epoch * initial_epoch])
        if epochs[0] * epochs[0] != comm.size * epochs[1]:  # not all equal (Cauchy-Schwarz)
            raise ValueError(
                f"{who}: the ranks resume from different epochs (rank {comm.rank}: epoch "
                f"{initial_epoch}); the checkpoint file must be readable by every rank (a "
                f"shared file system), or none of them"
            )
        self.check_same_run({**_batches_settings(data), **(settings or {})}, who)
        if not getattr(model, "built", True):
            x = getattr(data, "x", None)
            if x is None:
                raise ValueError(
                    f"{who}: distributed training broadcasts rank 0's weights before the first "
                    f"step, but the model's layers are not built yet and the data is an "
                    f"iterable; give the model its input shape (input_shape=..., ailib.Input) "
                    f"or call model.build([...]) first"
                )
            xs = x if isinstance(x, list) else [x]
            model.build([tuple(a.shape[1:]) for a in xs])
        arrays = [
            a for layer in model.layers for a in (*layer.params.values(), *layer.buffers.values())
        ]
        with model.backend.context():
            arrays = broadcast_arrays(comm, arrays)
        it = iter(arrays)
        for layer in model.layers:
            for group in (layer.params, layer.buffers):
                for name in group:
                    group[name] = next(it)
        sources = [model.rng] + [
            layer.rng for layer in model.layers if isinstance(getattr(layer, "rng", None), Random)
        ]
        states = broadcast_object(comm, [source.get_state() for source in sources])
        for k, (source, state) in enumerate(zip(sources, states)):
            source.set_state(state)
            if k and comm.rank:
                source.key = (source.key + comm.rank * RANK_STREAM_STEP) % 2**63

    def check_same_run(
        self,
        settings: dict[str, Any],
        who: str,
        advice: str = (
            "every rank must call fit with the same data (rows and batches), epochs and "
            "optimizer settings"
        ),
    ) -> None:
        """Refuse, on every rank alike, a run whose ``settings`` (JSON-able values) differ from
        rank 0's: ranks with other rows, batches, epochs or optimizer settings would exchange
        gradients of other batches (silently wrong weights) or call mismatched collectives
        (an MPI error that names no cause, or a wait until the watchdog ends the job). Three
        small collectives: rank 0's settings, then which settings and which ranks differ.
        ``advice`` ends the message: what every rank must do alike."""
        comm = self.comm
        if comm.size == 1:
            return
        mine = json.loads(json.dumps(settings))  # as rank 0's arrive: tuples become lists
        root = broadcast_object(comm, mine)
        keys = list(root)  # the same keys, in the same order, on every rank
        differ = [k for k in keys if mine.get(k) != root[k]]
        extra = any(k not in root for k in mine)
        flags = comm.allreduce_values(
            [int(k in differ) for k in keys]
            + [int(r == comm.rank and (bool(differ) or extra)) for r in range(comm.size)]
        )
        ranks = [r for r in range(comm.size) if flags[len(keys) + r]]
        if not ranks:
            return
        # from the reduced flags only: the same message on every rank
        names = sorted(k for k, flag in zip(keys, flags) if flag)
        which = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"
        said = ", ".join(f"{k}={root[k]!r}" for k in keys if k in names or not names)
        raise RanksDiffer(
            f"{who}: the ranks differ in {', '.join(names) or 'their settings'} ({which} of "
            f"{comm.size} "
            f"{'differs' if len(ranks) == 1 else 'differ'} from rank 0's {said}); {advice}"
            + (
                " (give every rank the whole data set: fit gives each rank its share of every "
                "global batch itself)"
                if "data" in names
                else ""
            )
        )

    def check_epoch(self, epoch: int, lr: float, who: str) -> None:
        """Refuse, on every rank alike, an epoch whose learning rate (after the callbacks'
        ``on_epoch_begin``: a schedule, ReduceLROnPlateau) differs from rank 0's: the ranks
        would apply one reduced gradient with different steps, and their weights would drift
        apart silently. Three small collectives per epoch (`check_same_run`)."""
        if self.comm.size == 1:
            return
        self.check_same_run(
            {"lr": float(lr)},
            f"{who}: epoch {epoch}",
            "every rank must change the learning rate alike (the same lr_schedule and "
            "callbacks that set it)",
        )

    # -- per global batch ----------------------------------------------------------------------
    def shards(self, batches: Iterable[Any], *, training: bool = True) -> Iterator[Any]:
        """This rank's rows of each global batch of ``batches``: rows ``shard(N, rank, size)``.

        Training refuses a global batch with fewer rows than ranks (a rank would have none);
        evaluation skips a rank's empty share (it then adds nothing to the sums)."""
        comm, self.samples = self.comm, 0
        for xb, yb in batches:
            n = _count(yb)
            start, stop = shard(n, comm.rank, comm.size)
            self.global_rows = n
            self.samples += n
            if start == stop:
                if training:
                    raise ValueError(
                        f"fit: a global batch of {n} rows cannot be shared by {comm.size} "
                        f"ranks (each needs at least one row); use a batch_size of at least "
                        f"{comm.size}, or drop_last=True if it is the last, short batch"
                    )
                continue
            if start == 0 and stop == n:
                yield xb, yb
            else:
                yield _rows(xb, start, stop), _rows(yb, start, stop)

    def check_batches(self, bounds: Iterable[tuple[int, int]], who: str) -> None:
        """Refuse, before training, batches (``(start, stop)`` rows) smaller than the group."""
        small = [stop - start for start, stop in bounds if stop - start < self.comm.size]
        if small:
            raise ValueError(
                f"{who}: with {self.comm.size} ranks every global batch needs at least "
                f"{self.comm.size} rows, but one has {small[0]} (batch_size is the global "
                f"batch); use a larger batch_size, or drop_last=True for a short last batch"
            )

    # -- per step --------------------------------------------------------------------------------
    def reduce_gradients(self, model: Any, n_local: int) -> int:
        """Replace every trainable layer's gradients (the mean over this rank's ``n_local``
        rows) by the mean over the global batch (`average_gradients`: one packed allreduce);
        returns the global batch's rows."""
        todo = [(layer, name) for layer in model.layers if layer.trainable for name in layer.grads]
        with model.backend.context():
            grads = average_gradients(
                self.comm, [layer.grads[name] for layer, name in todo], n_local, self.global_rows
            )
        for (layer, name), grad in zip(todo, grads):
            layer.grads[name] = grad
        return self.global_rows

    def reduce_losses(
        self, values: list[float], sizes: list[int], per_step: bool
    ) -> tuple[list[float], list[int]]:
        """The losses of every rank's rows, as `Meter` reads them: ``values[k]`` is a mean over
        ``sizes[k]`` rows. ``per_step`` (training: every rank read the same steps): the mean of
        each step over the global batch, Σ_r v_r n_r / Σ_r n_r; else one mean over all the rows
        read (evaluation, where ranks may have read different numbers of batches)."""
        if self.comm.size == 1:
            return values, sizes
        if per_step:
            if not values:
                return values, sizes
            totals = self.comm.allreduce_values(
                [v * n for v, n in zip(values, sizes)] + [int(n) for n in sizes]
            )
            k = len(values)
            counts = totals[k:]
            return [s / c for s, c in zip(totals[:k], counts)], counts
        loss_sum, count = self.comm.allreduce_values(
            [sum(v * n for v, n in zip(values, sizes)), int(sum(sizes))]
        )
        return ([loss_sum / count], [count]) if count else ([], [])

    def reduce_hits(self, hits: int | None, samples: int) -> tuple[int | None, int]:
        """(correct predictions, samples) summed over the ranks; None if no rank counted."""
        if self.comm.size == 1:
            return hits, samples
        total, count, counted = self.comm.allreduce_values(
            [0 if hits is None else hits, samples, int(hits is not None)]
        )
        return (total if counted else None), count

    # -- per epoch ---------------------------------------------------------------------------------
    def end_epoch(self, model: Any) -> None:
        """Average every layer's buffers (BatchNorm's running statistics, which each rank moved
        with its own rows) over the ranks: one packed allreduce."""
        if self.comm.size == 1:
            return
        todo = [(layer, name) for layer in model.layers for name in layer.buffers]
        if not todo:
            return
        scale = 1.0 / self.comm.size
        with model.backend.context():
            scaled = [layer.buffers[name] * scale for layer, name in todo]
            summed = allreduce_arrays(self.comm, scaled)
        for (layer, name), value in zip(todo, summed):
            layer.buffers[name] = value
