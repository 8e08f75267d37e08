"""The training loop: `train_step` (the seed's four steps, docs/math.md §1), `fit` (the
"repeat": epochs of mini-batches, with callbacks), `evaluate` and `predict`.

They work on any model that offers (`Model` and `Sequential` do):
- ``backend``, ``xp``, ``dtype``; ``layers``: its layers, each with ``params``, ``grads``,
  ``buffers`` and ``trainable`` (``layers[0]`` is the first applied, for the input check);
- ``forward(x) -> y`` and ``backward(dE/dY, input_grad=False)`` filling every layer's grads;
- ``train(mode=True)``, ``eval()`` and ``training`` (the current mode);
- ``rng`` (a `Random`, for shuffling); attributes ``loss``, ``optimizer`` and
  ``stop_training``, which fit sets;
- optionally (`ailib.Model` has them): ``infer(x)`` (forward keeping no backprops, for
  predict and evaluate), ``loss_for(loss)`` (the loss object; several outputs sum one loss
  each), ``check_input_shape(x, who, k)``, ``num_classes(k)``, and ``single_input`` /
  ``single_output`` with ``inputs`` / ``outputs``: x and y are then lists of arrays.

Data: arrays (NumPy, moved to the device once, or arrays of the model's backend), shuffled on
the device each epoch; or an iterable of (x, y) batches for data that does not fit the device
(`fit` explains re-iterable and one-shot sources). Losses stay on the device and are read back
every ``log_every`` steps, never per step.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

from . import compiling, losses, optimizers
from ._checks import positive_int, whole
from .batches import (
    ArrayBatches,
    IterableBatches,
    batches_of,
    check_inputs,
    check_targets,
    model_inputs,
    rows,
)
from .callbacks import (
    Callback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressEvents,
    extended,
)
from .distributed import Communicator, DataParallel
from .progress import ProgressBar

Progress = Callable[[dict[str, Any]], None]

#: rows per forward pass of `predict` and `evaluate` unless told otherwise: memory is that of
#: one batch, whatever the number of rows (zoo.cnn: about 0.3 GB of im2col columns at 1024 rows)
INFERENCE_BATCH = 1024


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite during `fit`; the message gives the epoch and step."""

    #: under `fit(distributed=...)` every rank judges the same losses (summed over the ranks)
    #: and raises this alike: rank 0 alone reports it (`ailib.distributed.abort_on_error`)
    on_every_rank = True


# -- the seed's four steps ---------------------------------------------------------------------
def train_step(
    model: Any,
    x: Any,
    y: Any,
    loss: losses.Loss,
    optimizer: optimizers.Optimizer,
    *,
    update: bool = True,
    compiled: bool = True,
) -> tuple[Any, Any]:
    """One iteration of the seed's loop on a batch already on the device; returns (E, Y): the
    error (0-d, on the device) and the model's output. ``update=False`` stops after backward,
    leaving dE/dW in the layers' grads (gradient accumulation). Where the backend compiles
    (JAX), the same four steps run as one compiled call (`ailib.compiling`; off with
    ``model.compile_steps = False``, or for this call with ``compiled=False``).

    The labels are not checked here (that would read them back from the device at every step):
    `fit` and `evaluate` check them once, against the model's classes. Integer labels out of
    range give an IndexError on some backends and, on JAX, whose gathers clamp, a wrong loss
    and gradient without an error."""
    compiled = compiling.step_for(model, loss, optimizer) if update and compiled else None
    if compiled is not None:
        return compiled(x, y)
    with model.backend.context():  # CuPy: kernels and allocations on the model's GPU
        y_pred = model.forward(x)  # 1-2. feed input, forward propagate
        error, grad = loss.value_and_grad(y_pred, y, check=False)  # 3. calculate error
        model.backward(grad, input_grad=False)  # 4. backpropagate
        if update:
            optimizer.step(model.layers)  #    and step the weights
    return error, y_pred


class GradientAccumulator:
    """Sums the gradients of ``k`` batches so that the optimizer steps once on their mean.

    With batch sizes n₁…n_k and a loss that is a mean over samples, the gradient of the k
    batches taken as one batch is Σᵢ (nᵢ/Σn)·gᵢ; `add` keeps Σᵢ nᵢ·gᵢ on the device and `flush`
    puts the quotient into the layers' grads. (BatchNorm's statistics and Dropout's masks
    still come from each small batch.)
    """

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.sums: dict[tuple[Any, str], Any] = {}
        self.count = self.samples = 0

    def add(self, layers: Sequence[Any], n: int) -> bool:
        """Add one batch of ``n`` samples; True when k batches are in and flushed."""
        for layer in layers:
            if not layer.trainable:
                continue
            for name, grad in layer.grads.items():
                key = (layer, name)
                if key in self.sums:
                    total = self.sums[key]
                    total += n * grad
                    self.sums[key] = total
                else:
                    self.sums[key] = grad * n  # a new array: the layer may reuse its own
        self.count += 1
        self.samples += n
        return self.count >= self.k and self.flush()

    def flush(self) -> bool:
        """Put the mean gradient of the batches added so far into the layers; False if none."""
        if not self.count:
            return False
        scale = 1.0 / self.samples
        for (layer, name), total in self.sums.items():
            total *= scale
            layer.grads[name] = total
        self.sums, self.count, self.samples = {}, 0, 0
        return True


