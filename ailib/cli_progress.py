"""Training progress, fed by `Sequential.fit`'s ``progress`` events.

On a terminal: one bar, redrawn in place, with the epoch, the batch, the running loss, samples/s
and the time left in the whole run; then one line per finished epoch. Not a terminal (a pipe, a
log file) or ``bar=False``: the epoch lines only. The figures are right from the first update:
rates are samples over the seconds fit measured since the epoch began, and the time left is
the run's remaining batches at the run's own pace so far (validation included).
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

#: the width used when the terminal reports none (some terminals and CI runners report 0x0)
FALLBACK_COLUMNS = 80
#: seconds between redraws of the bar (the first and last batch of an epoch are always drawn)
REDRAW_SECONDS = 0.1


class Progress:
    """The ``progress`` callback of `Sequential.fit`: a bar on a terminal, epoch lines always.

    Args:
        samples: training samples per epoch (kept for callers; rates come from the events).
        quiet: epoch lines only, even on a terminal.
        stream: where to write (default: stderr).
        bar: draw the bar (default: when ``stream`` is a terminal and not ``quiet``).
    """

    def __init__(
        self,
        samples: int | None = None,
        quiet: bool = False,
        stream: TextIO | None = None,
        bar: bool | None = None,
    ) -> None:
        self.samples = samples
        self.stream = stream if stream is not None else sys.stderr
        self.bar = (not quiet and _isatty(self.stream)) if bar is None else bar
        self.rate = 0.0  # samples/s of the current epoch so far
        self.run_start: float | None = None  # when the first epoch of this run began
        self.first_epoch = 1
        self.drawn_at = -1.0
        self.drawn = False

    def start(self, epochs: int, steps: int, samples: int, first_epoch: int = 1) -> None:
        """Say what the run will do, before its first batch (something to read at once)."""
        self.run_start, self.first_epoch = time.perf_counter(), first_epoch
        left = epochs - first_epoch + 1
        print(
            f"training: {left} epoch{'s' if left != 1 else ''} of {steps} batches "
            f"({samples:,} samples)" + (f", from epoch {first_epoch}" if first_epoch > 1 else ""),
            file=self.stream,
            flush=True,
        )

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if event["event"] == "step":
            if self.run_start is None:  # no start(): the run began when this epoch did
                self.run_start, self.first_epoch = now - event["seconds"], event["epoch"]
            self.rate = event["samples"] / max(event["seconds"], 1e-9)
            last = event["step"] == event["steps"]
            if self.bar and (last or now - self.drawn_at >= REDRAW_SECONDS):
                self._draw(event, now)
        elif event["event"] == "epoch_end":
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

    def _draw(self, event: dict[str, Any], now: float) -> None:
        steps = event["steps"] or 0
        eta = self.eta(event["epoch"], event["epochs"], event["step"], steps, now)
        head = f"epoch {event['epoch']}/{event['epochs']} "
        tail = f" {event['step']}/{steps} loss {event['loss']:.4f} {self.rate:,.0f} samples/s" + (
            f" ETA {clock(eta)}" if eta is not None else ""
        )
        width = terminal_columns(self.stream) - 1
        room = width - len(head) - len(tail) - 2
        if room >= 10 and steps:
            filled = room * event["step"] // steps
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
