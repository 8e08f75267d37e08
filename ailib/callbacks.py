"""Callbacks: code that `fit` runs at the start and end of training, of each epoch and of each
batch, to watch or steer training without editing the loop (docs/training.md).

    model.fit(x, y, epochs=50, validation_data=(xv, yv), callbacks=[
        EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        ModelCheckpoint("runs/best.npz", save_best_only=True),
        ReduceLROnPlateau(factor=0.5, patience=2),
    ])

This module is the one that knows `ailib.io` (checkpoint files); the loop itself
(`ailib.training`) only calls hooks.
"""

from __future__ import annotations

import math
import os
import string
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from . import io
from ._checks import count, flag, number

Logs = dict[str, Any]


class Callback:
    """Base class: override the hooks you need; each does nothing here.

    `fit` calls, in this order (epochs and steps count from 1)::

        on_train_begin(logs)
        for each epoch:
            on_epoch_begin(epoch, logs)
            for each batch:
                on_batch_begin(step, logs)      logs: {"size"}
                (train step: forward, error, backward, update)
                on_batch_end(step, logs)        logs: {"size", "samples", "seconds", "batch_loss"}
                                                and "loss" where fit read the losses back
            (validation)
            on_epoch_end(epoch, logs)           logs: {"loss", "accuracy", "val_loss", ...}
        on_train_end(logs)                      logs: the last epoch's

    ``batch_loss`` is the batch's error as a 0-d array on the device: reading it (``float``)
    waits for the device, so fit itself reads losses only every ``log_every`` steps, when the
    batch logs also carry "loss", the running mean over the epoch so far. Entries a callback
    adds to the epoch's logs in `on_epoch_end` go into the history fit returns.

    To stop training, set ``self.model.stop_training = True`` in any hook: fit finishes the
    current batch (and, if stopped in `on_epoch_end`, that epoch), then calls `on_train_end`.

    Attributes (set by fit before `on_train_begin`):
        trainer: the `ailib.training.Trainer` running fit (its optimizer, loss, epochs, steps
            per epoch, the current epoch and the history so far).
        model: the model being trained (``trainer.model``).

    In data-parallel training (``fit(distributed=comm)``) every rank calls the hooks with the
    same logs (sums over every rank's rows), so callbacks that steer training decide alike on
    every rank. A callback that only prints or writes files sets the class attribute
    ``writes = True``: fit then calls it on rank 0 only (``trainer.is_root``), and, since it
    changes nothing of the model or the optimizer, its batch hooks let the compiled step check
    them once per epoch instead of every step (`ailib.compiling.unchanged`), as a callback
    without batch hooks does. On JAX, such an epoch runs the steps between two reads of the
    losses (``log_every``) as one compiled call (`Backend.loop_compiler`); a callback that
    only reports then gets those steps' hooks, in order and with each step's own logs, after
    the call: a progress bar moves once per call. (Setting ``stop_training`` there stops
    after the call, not after the step.) A callback whose batch hooks change nothing in its
    present setting says so with ``acts_between_steps = False`` (a `LearningRateScheduler` by
    epoch does), and counts as one without batch hooks.
    """

    trainer: Any = None
    model: Any = None
    #: True for a callback that only reports (prints, writes): called on rank 0 only
    writes = False
    #: whether the callback may change the model or the optimizer between two steps of an
    #: epoch; None (the default): it may if it has a batch hook of its own and does not only
    #: report. A callback whose batch hooks do nothing in its present setting says False
    #: (`LearningRateScheduler` by epoch), so that fit's epochs stay `unchanged`.
    acts_between_steps: bool | None = None

    def set_trainer(self, trainer: Any) -> None:
        self.trainer, self.model = trainer, trainer.model

    def on_train_begin(self, logs: Logs) -> None:
        """Before the first epoch."""

    def on_train_end(self, logs: Logs) -> None:
        """After the last epoch (or the epoch training was stopped in)."""

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        """Before epoch ``epoch``'s first batch (the model is in train mode)."""

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        """After epoch ``epoch`` and its validation; ``logs`` become the history's entries."""

    def on_batch_begin(self, step: int, logs: Logs) -> None:
        """Before batch ``step`` of the epoch."""

    def on_batch_end(self, step: int, logs: Logs) -> None:
        """After batch ``step``'s update."""


def extended(history: dict[str, list[Any]], logs: Logs) -> dict[str, list[Any]]:
    """A new history: ``history`` with the entries of one more epoch's ``logs`` appended."""
    out = {key: list(values) for key, values in history.items()}
    for key, value in logs.items():
        out.setdefault(key, []).append(value)
    return out