# -- running sums ------------------------------------------------------------------------------
def correct_count(backend: Any, loss: losses.Loss | None, y_pred: Any, y_true: Any) -> Any:
    """The number of rows of ``y_pred`` predicted right, as a 0-d integer array on the device,
    or None where ``loss`` does not classify: the top class against the label (or against the
    one-hot target's top class); with a single output and binary cross-entropy, the side of
    the threshold (probability 0.5, logit 0) against the side of 0.5. Array operations only:
    `ailib.compiling` traces it into compiled steps."""
    xp = backend.xp
    if isinstance(loss, losses.BinaryCrossEntropy) and y_pred.shape[-1] == 1:
        threshold = 0.0 if getattr(loss, "from_logits", False) else 0.5  # logit 0 = p 0.5
        hits = (y_pred > threshold) == (y_true > 0.5)
        return xp.sum(xp.astype(hits, backend.index_dtype))
    classify = loss is None or loss.accepts_labels
    if not classify or y_pred.ndim != 2 or y_pred.shape[1] < 2:
        return None
    guess = xp.argmax(y_pred, axis=1)
    truth = y_true if y_true.ndim == 1 else xp.argmax(y_true, axis=1)
    return xp.count_nonzero(guess == truth)


def formed_or_counted(backend: Any, loss: losses.Loss | None, y_pred: Any, y_true: Any) -> Any:
    """The count of correct rows the loss formed with its last error on these very arrays
    (`ailib.losses.Loss.correct`), else `correct_count`'s."""
    hits = loss.correct(y_pred, y_true) if hasattr(loss, "correct") else None
    return correct_count(backend, loss, y_pred, y_true) if hits is None else hits


class Meter:
    """Running sums of loss and correct predictions kept on the device; read back on request."""

    def __init__(
        self,
        model: Any,
        loss: losses.Loss | None,
        who: str,
        parallel: DataParallel | None = None,
    ) -> None:
        self.xp, self.backend, self.who = model.xp, model.backend, who
        self.parallel = parallel  # data-parallel: sums and counts are over every rank's rows
        self.pending: list[Any] = []  # per-step mean losses not yet read back
        self.sizes: list[int] = []
        self.loss_sum = 0.0
        self.samples = 0
        self.read_samples = 0
        self.loss = loss
        #: ``loss.correct``: the count of correct rows the loss formed with the error, if any
        self.formed = getattr(loss, "correct", None)
        self.hits: list[Any] = []  # per-step counts of correct predictions, summed when read
        self.correct: Any = None
        self.accuracy: float | None = None
        self.mean_loss = math.nan

    def add(self, value: Any, y_pred: Any, y_true: Any, size: int) -> None:
        if value is not None:
            self.pending.append(value)
            self.sizes.append(size)
        self.samples += size
        formed = self.formed  # counted with the loss, where it was
        hits = formed(y_pred, y_true) if formed is not None else None
        if hits is None:
            with self.backend.context():  # CuPy: count on the model's GPU
                hits = self._hits(y_pred, y_true)
        if hits is not None:
            self.hits.append(hits)

    def _hits(self, y_pred: Any, y_true: Any) -> Any:
        return correct_count(self.backend, self.loss, y_pred, y_true)

    def add_steps(self, errors: list[Any], hits: Any, size: int) -> None:
        """Add the steps taken in one call, of ``size`` rows each: their errors (0-d arrays)
        and their summed count of correct rows (or None)."""
        self.pending += errors
        self.sizes += [size] * len(errors)
        self.samples += size * len(errors)
        if hits is not None:
            self.hits.append(hits)

    def read(
        self, epoch: int = 0, step: int = 0, *, accuracy: bool = True, diverge: bool = False
    ) -> None:
        """Read pending losses back (one transfer) and, if ``accuracy``, the count of correct
        predictions (one more). With ``diverge``, a non-finite loss raises TrainingDiverged
        naming ``epoch`` and the step (``step`` being the last one added). Data-parallel,
        every rank reads the same sums (of every rank's rows), so every rank decides alike."""
        values, sizes = [], self.sizes
        if self.pending:
            with self.backend.context():
                stacked = self.xp.stack(self.pending)
            values = self.backend.to_host(stacked).tolist()
        if self.parallel is not None:
            values, sizes = self.parallel.reduce_losses(values, sizes, per_step=diverge)
        if values:
            first = step - len(values) + 1
            for k, (value, size) in enumerate(zip(values, sizes)):
                if diverge and not math.isfinite(value):
                    raise TrainingDiverged(
                        f"{self.who}: the loss became {value} at epoch {epoch}, step "
                        f"{first + k}; lower the learning rate or check the inputs for NaN/inf"
                    )
                self.loss_sum += value * size
                self.read_samples += size
            self.pending, self.sizes = [], []
            self.mean_loss = self.loss_sum / self.read_samples
        if self.hits:
            with self.backend.context():
                total = self.xp.sum(self.xp.stack(self.hits))
            self.correct = total if self.correct is None else self.correct + total
            self.hits = []
        if accuracy and (self.correct is not None or self.parallel is not None):
            hits = None if self.correct is None else int(self.backend.to_host(self.correct))
            samples = self.samples
            if self.parallel is not None:
                hits, samples = self.parallel.reduce_hits(hits, samples)
            if hits is not None:
                self.accuracy = hits / max(1, samples)

    def results(self, with_loss: bool = True) -> dict[str, float]:
        out = {"loss": self.mean_loss} if with_loss else {}
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        return out


