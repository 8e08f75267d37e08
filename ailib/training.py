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

import math
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

from . import compiling, losses, optimizers
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
    PrintEpochs,
    ProgressEvents,
    extended,
)

Progress = Callable[[dict[str, Any]], None]

#: rows per forward pass of `predict` and `evaluate` unless told otherwise: memory is that of
#: one batch, whatever the number of rows (zoo.cnn: about 0.3 GB of im2col columns at 1024 rows)
INFERENCE_BATCH = 1024


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite during `fit`; the message gives the epoch and step."""


# -- the seed's four steps ---------------------------------------------------------------------
def train_step(
    model: Any,
    x: Any,
    y: Any,
    loss: losses.Loss,
    optimizer: optimizers.Optimizer,
    *,
    update: bool = True,
) -> tuple[Any, Any]:
    """One iteration of the seed's loop on a batch already on the device; returns (E, Y): the
    error (0-d, on the device) and the model's output. ``update=False`` stops after backward,
    leaving dE/dW in the layers' grads (gradient accumulation). Where the backend compiles
    (JAX), the same four steps run as one compiled call (`ailib.compiling`; off with
    ``model.compile_steps = False``)."""
    compiled = compiling.step_for(model, loss, optimizer) if update else None
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
class Meter:
    """Running sums of loss and correct predictions kept on the device; read back on request."""

    def __init__(self, model: Any, loss: losses.Loss | None, who: str) -> None:
        self.xp, self.backend, self.who = model.xp, model.backend, who
        self.pending: list[Any] = []  # per-step mean losses not yet read back
        self.sizes: list[int] = []
        self.loss_sum = 0.0
        self.samples = 0
        self.read_samples = 0
        self.loss = loss
        self.hits: list[Any] = []  # per-step counts of correct predictions, summed when read
        self.correct: Any = None
        self.classify = loss is None or loss.accepts_labels
        self.binary = isinstance(loss, losses.BinaryCrossEntropy)
        self.threshold = 0.0 if getattr(loss, "from_logits", False) else 0.5  # logit 0 = p 0.5
        self.accuracy: float | None = None
        self.mean_loss = math.nan

    def add(self, value: Any, y_pred: Any, y_true: Any, size: int) -> None:
        if value is not None:
            self.pending.append(value)
            self.sizes.append(size)
        self.samples += size
        with self.backend.context():  # CuPy: count on the model's GPU
            hits = self._hits(y_pred, y_true)
            if hits is not None:
                self.hits.append(hits)

    def _hits(self, y_pred: Any, y_true: Any) -> Any:
        xp = self.xp
        formed = getattr(self.loss, "correct", None)  # counted with the loss, where it was
        known = formed(y_pred, y_true) if formed is not None else None
        if known is not None:
            return known
        if self.binary and y_pred.shape[-1] == 1:
            hits = (y_pred > self.threshold) == (y_true > 0.5)
            return xp.sum(xp.astype(hits, self.backend.index_dtype))
        if not self.classify or y_pred.ndim != 2 or y_pred.shape[1] < 2:
            return None
        guess = xp.argmax(y_pred, axis=1)
        truth = y_true if y_true.ndim == 1 else xp.argmax(y_true, axis=1)
        return xp.count_nonzero(guess == truth)

    def read(
        self, epoch: int = 0, step: int = 0, *, accuracy: bool = True, diverge: bool = False
    ) -> None:
        """Read pending losses back (one transfer) and, if ``accuracy``, the count of correct
        predictions (one more). With ``diverge``, a non-finite loss raises TrainingDiverged
        naming ``epoch`` and the step (``step`` being the last one added)."""
        if self.pending:
            with self.backend.context():
                stacked = self.xp.stack(self.pending)
            values = self.backend.to_host(stacked).tolist()
            first = step - len(values) + 1
            for k, (value, size) in enumerate(zip(values, self.sizes)):
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
        if accuracy and self.correct is not None:
            self.accuracy = int(self.backend.to_host(self.correct)) / max(1, self.samples)

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
        epochs: the last epoch to train; steps: batches per epoch (None if unknown).
        epoch: the current epoch (from 1); initial_epoch: the epochs already done when
            training started (set by a resumed `ModelCheckpoint`).
        history: ``{"loss": [...], ...}``, one entry per finished epoch.
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
    ) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.callbacks = list(callbacks)
        self.log_every = log_every
        self.accumulator = GradientAccumulator(accumulate) if accumulate > 1 else None
        self.who = f"{type(model).__name__}.fit"
        self.epochs, self.steps = 0, None
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
        model = self.model
        self.epochs, self.steps = epochs, data.steps
        model.stop_training = False
        was_training = model.training
        for callback in self.callbacks:
            callback.set_trainer(self)
        logs: dict[str, Any] = {}
        try:
            self._call("on_train_begin", {})
            for epoch in range(self.initial_epoch + 1, epochs + 1):
                if model.stop_training:
                    break
                self.epoch = epoch
                model.train()
                self._call("on_epoch_begin", epoch, {})
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
                if validation is not None:
                    val = evaluate_batches(model, validation, self.loss, self.who)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                logs["lr"] = self.optimizer.lr
                logs["seconds"] = time.perf_counter() - start
                self._call("on_epoch_end", epoch, logs)
                self.history = extended(self.history, logs)
            self._call("on_train_end", logs)
        finally:
            model.train(was_training)
        return self.history

    def _train_epoch(
        self, epoch: int, data: ArrayBatches | IterableBatches, start: float
    ) -> dict[str, Any] | None:
        """One pass over ``data``; the epoch's logs, or None if there was no batch."""
        model, loss, optimizer = self.model, self.loss, self.optimizer
        meter, steps, hooks = Meter(model, loss, self.who), data.steps, bool(self.callbacks)
        step = 0
        for step, (xb, yb) in enumerate(data, 1):
            size = rows(yb)
            if hooks:
                self._call("on_batch_begin", step, {"size": size})
            error, y_pred = self._step(xb, yb, epoch, step)
            meter.add(error, y_pred, yb, size)
            read = step % self.log_every == 0 or step == steps
            if read:
                meter.read(epoch, step, accuracy=step == steps, diverge=True)
            if hooks:
                logs = {
                    "size": size,
                    "samples": meter.samples,
                    "seconds": time.perf_counter() - start,
                    "batch_loss": error,
                }
                if read:
                    logs["loss"] = meter.mean_loss
                self._call("on_batch_end", step, logs)
            if model.stop_training:
                break
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

    def _step(self, xb: Any, yb: Any, epoch: int, step: int) -> tuple[Any, Any]:
        model, acc = self.model, self.accumulator
        try:
            error, y_pred = train_step(model, xb, yb, self.loss, self.optimizer, update=acc is None)
        except ValueError as exc:
            if rows(yb) != 1:
                raise
            raise ValueError(
                f"{self.who}: epoch {epoch}, step {step} is a batch of one sample, which this "
                f"model cannot train on ({exc}); use batches of at least 2 samples "
                f"(batch_size, or drop_last=True)"
            ) from exc
        if acc is not None:
            with model.backend.context():
                if acc.add(model.layers, rows(yb)):
                    self.optimizer.step(model.layers)
        return error, y_pred


