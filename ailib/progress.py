"""Training progress: the one implementation behind `fit(verbose=...)` and the ``ailib`` command.

On a terminal: one bar, redrawn in place, with the epoch, the batch, the running loss, samples/s
and the time left in the whole run; then one line per finished epoch. Not a terminal (a pipe, a
log file, a notebook's captured stream) or ``bar=False``: the epoch lines only. The figures are
right from the first update: the rate is the samples fit has trained on over the seconds fit
measured since the epoch began, and the time left is the run's remaining batches at the run's
own pace so far (validation included).

`ProgressBar` is a `Callback` (what `fit` adds for ``verbose="auto"``); it also takes the event
dictionaries of `fit(progress=...)` (`ailib.callbacks.ProgressEvents`), which is how callers that
only have events can feed it.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from .callbacks import Callback, Logs

#: the width used when the terminal reports none (some terminals and CI runners report 0x0)
FALLBACK_COLUMNS = 80
#: seconds between redraws of the bar (the first and last batch of an epoch are always drawn)
REDRAW_SECONDS = 0.1


class ProgressBar(Callback):
    """Progress of `fit`: a bar on a terminal, one line per epoch always.

    Args:
        samples: training samples per epoch (kept for callers; rates come from fit's counts).
        quiet: epoch lines only, even on a terminal.
        stream: where to write: a text stream, or "stderr" (the default) / "stdout" for the
            process's standard error / output as it is when writing (so redirections apply).
        bar: draw the bar (default: when ``stream`` is a terminal and not ``quiet``).
    """

    writes = True  # it only reports: under fit(distributed=...), rank 0 shows it

    def __init__(
        self,
        samples: int | None = None,
        quiet: bool = False,
        stream: TextIO | str | None = None,
        bar: bool | None = None,
    ) -> None:
        if stream is not None and isinstance(stream, str) and stream not in ("stdout", "stderr"):
            raise ValueError(
                f"ProgressBar: stream must be a text stream, 'stdout' or 'stderr', received "
                f"{stream!r}"
            )
        self.samples = samples
        self._stream = stream
        self.bar = (not quiet and _isatty(self.stream)) if bar is None else bool(bar)
        self.rate = 0.0  # samples/s of the current epoch so far
        self.run_start: float | None = None  # when the first epoch of this run began
        self.first_epoch = 1
        self.drawn_at = -1.0
        self.drawn = False
        self.started = False  # start() said what the run will do
        self.epoch = 0
        self.loss = float("nan")  # the running loss last read back

    @property
    def stream(self) -> TextIO:
        if self._stream is None or self._stream == "stderr":
            return sys.stderr
        return sys.stdout if self._stream == "stdout" else self._stream

    # -- what the run will do -------------------------------------------------------------------
    def start(
        self, epochs: int, steps: int | None, samples: int | None, first_epoch: int = 1
    ) -> None:
        """Say what the run will do, before its first batch (something to read at once)."""
        self.run_start, self.first_epoch, self.started = time.perf_counter(), first_epoch, True
        left = epochs - first_epoch + 1
        if left < 1:
            return  # nothing to train (a finished checkpoint says so itself)
        what = f"{steps} batches" if steps else "batches"
        if samples:
            what += f" ({samples:,} samples)"
        print(
            f"training: {left} epoch{'s' if left != 1 else ''} of {what}"
            + (f", from epoch {first_epoch}" if first_epoch > 1 else ""),
            file=self.stream,
            flush=True,
        )

    # -- as a callback --------------------------------------------------------------------------
    def on_train_begin(self, logs: Logs) -> None:
        trainer = self.trainer
        self.started = False
        self.start(
            trainer.epochs,
            trainer.steps,
            getattr(trainer, "samples", None) or self.samples,
            trainer.initial_epoch + 1,
        )

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        self.epoch = epoch

    def on_batch_end(self, step: int, logs: Logs) -> None:
        if "loss" in logs:
            self.loss = logs["loss"]
        self._step(self.epoch, self.trainer.epochs, step, self.trainer.steps, logs)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self._epoch_end({"epoch": epoch, "epochs": self.trainer.epochs, **logs})

    # -- as fit(progress=...)'s event sink ------------------------------------------------------
    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "step":
            self.loss = event["loss"]
            self._step(event["epoch"], event["epochs"], event["step"], event["steps"], event)
        elif event["event"] == "epoch_end":
            self._epoch_end(event)

    # -- drawing --------------------------------------------------------------------------------
    def _step(
        self, epoch: int, epochs: int, step: int, steps: int | None, logs: dict[str, Any]
    ) -> None:
        now = time.perf_counter()
        if self.run_start is None:  # no start(): the run began when this epoch did
            self.run_start, self.first_epoch = now - logs["seconds"], epoch
        self.rate = logs["samples"] / max(logs["seconds"], 1e-9)
        if self.bar and (step == steps or now - self.drawn_at >= REDRAW_SECONDS):
            self._draw(epoch, epochs, step, steps or 0, now)

    def _epoch_end(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if self.run_start is None:
            self.run_start, self.first_epoch = now - event["seconds"], event["epoch"]
        done = event["epoch"] - self.first_epoch + 1
        left = event["epochs"] - event["epoch"]
        eta = (now - self.run_start) / done * left if done > 0 else None
        self._clear()
        print(epoch_line(event, self.rate, eta if left else None), file=self.stream, flush=True)

    def eta(self, epoch: int, epochs: int, step: int, steps: int, now: float) -> float | None:
        """Seconds left in the run: the batches left at the run's pace so far."""
        if self.run_start is None or not steps:
            return None
        done = (epoch - self.first_epoch) * steps + step
        left = (epochs - epoch) * steps + (steps - step)
        return (now - self.run_start) / done * left if done > 0 else None

    def _draw(self, epoch: int, epochs: int, step: int, steps: int, now: float) -> None:
        eta = self.eta(epoch, epochs, step, steps, now)
        head = f"epoch {epoch}/{epochs} "
        loss = f" loss {self.loss:.4f}" if self.loss == self.loss else ""  # not NaN: read once
        tail = f" {step}/{steps or '?'}{loss} {self.rate:,.0f} samples/s" + (
            f" ETA {clock(eta)}" if eta is not None else ""
        )
        width = terminal_columns(self.stream) - 1
        room = width - len(head) - len(tail) - 2
        if room >= 10 and steps:
            filled = room * step // steps
            line = f"{head}[{'#' * filled}{'.' * (room - filled)}]{tail}"
        else:
            line = (head + tail.lstrip())[:width]
        self.stream.write("\r" + line.ljust(width))
        self.stream.flush()
        self.drawn_at, self.drawn = now, True

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * (terminal_columns(self.stream) - 1) + "\r")
            self.drawn = False