# -- the loop ----------------------------------------------------------------------------------
class Trainer:
    """One run of `fit`; callbacks see it as ``self.trainer``.

    Attributes:
        model, loss, optimizer, callbacks: what trains, on what, with what.
        epochs: the last epoch to train; steps: batches per epoch (None if unknown);
            samples: training samples per epoch (None if unknown).
        epoch: the current epoch (from 1); initial_epoch: the epochs already done when
            training started (set by a resumed `ModelCheckpoint`).
        history: ``{"loss": [...], ...}``, one entry per finished epoch.
        parallel: the `ailib.distributed.DataParallel` of ``fit(distributed=comm)``, or None.
        is_root: False on the ranks other than 0 of data-parallel training, which print and
            write nothing: callbacks with ``writes = True`` are not called there.
    """

    def __init__(
        self,
        model: Any,
        loss: losses.Loss,
        optimizer: optimizers.Optimizer,
        callbacks: Sequence[Callback] = (),
        *,
        log_every: int = 50,
        accumulate: int = 1,
        distributed: Communicator | None = None,
    ) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.parallel = None if distributed is None else DataParallel(distributed)
        self.is_root = self.parallel is None or self.parallel.is_root
        self.callbacks = [c for c in callbacks if self.is_root or not getattr(c, "writes", False)]
        self.log_every = log_every
        self.accumulator = GradientAccumulator(accumulate) if accumulate > 1 else None
        self.who = f"{type(model).__name__}.fit"
        self.epochs, self.steps, self.samples = 0, None, None
        self.epoch = self.initial_epoch = 0
        self.history: dict[str, list[Any]] = {}

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def fit(
        self,
        data: ArrayBatches | IterableBatches,
        epochs: int,
        validation: ArrayBatches | IterableBatches | None = None,
    ) -> dict[str, list[Any]]:
        """Train for epochs ``initial_epoch + 1 .. epochs``; returns the history."""
        if self.parallel is None:
            return self._fit(data, epochs, validation)
        with self.parallel.guard():  # an error on one rank ends them all, shown once
            return self._fit(data, epochs, validation)

    def _fit(
        self,
        data: ArrayBatches | IterableBatches,
        epochs: int,
        validation: ArrayBatches | IterableBatches | None,
    ) -> dict[str, list[Any]]:
        model = self.model
        self.epochs, self.steps = epochs, data.steps
        self.samples = getattr(data, "samples", None)
        model.stop_training = False
        was_training = model.training
        for callback in self.callbacks:
            callback.set_trainer(self)
        logs: dict[str, Any] = {}
        try:
            self._call("on_train_begin", {})
            if self.parallel is not None:  # rank 0's weights, after a checkpoint is restored
                self.parallel.start(
                    model, data, self.initial_epoch, self.who, self._run(validation)
                )
            for epoch in range(self.initial_epoch + 1, epochs + 1):
                if model.stop_training:
                    break
                self.epoch = epoch
                model.train()
                self._call("on_epoch_begin", epoch, {})
                if self.parallel is not None:  # one learning rate: a schedule of every rank's
                    self.parallel.check_epoch(epoch, self.optimizer.lr, self.who)
                start = time.perf_counter()
                logs = self._train_epoch(epoch, data, start)
                if logs is None:  # a one-shot iterator ran out
                    warnings.warn(
                        f"{self.who}: the iterator of batches ran out at epoch {epoch}; "
                        f"training stopped (give steps_per_epoch so that every epoch has its "
                        f"batches)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    break
                if self.parallel is not None:
                    self.parallel.end_epoch(model)  # one set of running statistics
                if validation is not None:
                    val = evaluate_batches(model, validation, self.loss, self.who, self.parallel)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                logs["lr"] = self.optimizer.lr
                logs["seconds"] = time.perf_counter() - start
                self._call("on_epoch_end", epoch, logs)
                self.history = extended(self.history, logs)
            self._call("on_train_end", logs)
        finally:
            model.train(was_training)
        return self.history

    def _run(self, validation: ArrayBatches | IterableBatches | None) -> dict[str, Any]:
        """What every rank of data-parallel training must share, beside its batches (see
        `DataParallel.check_same_run`): epochs, the optimizer, accumulation, validation."""
        rows = None if validation is None else getattr(validation, "samples", "batches")
        return {
            "epochs": self.epochs,
            "optimizer": {"class": type(self.optimizer).__name__, **self.optimizer.get_config()},
            "accumulate": 1 if self.accumulator is None else self.accumulator.k,
            "validation_rows": rows,
        }

    def _train_epoch(
        self, epoch: int, data: ArrayBatches | IterableBatches, start: float
    ) -> dict[str, Any] | None:
        """One pass over ``data``; the epoch's logs, or None if there was no batch."""
        model, loss, optimizer, parallel = self.model, self.loss, self.optimizer, self.parallel
        meter, steps, hooks = (
            Meter(model, loss, self.who, parallel),
            data.steps,
            bool(self.callbacks),
        )
        # over arrays, with no callback that could change the model between two steps (none
        # with a batch hook, but those that only report: ``writes``, a progress bar), the
        # compiled step checks the layers and the optimizer's settings once per epoch
        quiet = isinstance(data, ArrayBatches) and not any(
            _between_steps(c) for c in self.callbacks
        )
        calls = (
            isinstance(data, ArrayBatches)
            and parallel is None
            and self.accumulator is None
            and model.backend.loop_compiler is not None
            and getattr(model, "compile_steps", None) is not False
        )
        with compiling.unchanged(model) if quiet else contextlib.nullcontext():
            if calls:
                step = self._steps_in_calls(epoch, data, meter, steps, hooks, start, quiet)
            else:
                step = self._steps(epoch, data, meter, steps, hooks, start)
        if step == 0:
            first = epoch == self.initial_epoch + 1
            if first or not isinstance(data, IterableBatches) or not data.one_shot:
                raise ValueError(f"{self.who}: the data gave no batch in epoch {epoch}")
            return None
        if self.accumulator is not None:
            with model.backend.context():
                if self.accumulator.flush():
                    optimizer.step(model.layers)  # the epoch's last, incomplete group
        meter.read(epoch, step, diverge=True)
        return meter.results()

    def _steps(
        self,
        epoch: int,
        data: ArrayBatches | IterableBatches,
        meter: Meter,
        steps: int,
        hooks: bool,
        start: float,
    ) -> int:
        """The steps of one pass over ``data``; the number of the last one (0: none)."""
        model, parallel = self.model, self.parallel
        step = 0
        for step, (xb, yb) in enumerate(data if parallel is None else parallel.shards(data), 1):
            n = rows(yb)
            size = n if parallel is None else parallel.global_rows
            if hooks:
                self._call("on_batch_begin", step, {"size": size})
            error, y_pred = self._step(xb, yb, epoch, step, n)
            meter.add(error, y_pred, yb, n)
            read = step % self.log_every == 0 or step == steps
            if read:
                meter.read(epoch, step, accuracy=step == steps, diverge=True)
            if hooks:
                logs = {
                    "size": size,
                    "samples": meter.samples if parallel is None else parallel.samples,
                    "seconds": time.perf_counter() - start,
                    "batch_loss": error,
                }
                if read:
                    logs["loss"] = meter.mean_loss
                self._call("on_batch_end", step, logs)
            if model.stop_training:
                break
        return step

    def _steps_in_calls(
        self,
        epoch: int,
        data: ArrayBatches,
        meter: Meter,
        steps: int,
        hooks: bool,
        start: float,
        quiet: bool,
    ) -> int:
        """`_steps` where the backend runs several steps in one compiled call
        (`Backend.loop_compiler`, JAX): each call gathers its batches itself, and, where
        nothing may change the model between two steps (``quiet``), takes every step up to
        the next read of the losses (``log_every``) at once. Reporting callbacks see each
        step's hooks after the call that took it."""
        model, loss, optimizer = self.model, self.loss, self.optimizer
        order, bounds = data.order(identity=True), data.bounds
        arrays = (data.x, data.y)
        every = self.log_every
        most = max(1, min(every, steps)) if quiet else 1
        step = 0  # the steps taken
        while step < steps:
            first, stop = bounds[step]
            size = stop - first
            count, limit = 1, min(steps, (step // every + 1) * every)  # up to the next read
            while count < most and step + count < limit:
                if bounds[step + count][1] - bounds[step + count][0] != size:
                    break  # the last, shorter batch: a call of its own (its own compile)
                count += 1
            began = hooks and count == 1  # else each step's hooks come after the call
            if began:
                self._call("on_batch_begin", step + 1, {"size": size})
            compiled = compiling.compiled_step(model, loss, optimizer)
            if compiled is None:  # uncompiled (an optimizer making its state at its first step)
                with model.backend.context():
                    xb, yb = model.backend.take_batch(arrays, order, first, stop)
                errors, y_pred = self._step(xb, yb, epoch, step + 1, size)
                taken, hits = 1, None
            else:
                try:
                    taken, errors, hits, y_pred, yb = compiled.run_steps(
                        arrays, order, first, size, count, most, loss
                    )
                except ValueError as exc:
                    said = self._one_sample(exc, epoch, step + 1, size)
                    if said is None:
                        raise
                    raise said from exc
            samples = meter.samples
            if yb is not None:  # one step, taken uncompiled
                meter.add(errors, y_pred, yb, size)
                errors = [errors]
            else:
                meter.add_steps(errors, hits, size)
            step += taken
            read = step % every == 0 or step == steps
            if read:
                meter.read(epoch, step, accuracy=step == steps, diverge=True)
            if hooks:
                for k in range(taken):
                    if not began:
                        self._call("on_batch_begin", step - taken + k + 1, {"size": size})
                    logs = {
                        "size": size,
                        "samples": samples + (k + 1) * size,
                        "seconds": time.perf_counter() - start,
                        "batch_loss": errors[k],
                    }
                    if read and k == taken - 1:
                        logs["loss"] = meter.mean_loss
                    self._call("on_batch_end", step - taken + k + 1, logs)
            if model.stop_training:
                break
        return step

    def _one_sample(self, exc: ValueError, epoch: int, step: int, n: int) -> ValueError | None:
        """For a batch of one sample, an error that says so in place of ``exc``; else None.
        Data-parallel, the one sample is this rank's share of the global batch."""
        if n != 1:
            return None
        parallel = self.parallel
        if parallel is not None and parallel.comm.size > 1:
            comm, total = parallel.comm, parallel.global_rows
            return ValueError(
                f"{self.who}: epoch {epoch}, step {step}: rank {comm.rank} of {comm.size} has 1 "
                f"row of the global batch of {total}, which this model cannot train on ({exc}); "
                f"every rank needs at least 2 rows: use a batch_size of at least "
                f"{2 * comm.size} (the global batch), or drop_last=True if it is the last, "
                f"short batch"
            )
        return ValueError(
            f"{self.who}: epoch {epoch}, step {step} is a batch of one sample, which this "
            f"model cannot train on ({exc}); use batches of at least 2 samples "
            f"(batch_size, or drop_last=True)"
        )

    def _step(self, xb: Any, yb: Any, epoch: int, step: int, n: int) -> tuple[Any, Any]:
        model, acc, parallel = self.model, self.accumulator, self.parallel
        try:
            error, y_pred = train_step(
                model, xb, yb, self.loss, self.optimizer, update=acc is None and parallel is None
            )
        except ValueError as exc:
            said = self._one_sample(exc, epoch, step, n)
            if said is None:
                raise
            raise said from exc
        if parallel is not None:  # the global batch's mean gradient, then the same update
            n = parallel.reduce_gradients(model, n)
            if acc is None:
                with model.backend.context():
                    self.optimizer.step(model.layers)
        if acc is not None:
            with model.backend.context():
                if acc.add(model.layers, n):
                    self.optimizer.step(model.layers)
        return error, y_pred


def _between_steps(callback: Callback) -> bool:
    """Whether ``callback`` may change the model between two steps of an epoch: as it says
    (``Callback.acts_between_steps``), or else if it has a batch hook of its own and does more
    than report."""
    said = getattr(callback, "acts_between_steps", None)
    if said is not None:
        return bool(said)
    hooks = (type(callback).on_batch_begin, type(callback).on_batch_end)
    own = hooks != (Callback.on_batch_begin, Callback.on_batch_end)
    return own and not callback.writes


# -- entry points ------------------------------------------------------------------------------
def _is_flag(value: Any) -> bool:
    """True, False, or what equals one of them as a number (1, 0, NumPy's bools)."""
    try:
        return bool(value in (True, False))
    except (TypeError, ValueError):  # an array: ambiguous
        return False


def _callbacks(callbacks: Any, who: str) -> list[Callback]:
    """``callbacks`` as a list, refused unless it is a sequence of `Callback` objects."""
    if isinstance(callbacks, Callback):
        raise TypeError(
            f"{who}: callbacks must be a list of Callback objects, received one; "
            f"pass [{type(callbacks).__name__}(...)]"
        )
    try:
        every = list(callbacks)
    except TypeError:
        raise TypeError(
            f"{who}: callbacks must be a list of ailib.callbacks.Callback objects, received "
            f"{callbacks!r}"
        ) from None
    wrong = [c for c in every if not isinstance(c, Callback)]
    if wrong:
        raise TypeError(
            f"{who}: callbacks must be ailib.callbacks.Callback objects, received "
            f"{type(wrong[0]).__name__} {wrong[0]!r}"
        )
    return every


def fit(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    loss: losses.Loss | str | Sequence[losses.Loss | str] | None = None,
    optimizer: optimizers.Optimizer | str = "sgd",
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: Any = None,
    callbacks: Sequence[Callback] = (),
    steps_per_epoch: int | None = None,
    accumulate: int = 1,
    drop_last: bool = False,
    log_every: int = 50,
    verbose: bool | int | str = "auto",
    validation_split: float = 0.0,
    progress: Progress | None = None,
    checkpoint: Any = None,
    resume: bool = False,
    lr_schedule: Callable[[int], float] | None = None,
    distributed: Communicator | None = None,
) -> dict[str, list[Any]]:
    """Train ``model`` on (x, y) for ``epochs`` passes of mini-batches; returns the history.

    Data: x and y arrays (NumPy, moved to the device once here, or arrays of the model's
    backend), shuffled on the device each epoch (one permutation drawn from the model's seed);
    or x an iterable of (x, y) batches and y None, for data that does not fit the device. A
    re-iterable x (a list, or an object whose ``__iter__`` starts over, e.g. a loader reading
    files) is iterated afresh each epoch, up to ``steps_per_epoch`` batches if given; a one-shot
    iterator (a generator) is shared by the epochs, each drawing ``steps_per_epoch`` batches
    (required then, for more than one epoch); training stops with a warning if it runs out.
    Iterables are not shuffled by fit. ``validation_data`` is (x, y) arrays or a re-iterable of
    batches; or, with arrays, ``validation_split=f`` holds out the last fraction f of the rows
    (taken before any shuffling, as in Keras: the last ``n - int(n * (1 - f))`` rows) and
    validates on them after every epoch.

    ``loss``: a name or a `Loss` (for several outputs, a list: one per output, or one for all);
    None (the default) is the model's own (``model.loss``: the loss of an earlier fit, or of the
    file it was loaded from), else ``"softmax_cross_entropy"``.

    Per batch, `train_step`; with ``accumulate=k``, the optimizer steps once per k batches on
    their mean gradient (equal to one step on the k batches concatenated, for mean losses and
    models without BatchNorm or Dropout; see `GradientAccumulator`). A final batch of a single
    sample is merged into the previous batch; ``drop_last=True`` drops any incomplete final
    batch.

    Losses stay on the device and are read back every ``log_every`` steps and at the end of the
    epoch, never per step; a NaN or infinite loss stops training with `TrainingDiverged` naming
    the exact epoch and step.

    ``verbose``: ``"auto"`` (the default), True or 1: a progress bar with the run's time left on
    a terminal, and one line per epoch; on anything else (a pipe, a log file, captured output)
    the epoch lines only. 2 or ``"epoch"``: the epoch lines only. False or 0: nothing. Progress
    goes to standard output, as ``verbose=True`` always did (`ailib.progress.ProgressBar`, which
    the ``ailib`` command shows on standard error).

    ``callbacks``: `ailib.callbacks.Callback` objects (early stopping, checkpoints, schedules,
    progress, your own). The older keywords add the corresponding callbacks:
    ``lr_schedule=f`` is `LearningRateScheduler(f)`; ``checkpoint=path, resume=...`` is
    `ModelCheckpoint(path, resume=...)` (on resuming it says what it restored, or that the
    checkpoint already holds ``epochs`` epochs; it refuses a checkpoint of another model or of
    other optimizer settings); ``progress=f`` is `ProgressEvents(f)`.

    The model is in train mode while training and back in its previous mode afterwards.

    ``distributed=comm`` (an `ailib.distributed.Communicator`, from `ailib.distributed.init`)
    trains data-parallel: every rank runs this same call on the same data; rank 0's weights
    are broadcast first, ``batch_size`` is the global batch, each rank trains on its share of
    it and the gradients are averaged over the global batch once per step, so the weights
    follow those of one process up to rounding (BatchNorm excepted: its statistics are each
    rank's own). Losses and metrics are sums and counts over every rank's rows; callbacks that
    print or write (``writes = True``, and checkpoints) act on rank 0 only. An error on one
    rank ends every rank. See `ailib.distributed.DataParallel` and docs/distributed.md.

    Returns:
        ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...],
        "lr": [...], "seconds": [...]}``, one entry per epoch (accuracy only for
        classification losses; "lr": the learning rate at the epoch's end).
    """
    who = f"{type(model).__name__}.fit"
    epochs, batch_size, log_every, accumulate = (
        positive_int(value, name, who)
        for name, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("log_every", log_every),
            ("accumulate", accumulate),
        )
    )
    if steps_per_epoch is not None:
        steps_per_epoch = positive_int(steps_per_epoch, "steps_per_epoch", who)
    for name, value in (("shuffle", shuffle), ("drop_last", drop_last), ("resume", resume)):
        if not _is_flag(value):
            raise TypeError(f"{who}: {name} must be True or False, received {value!r}")
    every = _callbacks(callbacks, who)
    if validation_data is not None and hasattr(validation_data, "shape"):
        raise ValueError(
            f"{who}: validation_data must be an (x, y) pair of arrays or a re-iterable of (x, "
            f"y) batches, received one array of shape {tuple(validation_data.shape)}"
        )
    if resume and checkpoint is None:
        raise ValueError(f"{who}: resume=True needs checkpoint=<path> to resume from")
    show = progress_callback(verbose, who)
    if loss is None:
        loss = model.loss if model.loss is not None else "softmax_cross_entropy"
    model.loss = loss = _loss_for(model, loss)
    model.optimizer = optimizer = optimizers.get(optimizer)
    if validation_split:
        x, y, validation_data = split_validation(
            model, x, y, loss, validation_split, validation_data, who
        )
    several = not getattr(model, "single_input", True)  # then x is a list of arrays
    pair = (
        validation_data is not None
        and isinstance(validation_data, tuple)
        and len(validation_data) == 2
        and (several or not isinstance(validation_data[0], (tuple, list)))
    )
    if pair and y is not None:  # arrays: every argument is checked before any of it moves
        check_inputs(model, x, who)
        vwho = who + " (validation_data)"
        vx = check_inputs(model, validation_data[0], vwho)
        check_targets(model, validation_data[1], rows(vx), loss, vwho)
    data = batches_of(
        model,
        x,
        y,
        loss,
        who,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        steps=steps_per_epoch,
        passes=epochs,
    )
    if isinstance(data, ArrayBatches):
        data.reuse_memory = True  # each batch is done with before the next is gathered
    validation = None
    if validation_data is not None:
        vx, vy = validation_data if pair else (validation_data, None)
        validation = batches_of(model, vx, vy, loss, who + " (validation_data)", batch_size=1024)
        if isinstance(validation, IterableBatches) and validation.one_shot:
            raise ValueError(
                f"{who}: validation_data must be (x, y) arrays or a re-iterable of batches "
                f"(it is iterated every epoch), received a one-shot iterator"
            )
    if lr_schedule is not None:
        every.insert(0, LearningRateScheduler(lr_schedule))
    if checkpoint is not None:
        every.append(ModelCheckpoint(checkpoint, resume=bool(resume), verbose=show is not None))
    if progress is not None:
        every.append(ProgressEvents(progress))
    if show is not None:
        every.append(show)  # last: it reports what the callbacks before it restored or added
    trainer = Trainer(
        model,
        loss,
        optimizer,
        every,
        log_every=log_every,
        accumulate=accumulate,
        distributed=distributed,
    )
    if trainer.parallel is not None and isinstance(data, ArrayBatches):
        trainer.parallel.check_batches(data.bounds, who)
    return trainer.fit(data, epochs, validation)


def progress_callback(verbose: bool | int | str, who: str = "fit") -> ProgressBar | None:
    """The progress display for fit's ``verbose``: None for False/0, epoch lines only for 2 or
    "epoch", else (True, 1, "auto") a bar on a terminal and epoch lines elsewhere."""
    if verbose is False or (type(verbose) is int and verbose == 0):
        return None
    if verbose is True or verbose == "auto" or (type(verbose) is int and verbose == 1):
        return ProgressBar(stream="stdout")
    if verbose == "epoch" or (type(verbose) is int and verbose == 2):
        return ProgressBar(stream="stdout", bar=False)
    raise ValueError(
        f"{who}: verbose must be 'auto', True/1 (a bar on a terminal), 2 or 'epoch' (a line per "
        f"epoch) or False/0 (nothing), received {verbose!r}"
    )


def split_rows(n: int, fraction: float) -> int:
    """How many of ``n`` rows `fit(validation_split=fraction)` holds out: the last
    ``n - int(n * (1 - fraction))`` (Keras' rule)."""
    return n - int(n * (1.0 - fraction))


def split_validation(
    model: Any, x: Any, y: Any, loss: losses.Loss, fraction: Any, validation_data: Any, who: str
) -> tuple[Any, Any, tuple[Any, Any]]:
    """``(x_train, y_train, (x_val, y_val))``: the last rows of arrays x, y held out, before any
    shuffling, for `fit(validation_split=fraction)`."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"{who}: validation_split must be a number, received {fraction!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{who}: validation_split must lie in (0, 1), received {fraction}")
    if validation_data is not None:
        raise ValueError(f"{who}: give validation_data or validation_split, not both")
    if y is None:
        raise ValueError(
            f"{who}: validation_split needs x and y arrays (an iterable of batches cannot be "
            f"split; give validation_data instead)"
        )
    x = check_inputs(model, x, who)
    n = rows(x)
    y = check_targets(model, y, n, loss, who)[0]
    held = split_rows(n, float(fraction))
    if held < 1 or held >= n:
        raise ValueError(
            f"{who}: validation_split={fraction} of {n} samples leaves "
            f"{n - held} to train on and {held} to validate on; both need at least one"
        )
    cut = n - held
    return (
        _rows_slice(x, 0, cut),
        _rows_slice(y, 0, cut),
        (_rows_slice(x, cut, n), _rows_slice(y, cut, n)),
    )


def evaluate_batches(
    model: Any,
    batches: Iterable[tuple[Any, Any]],
    loss: losses.Loss | None,
    who: str,
    parallel: DataParallel | None = None,
) -> dict[str, float]:
    """Mean loss (if ``loss``) and, for classification, accuracy over ``batches``, in eval mode
    (the model's mode is restored after). A NaN or infinite loss is returned, not raised. With
    ``parallel``, each rank evaluates its share of every batch and the results are sums and
    counts over all the ranks' rows."""
    meter = Meter(model, loss, who, parallel)
    if parallel is not None:
        batches = parallel.shards(batches, training=False)
    was_training = model.training
    infer = getattr(model, "infer", model.forward)  # no backprops kept, where the model can
    model.eval()
    count = 0
    try:
        score = getattr(model, "infer_and_score", None) if loss and parallel is None else None
        for xb, yb in batches:
            count += 1
            scored = score(xb, yb, loss) if score is not None else None
            if scored is not None:  # one compiled call (JAX)
                meter.add_steps([scored[1]], scored[2], rows(yb))
                continue
            out = infer(xb)
            with model.backend.context():
                value = loss.value_and_grad(out, yb, check=False)[0] if loss else None
            meter.add(value, out, yb, rows(yb))
    finally:
        model.train(was_training)
    if count == 0 and parallel is None:
        raise ValueError(f"{who}: the data gave no batch (an empty iterable of batches?)")
    meter.read()
    return meter.results(with_loss=loss is not None)


def evaluate(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    loss: losses.Loss | str | None = None,
    batch_size: int = INFERENCE_BATCH,
) -> dict[str, float]:
    """Mean loss and, for classification, accuracy on (x, y) arrays or on an iterable of (x, y)
    batches (y None), in eval mode; the model's mode is restored after.

    ``loss`` defaults to the one last used by `fit`; without either, only accuracy is given. A
    diverged model gives a NaN (or infinite) loss, not an error. A model with several outputs
    reports no accuracy, so it needs a loss (a ValueError without one)."""
    who = f"{type(model).__name__}.evaluate"
    loss = _loss_for(model, loss) if loss is not None else model.loss
    outputs = len(getattr(model, "outputs", ()))
    if loss is None and outputs > 1:  # accuracy is for one output only: nothing to report
        raise ValueError(
            f"{who}: the model has {outputs} outputs and no loss to report; give loss= (a "
            f"list, one per output, or one loss for all of them)"
        )
    batches = batches_of(
        model, x, y, loss or _loss_for(model, "softmax_cross_entropy"), who, batch_size=batch_size
    )
    return evaluate_batches(model, batches, loss, who)


def predict(model: Any, x: Any, batch_size: int | None = INFERENCE_BATCH) -> Any:
    """The model's output for x (NumPy or the backend's array), in eval mode (the model's mode
    is restored after), as an array of the model's backend. Runs in batches of ``batch_size``
    rows (default `INFERENCE_BATCH`), so memory does not grow with the number of rows; each
    batch goes through ``model.infer`` where the model has it, which keeps nothing for a
    backward pass. ``batch_size=None`` runs all rows at once."""
    who = f"{type(model).__name__}.predict"
    if batch_size is not None:
        size = whole(batch_size)
        if size is None or size < 1:
            raise ValueError(
                f"{who}: batch_size must be a positive int or None, received {batch_size!r}"
            )
        batch_size = size
    x = model_inputs(model, x, who, check_values=False)
    was_training = model.training
    infer = getattr(model, "infer", model.forward)  # no backprops kept, where the model can
    model.eval()
    try:
        n = rows(x)
        if batch_size is None or n <= batch_size:
            return infer(x)
        outs = [
            infer(_rows_slice(x, start, min(start + batch_size, n)))
            for start in range(0, n, batch_size)
        ]
        with model.backend.context():
            if isinstance(outs[0], list):  # several outputs: one concatenation each
                return [model.xp.concat(list(parts), axis=0) for parts in zip(*outs)]
            return model.xp.concat(outs, axis=0)
    finally:
        model.train(was_training)


def _rows_slice(x: Any, start: int, stop: int) -> Any:
    """Rows start..stop of an array, or of each array of a list (several inputs or outputs)."""
    if isinstance(x, list):
        return [a[start:stop, ...] for a in x]
    return x[start:stop, ...]


def _loss_for(model: Any, loss: Any) -> Any:
    """The loss object for ``loss``: the model's own choice where it has one (several outputs
    take a list), else `losses.get`."""
    choose = getattr(model, "loss_for", None)
    return choose(loss) if choose is not None else losses.get(loss)


__all__ = [
    "GradientAccumulator",
    "progress_callback",
    "split_rows",
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "fit",
    "predict",
    "train_step",
]