# -- watching a quantity -----------------------------------------------------------------------
class _Monitor:
    """Tracks the best value of ``logs[monitor]``: lower is better in mode "min", higher in
    "max"; "auto" is "max" for accuracies, else "min". An improvement must beat the best by more
    than ``min_delta``; NaN never improves."""

    def __init__(self, who: str, monitor: str, mode: str, min_delta: float) -> None:
        if not isinstance(monitor, str):
            raise TypeError(f"{who}: monitor must be the name of a log entry, received {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', received {mode!r}")
        min_delta = number(min_delta, "min_delta", who)
        if not min_delta >= 0:
            raise ValueError(f"{who}: min_delta must be >= 0, received {min_delta}")
        self.who, self.monitor, self.min_delta = who, monitor, float(min_delta)
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.best: float | None = None

    def value(self, logs: Logs) -> float:
        if self.monitor not in logs:
            validated = any(name.startswith("val_") for name in logs)
            hint = (
                ", or give fit validation_data (or validation_split) for 'val_*' entries"
                if self.monitor.startswith("val_") and not validated
                else ""
            )
            raise ValueError(
                f"{self.who}: monitor {self.monitor!r} is not in this epoch's logs "
                f"({', '.join(logs)}); monitor one of those{hint}"
            )
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (it then becomes the best)."""
        if math.isnan(value):
            return False
        if self.best is not None:
            better = (
                value < self.best - self.min_delta
                if self.mode == "min"
                else value > self.best + self.min_delta
            )
            if not better:
                return False
        self.best = value
        return True


# -- early stopping ----------------------------------------------------------------------------
class EarlyStopping(Callback):
    """Stop training once ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: an entry of the epoch logs ("val_loss", "val_accuracy", "loss", ...).
        patience: epochs without improvement before stopping (0 and 1 both stop at the first).
        min_delta: the least change that counts as an improvement.
        mode: "min", "max" or "auto" ("max" for accuracies).
        restore_best_weights: at the end of training (stopped or not), put back the parameters
            and buffers of the best epoch (a copy of them is kept on the device).

    After training: ``best`` (the best value), ``best_epoch`` and ``stopped_epoch`` (None if
    training ran to the end).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        self.patience = count(patience, "patience", "EarlyStopping")
        self.tracker = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.restore_best_weights = flag(
            restore_best_weights, "restore_best_weights", "EarlyStopping"
        )
        self.best_weights: list[tuple[dict[str, Any], dict[str, Any]]] | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.last_epoch = 0

    @property
    def best(self) -> float | None:
        return self.tracker.best

    def on_train_begin(self, logs: Logs) -> None:
        self.tracker.best, self.best_weights, self.best_epoch = None, None, None
        self.stopped_epoch, self.wait = None, 0

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self.last_epoch = epoch
        if self.tracker.improved(self.tracker.value(logs)):
            self.best_epoch, self.wait = epoch, 0
            if self.restore_best_weights:
                self.best_weights = snapshot(self.model)
            return
        self.wait += 1
        if self.wait >= max(1, self.patience):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Logs) -> None:
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            restore(self.model, self.best_weights)
        self.best_weights = None


def snapshot(model: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Device copies of every layer's parameters and buffers."""
    xp = model.xp
    return [
        (
            {k: xp.asarray(v, copy=True) for k, v in layer.params.items()},
            {k: xp.asarray(v, copy=True) for k, v in layer.buffers.items()},
        )
        for layer in model.layers
    ]


def restore(model: Any, saved: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Put a `snapshot` back into the model's layers."""
    for layer, (params, buffers) in zip(model.layers, saved):
        layer.params.update(params)
        layer.buffers.update(buffers)


# -- checkpoints -------------------------------------------------------------------------------
#: how a ModelCheckpoint path names the epoch and logs
TEMPLATE_HELP = (
    "name the epoch as {epoch} or {epoch:03d}, a log as {val_loss:.4f}, and write literal braces "
    "as {{ and }}"
)


class ModelCheckpoint(Callback):
    """Save a training checkpoint (`ailib.io.save_checkpoint`: the model, the optimizer's state,
    the epoch, the history and the random generators) after every epoch, or only after those
    that improve ``monitor``. `ailib.load` reads the file as a model.

    Args:
        path: the file; may name the epoch and logs, e.g. "runs/ckpt-{epoch:03d}.npz".
        save_best_only: write only when ``monitor`` improves (the file then holds the best model).
        monitor, mode, min_delta: what "improves" means (see `EarlyStopping`); used only with
            ``save_best_only``.
        resume: if the file exists when training starts, restore it first and continue after
            its epoch (`fit(checkpoint=path, resume=True)`); the result equals an uninterrupted
            run. Without a file, training starts afresh. A checkpoint of another model or of
            other optimizer settings is refused (`ailib.io.CheckpointMismatch`, saying what
            differs); one that already holds ``epochs`` epochs leaves nothing to train.
        verbose: on resuming, say on ``stream`` (standard error) what was restored, or that
            nothing is left to do.

    ``saved`` lists the (epoch, path) pairs written; ``restored`` is the epoch a resumed run
    continued after (None if it started afresh).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        save_best_only: bool = False,
        monitor: str = "val_loss",
        mode: str = "auto",
        min_delta: float = 0.0,
        resume: bool = False,
        verbose: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.path = str(path)
        self.verbose, self.stream = flag(verbose, "verbose", "ModelCheckpoint"), stream
        save_best_only = flag(save_best_only, "save_best_only", "ModelCheckpoint")
        resume = flag(resume, "resume", "ModelCheckpoint")
        self.restored: int | None = None
        self.settings: dict[str, Any] | None = None
        if resume and (save_best_only or "{" in self.path):
            raise ValueError(
                "ModelCheckpoint: resume=True needs one file written after every epoch; it "
                "cannot be combined with save_best_only or a path naming the epoch"
            )
        if "{" in self.path:  # a template: checked now, filled in later
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None]
            except ValueError as exc:
                raise ValueError(
                    f"ModelCheckpoint: path {self.path!r} is not a valid template ({exc}); "
                    f"{TEMPLATE_HELP}"
                ) from None
            if any(not f or f.split(".")[0].split("[")[0].isdigit() for f in fields):
                raise ValueError(
                    f"ModelCheckpoint: path {self.path!r} has a positional field; {TEMPLATE_HELP}"
                )
        if os.path.isdir(self.path):  # found now, not after the first epoch's training
            raise IsADirectoryError(
                f"ModelCheckpoint: {self.path} is a directory; give the name of a file to "
                f"write, e.g. {os.path.join(self.path, 'checkpoint.npz')}"
            )
        if os.path.exists(self.path) and not os.path.isfile(self.path):  # a FIFO, a device
            raise FileExistsError(
                f"ModelCheckpoint: {self.path} exists and is not a regular file; give the name "
                f"of a file to write"
            )
        self.save_best_only, self.resume = save_best_only, resume
        self.tracker = _Monitor("ModelCheckpoint", monitor, mode, min_delta)
        self.saved: list[tuple[int, Path]] = []

    def on_train_begin(self, logs: Logs) -> None:
        self.tracker.best, self.restored = None, None
        trainer = self.trainer
        self.settings = trainer.optimizer.get_config()  # as the run begins: what resumes match
        if not (self.resume and os.path.exists(self.path)):
            return
        epoch, history = io.restore_checkpoint(self.model, self.path, trainer.optimizer)
        trainer.initial_epoch, trainer.history, self.restored = epoch, history, epoch
        if not self.verbose or not getattr(trainer, "is_root", True):  # rank 0 says it
            return
        if epoch >= trainer.epochs:
            message = (
                f"nothing left to do: {self.path} already holds {epoch} epoch"
                f"{'s' if epoch != 1 else ''} (epochs={trainer.epochs}); give more epochs to "
                f"train further, or resume=False to start afresh"
            )
        else:
            message = (
                f"resumed from {self.path}: epochs 1-{epoch} restored (weights, optimizer state, "
                f"random state, history); training epochs {epoch + 1}-{trainer.epochs}"
            )
        print(message, file=self.stream or sys.stderr, flush=True)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self.save_best_only and not self.tracker.improved(self.tracker.value(logs)):
            return
        if not getattr(self.trainer, "is_root", True):  # data-parallel: rank 0 writes
            return
        try:
            path = Path(self.path.format(epoch=epoch, **logs) if "{" in self.path else self.path)
        except (KeyError, AttributeError, IndexError, ValueError) as exc:  # e.g. {foo}
            raise ValueError(
                f"ModelCheckpoint: path {self.path!r} cannot be filled in from this epoch "
                f"({type(exc).__name__}: {exc}); it may name epoch, "
                f"{', '.join(sorted(logs))}; {TEMPLATE_HELP}"
            ) from None
        history = extended(self.trainer.history, logs)
        io.save_checkpoint(
            self.model, path, self.trainer.optimizer, epoch, history, settings=self.settings
        )
        self.saved.append((epoch, path))


# -- learning rates ----------------------------------------------------------------------------
class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate to ``schedule(t)`` before each epoch (``unit="epoch"``,
    t = the epoch, from 1) or before each update (``unit="step"``, t = the optimizer's update
    count + 1, which continues across epochs and resumed runs). Schedules: `ailib.schedules`."""

    def __init__(self, schedule: Callable[[int], float], unit: str = "epoch") -> None:
        if unit not in ("epoch", "step"):
            raise ValueError(
                f"LearningRateScheduler: unit must be 'epoch' or 'step', received {unit!r}"
            )
        self.schedule, self.unit = schedule, unit
        self.acts_between_steps = unit == "step"  # by epoch, its batch hook does nothing

    def _set(self, t: int) -> None:
        lr = float(self.schedule(t))
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(
                f"LearningRateScheduler: schedule({t}) returned {lr}; a learning rate must be "
                f"a finite number >= 0"
            )
        self.trainer.optimizer.lr = lr

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        if self.unit == "epoch":
            self._set(epoch)

    def on_batch_begin(self, step: int, logs: Logs) -> None:
        if self.unit == "step":
            self._set(self.trainer.optimizer.iterations + 1)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` once ``monitor`` has not improved for
    ``patience`` epochs (0 and 1: at the first), never going below ``min_lr``; the ``cooldown``
    epochs after a reduction do not count towards the next one (as in PyTorch)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        mode: str = "auto",
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        who = "ReduceLROnPlateau"
        factor, min_lr = number(factor, "factor", who), number(min_lr, "min_lr", who)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"{who}: factor must lie in (0, 1), received {factor}")
        if not 0.0 <= min_lr < math.inf:
            raise ValueError(f"{who}: min_lr must be >= 0 and finite, received {min_lr}")
        self.patience, self.cooldown = (
            count(patience, "patience", who),
            count(cooldown, "cooldown", who),
        )
        self.tracker = _Monitor(who, monitor, mode, min_delta)
        self.factor, self.min_lr = factor, min_lr
        self.wait = self.cooling = 0

    def on_train_begin(self, logs: Logs) -> None:
        self.tracker.best, self.wait, self.cooling = None, 0, 0

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self.wait = 0 if self.tracker.improved(self.tracker.value(logs)) else self.wait + 1
        if self.cooling > 0:
            self.cooling, self.wait = self.cooling - 1, 0
        optimizer = self.trainer.optimizer
        if self.wait >= max(1, self.patience) and optimizer.lr > self.min_lr:
            optimizer.lr = max(optimizer.lr * self.factor, self.min_lr)
            self.wait, self.cooling = 0, self.cooldown


# -- reporting ---------------------------------------------------------------------------------
class ProgressEvents(Callback):
    """Calls ``report(event)`` with the dictionaries of `fit(progress=...)`:
    ``{"event": "step", "epoch", "epochs", "step", "steps", "loss", "samples", "seconds"}``
    whenever fit reads the losses back (every ``log_every`` steps and at the epoch's last step;
    "steps" is None for an iterable of unknown length), and
    ``{"event": "epoch_end", "epoch", "epochs", **epoch logs}`` after each epoch."""

    writes = True

    def __init__(self, report: Callable[[dict[str, Any]], None]) -> None:
        self.report = report
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        self.epoch = epoch

    def on_batch_end(self, step: int, logs: Logs) -> None:
        if "loss" in logs:
            self.report(
                {
                    "event": "step",
                    "epoch": self.epoch,
                    "epochs": self.trainer.epochs,
                    "step": step,
                    "steps": self.trainer.steps,
                    "loss": logs["loss"],
                    "samples": logs["samples"],
                    "seconds": logs["seconds"],
                }
            )

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self.report({"event": "epoch_end", "epoch": epoch, "epochs": self.trainer.epochs, **logs})


class PrintEpochs(Callback):
    """One line per epoch, ``epoch 3/10: loss=0.3124, accuracy=0.8812, ...`` (`fit(verbose=True)`)."""

    writes = True

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        values = ", ".join(f"{k}={v:.4f}" for k, v in logs.items() if isinstance(v, (int, float)))
        print(
            f"epoch {epoch}/{self.trainer.epochs}: {values}",
            file=self.stream or sys.stdout,
            flush=True,
        )


__all__ = [
    "Callback",
    "EarlyStopping",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "PrintEpochs",
    "ProgressEvents",
    "ReduceLROnPlateau",
]