# -- entry points ------------------------------------------------------------------------------
def fit(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    loss: losses.Loss | str = "softmax_cross_entropy",
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
    verbose: bool = False,
    progress: Progress | None = None,
    checkpoint: Any = None,
    resume: bool = False,
    lr_schedule: Callable[[int], float] | None = None,
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
    batches.

    Per batch, `train_step`; with ``accumulate=k``, the optimizer steps once per k batches on
    their mean gradient (equal to one step on the k batches concatenated, for mean losses and
    models without BatchNorm or Dropout; see `GradientAccumulator`). A final batch of a single
    sample is merged into the previous batch; ``drop_last=True`` drops any incomplete final
    batch.

    Losses stay on the device and are read back every ``log_every`` steps and at the end of the
    epoch, never per step; a NaN or infinite loss stops training with `TrainingDiverged` naming
    the exact epoch and step.

    ``callbacks``: `ailib.callbacks.Callback` objects (early stopping, checkpoints, schedules,
    progress, your own). The older keywords add the corresponding callbacks:
    ``lr_schedule=f`` is `LearningRateScheduler(f)`; ``checkpoint=path, resume=...`` is
    `ModelCheckpoint(path, resume=...)`; ``progress=f`` is `ProgressEvents(f)`;
    ``verbose=True`` is `PrintEpochs()`.

    The model is in train mode while training and back in its previous mode afterwards.

    Returns:
        ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...],
        "lr": [...], "seconds": [...]}``, one entry per epoch (accuracy only for
        classification losses; "lr": the learning rate at the epoch's end).
    """
    who = f"{type(model).__name__}.fit"
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("log_every", log_every),
        ("accumulate", accumulate),
        ("steps_per_epoch", 1 if steps_per_epoch is None else steps_per_epoch),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive int, received {value!r}")
    if resume and checkpoint is None:
        raise ValueError(f"{who}: resume=True needs checkpoint=<path> to resume from")
    model.loss = loss = _loss_for(model, loss)
    model.optimizer = optimizer = optimizers.get(optimizer)
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
    validation = None
    if validation_data is not None:
        vx, vy = validation_data if pair else (validation_data, None)
        validation = batches_of(model, vx, vy, loss, who + " (validation_data)", batch_size=1024)
        if isinstance(validation, IterableBatches) and validation.one_shot:
            raise ValueError(
                f"{who}: validation_data must be (x, y) arrays or a re-iterable of batches "
                f"(it is iterated every epoch), received a one-shot iterator"
            )
    every = list(callbacks)
    if lr_schedule is not None:
        every.insert(0, LearningRateScheduler(lr_schedule))
    if checkpoint is not None:
        every.append(ModelCheckpoint(checkpoint, resume=resume))
    if progress is not None:
        every.append(ProgressEvents(progress))
    if verbose:
        every.append(PrintEpochs())
    trainer = Trainer(model, loss, optimizer, every, log_every=log_every, accumulate=accumulate)
    return trainer.fit(data, epochs, validation)


def evaluate_batches(
    model: Any, batches: Iterable[tuple[Any, Any]], loss: losses.Loss | None, who: str
) -> dict[str, float]:
    """Mean loss (if ``loss``) and, for classification, accuracy over ``batches``, in eval mode
    (the model's mode is restored after). A NaN or infinite loss is returned, not raised."""
    meter = Meter(model, loss, who)
    was_training = model.training
    infer = getattr(model, "infer", model.forward)  # no backprops kept, where the model can
    model.eval()
    try:
        for xb, yb in batches:
            out = infer(xb)
            with model.backend.context():
                value = loss.value_and_grad(out, yb, check=False)[0] if loss else None
            meter.add(value, out, yb, rows(yb))
    finally:
        model.train(was_training)
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
    diverged model gives a NaN (or infinite) loss, not an error."""
    who = f"{type(model).__name__}.evaluate"
    loss = _loss_for(model, loss) if loss is not None else model.loss
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
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(
            f"{who}: batch_size must be a positive int or None, received {batch_size!r}"
        )
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
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "fit",
    "predict",
    "train_step",
]
