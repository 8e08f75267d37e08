"""Training progress (`ailib.progress.ProgressBar`): right figures from the first update, the
run's time left, a bar on any terminal, plain epoch lines elsewhere."""

from __future__ import annotations

import io
import os
import shutil
from typing import Any

import pytest

from ailib import progress as cli_progress
from ailib.progress import ProgressBar as Progress
from ailib.progress import clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock_(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cli_progress, "time", fake)
    return fake


def step(epoch: int, step_: int, samples: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "event": "step",
        "epoch": epoch,
        "epochs": 4,
        "step": step_,
        "steps": 10,
        "loss": 0.5,
        "samples": samples,
        "seconds": seconds,
        **extra,
    }


def last_frame(text: str) -> str:
    return text.split("\r")[-1]


def test_the_first_update_shows_the_true_rate_and_the_whole_runs_eta(clock_: Clock) -> None:
    stream = Terminal()
    progress = Progress(stream=stream)
    progress.start(epochs=4, steps=10, samples=1000)
    assert stream.getvalue() == "training: 4 epochs of 10 batches (1,000 samples)\n"
    clock_.now += 2.0  # 2 of the run's 40 batches in 2 s: 38 s left, 100 samples/s
    progress(step(1, 2, samples=200, seconds=2.0))
    frame = last_frame(stream.getvalue())
    assert "epoch 1/4 [" in frame and " 2/10 loss 0.5000 100 samples/s ETA 0:38" in frame
    assert len(frame) == cli_progress.terminal_columns(stream) - 1


def test_eta_counts_the_epochs_still_to_come_and_a_resumed_runs_own_pace(clock_: Clock) -> None:
    stream = Terminal()
    progress = Progress(stream=stream)
    progress.start(epochs=4, steps=10, samples=1000, first_epoch=3)  # epochs 1-2 done before
    clock_.now += 5.0  # epoch 3, 5 batches in 5 s: 15 batches left
    progress(step(3, 5, samples=500, seconds=5.0))
    assert "ETA 0:15" in last_frame(stream.getvalue())
    clock_.now += 5.0
    progress({"event": "epoch_end", "epoch": 3, "epochs": 4, "loss": 0.4, "seconds": 10.0})
    assert stream.getvalue().endswith(
        "\repoch 3/4: loss 0.4000, 10.0 s, 100 samples/s, 0:10 left\n"
    )


def test_a_terminal_that_reports_0x0_still_gets_a_bar(
    clock_: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((0, 0)))
    stream = Terminal()
    Progress(stream=stream)(step(1, 1, samples=100, seconds=1.0))
    frame = last_frame(stream.getvalue())
    assert "[" in frame and len(frame) == cli_progress.FALLBACK_COLUMNS - 1


def test_piped_or_quiet_output_is_one_line_per_epoch(clock_: Clock) -> None:
    for stream, quiet in ((io.StringIO(), False), (Terminal(), True)):
        progress = Progress(stream=stream, quiet=quiet)
        progress(step(1, 5, samples=500, seconds=1.0))
        assert stream.getvalue() == ""
        clock_.now += 1.0  # the epoch took 2 s (the step came 1 s in): 3 more take 6 s
        progress(
            {
                "event": "epoch_end",
                "epoch": 1,
                "epochs": 4,
                "loss": 0.4,
                "accuracy": 0.9,
                "val_loss": 0.3,
                "val_accuracy": 0.875,
                "seconds": 2.0,
            }
        )
        assert stream.getvalue() == (
            "epoch 1/4: loss 0.4000, accuracy 90.00%, val loss 0.3000, val accuracy 87.50%, "
            "2.0 s, 500 samples/s, 0:06 left\n"
        )


def test_redraws_are_rate_limited_but_the_epochs_last_batch_is_drawn(clock_: Clock) -> None:
    stream = Terminal()
    progress = Progress(stream=stream)
    progress(step(1, 1, samples=100, seconds=0.01))
    progress(step(1, 2, samples=200, seconds=0.02))  # 0.01 s later: not redrawn
    assert stream.getvalue().count("\r") == 1
    progress(step(1, 10, samples=1000, seconds=0.03))
    assert " 10/10 " in last_frame(stream.getvalue())


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0:00"), (75.4, "1:15"), (3725, "1:02:05")])
def test_clock(seconds: float, text: str) -> None:
    assert clock(seconds) == text