def epoch_line(event: dict[str, Any], rate: float, eta: float | None = None) -> str:
    """``epoch 3/10: loss 0.3124, accuracy 88.12%, val loss 0.35, val accuracy 87.40%, ...``"""
    parts = [f"epoch {event['epoch']}/{event['epochs']}: loss {event['loss']:.4f}"]
    if "accuracy" in event:
        parts.append(f"accuracy {100 * event['accuracy']:.2f}%")
    if "val_loss" in event:
        parts.append(f"val loss {event['val_loss']:.4f}")
    if "val_accuracy" in event:
        parts.append(f"val accuracy {100 * event['val_accuracy']:.2f}%")
    parts.append(f"{event['seconds']:.1f} s, {rate:,.0f} samples/s")
    if eta is not None:
        parts.append(f"{clock(eta)} left")
    return ", ".join(parts)


def clock(seconds: float) -> str:
    """``75.4`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to; `FALLBACK_COLUMNS` when it reports none
    (0x0) or is not one."""
    try:
        columns = shutil.get_terminal_size((0, 0)).columns
    except (OSError, ValueError):
        columns = 0
    return columns if columns >= 20 else FALLBACK_COLUMNS


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


__all__ = ["FALLBACK_COLUMNS", "REDRAW_SECONDS", "ProgressBar", "clock", "epoch_line"]
