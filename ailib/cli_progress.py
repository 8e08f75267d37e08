"""Training progress for the ``ailib`` command, fed by `Sequential.fit`'s ``progress`` callback.

On a terminal with tqdm installed: one bar per epoch with the running loss and samples/s. Else
(not a terminal, no tqdm, or ``--quiet``): one plain line per epoch.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    """The ``progress`` callback of `Sequential.fit` for the command line.

    Args:
        samples: training samples per epoch (for samples/s at the end of an epoch).
        quiet: plain lines only, even on a terminal.
        stream: where to write (default: stderr).
    """

    def __init__(self, samples: int, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.samples = samples
        self.stream = stream if stream is not None else sys.stderr
        self.tqdm = None if quiet or not self.stream.isatty() else _tqdm()
        self.bar: Any = None
        self.rate = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "step":
            self.rate = event["samples"] / max(event["seconds"], 1e-9)
            if self.tqdm is not None:
                self._bar(event)
        elif event["event"] == "epoch_end":
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            print(epoch_line(event, self.rate), file=self.stream, flush=True)

    def _bar(self, event: dict[str, Any]) -> None:
        if self.bar is None:
            self.bar = self.tqdm(
                total=event["steps"],
                desc=f"epoch {event['epoch']}/{event['epochs']}",
                unit="batch",
                file=self.stream,
                leave=False,
            )
        self.bar.update(event["step"] - self.bar.n)
        self.bar.set_postfix_str(f"loss {event['loss']:.4f}, {self.rate:,.0f} samples/s")


def epoch_line(event: dict[str, Any], rate: float) -> str:
    """``epoch 3/10: loss 0.3124, accuracy 88.12%, test loss 0.35, test accuracy 87.40%, ...``"""
    parts = [f"epoch {event['epoch']}/{event['epochs']}: loss {event['loss']:.4f}"]
    if "accuracy" in event:
        parts.append(f"accuracy {100 * event['accuracy']:.2f}%")
    if "val_loss" in event:
        parts.append(f"test loss {event['val_loss']:.4f}")
    if "val_accuracy" in event:
        parts.append(f"test accuracy {100 * event['val_accuracy']:.2f}%")
    parts.append(f"{event['seconds']:.1f} s, {rate:,.0f} samples/s")
    return ", ".join(parts)


def _tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm
