"""What a newcomer meets in `fit` (issue #9): progress by default (a bar on a terminal, a line
per epoch elsewhere, nothing with verbose=False), what a resumed checkpoint restored or that it
had nothing left to do, a refusal of other settings, and `validation_split`."""

from __future__ import annotations

import io as text_io
import sys
from pathlib import Path

import numpy as np
import pytest

import ailib
from ailib.callbacks import ModelCheckpoint
from ailib.layers import Dense, ReLU
from ailib.optimizers import SGD
from ailib.progress import ProgressBar
from ailib.training import progress_callback, split_rows

X = np.random.default_rng(1).random((40, 6), dtype=np.float32)
Y = np.arange(40) % 3


def _model() -> ailib.Sequential:
    return ailib.Sequential([Dense(6, 8), ReLU(), Dense(8, 3)], backend="numpy", seed=3)


class Terminal(text_io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fit_shows_progress_by_default_and_nothing_when_told(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _model().fit(X, Y, epochs=2, batch_size=8)
    out = capsys.readouterr().out  # captured: not a terminal, so epoch lines and no bar
    lines = out.splitlines()
    assert lines[0] == "training: 2 epochs of 5 batches (40 samples)"
    assert [line.split(":")[0] for line in lines[1:]] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in out and "samples/s" in lines[1] and "left" in lines[1]
    _model().fit(X, Y, epochs=2, batch_size=8, verbose=False)
    assert capsys.readouterr() == ("", "")


def test_verbose_values() -> None:
    assert progress_callback(False) is None and progress_callback(0) is None
    for value in ("auto", True, 1):
        assert isinstance(progress_callback(value), ProgressBar)
    assert progress_callback(2).bar is False and progress_callback("epoch").bar is False
    assert progress_callback("auto").stream is sys.stdout  # looked up when writing, as Keras
    with pytest.raises(ValueError, match="stream must be a text stream, 'stdout' or 'stderr'"):
        ProgressBar(stream="stdrr")
    with pytest.raises(ValueError, match="verbose must be .* received 'loud'"):
        _model().fit(X, Y, verbose="loud")


def test_the_bar_is_drawn_on_a_terminal_from_the_first_batch() -> None:
    stream = Terminal()
    _model().fit(
        X, Y, epochs=1, batch_size=8, verbose=False, callbacks=[ProgressBar(stream=stream)]
    )
    text = stream.getvalue()
    frames = [f for f in text.split("\r") if f.startswith("epoch 1/1 [")]
    assert frames and " 1/5 " in frames[0] and "samples/s" in frames[0]  # batch 1 already
    assert text.endswith("\n") and "epoch 1/1: loss " in text.splitlines()[-1]


def test_resume_says_what_it_restored_and_when_nothing_is_left(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    _model().fit(X, Y, epochs=2, batch_size=8, checkpoint=path, verbose=False)
    stream = text_io.StringIO()
    more = ModelCheckpoint(path, resume=True, stream=stream)
    history = _model().fit(X, Y, epochs=3, batch_size=8, callbacks=[more], verbose=False)
    assert more.restored == 2 and len(history["loss"]) == 3
    assert stream.getvalue().startswith(f"resumed from {path}: epochs 1-2 restored")
    assert "training epochs 3-3" in stream.getvalue()
    stream = text_io.StringIO()
    done = ModelCheckpoint(path, resume=True, stream=stream)
    model = _model()
    before = [np.array(p) for p in model.params.values()]
    history = model.fit(X, Y, epochs=3, batch_size=8, callbacks=[done], verbose=False)
    assert stream.getvalue().startswith(f"nothing left to do: {path} already holds 3 epochs")
    assert len(history["loss"]) == 3  # the checkpoint's history; no epoch trained
    restored = [np.array(p) for p in model.params.values()]
    assert any(not np.array_equal(a, b) for a, b in zip(before, restored))  # its weights


def test_resume_with_other_settings_is_refused_and_says_which(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    _model().fit(
        X, Y, epochs=1, batch_size=8, checkpoint=path, optimizer=SGD(lr=0.1), verbose=False
    )
    with pytest.raises(ailib.CheckpointMismatch, match=r"lr 0.1 \(checkpoint\) vs 0.05 \(now\)"):
        _model().fit(
            X, Y, epochs=2, checkpoint=path, resume=True, optimizer=SGD(lr=0.05), verbose=False
        )
    with pytest.raises(ailib.CheckpointMismatch, match=r"momentum 0.0 \(checkpoint\) vs 0.9"):
        _model().fit(
            X,
            Y,
            epochs=2,
            checkpoint=path,
            resume=True,
            optimizer=SGD(lr=0.1, momentum=0.9),
            verbose=False,
        )
    wider = ailib.Sequential([Dense(6, 9), ReLU(), Dense(9, 3)], backend="numpy", seed=3)
    with pytest.raises(ailib.CheckpointMismatch, match="out_features 8 .checkpoint. vs 9"):
        wider.fit(
            X, Y, epochs=2, checkpoint=path, resume=True, optimizer=SGD(lr=0.1), verbose=False
        )


def test_a_scheduled_learning_rate_does_not_count_as_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    kwargs = dict(batch_size=8, checkpoint=path, lr_schedule=lambda e: 0.1 / e, verbose=False)
    _model().fit(X, Y, epochs=2, optimizer=SGD(lr=0.1), **kwargs)
    history = _model().fit(X, Y, epochs=3, optimizer=SGD(lr=0.1), resume=True, **kwargs)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_validation_split_holds_out_the_last_rows_before_shuffling() -> None:
    assert split_rows(40, 0.25) == 10 and split_rows(10, 0.15) == 2  # Keras: n - int(n*(1-f))
    split = _model().fit(X, Y, epochs=2, batch_size=8, validation_split=0.25, verbose=False)
    given = _model().fit(
        X[:30], Y[:30], epochs=2, batch_size=8, validation_data=(X[30:], Y[30:]), verbose=False
    )
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert split[key] == pytest.approx(given[key], rel=1e-6), key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"validation_split": 1.0}, r"validation_split must lie in \(0, 1\), received 1.0"),
        ({"validation_split": -0.1}, r"validation_split must lie in \(0, 1\)"),
        ({"validation_split": "0.1"}, "validation_split must be a number"),
        ({"validation_split": 0.2, "validation_data": (X, Y)}, "not both"),
        ({"validation_split": 0.99}, "leaves 0 to train on and 40 to validate on"),
    ],
)
def test_validation_split_refuses_what_it_cannot_do(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        _model().fit(X, Y, verbose=False, **kwargs)
    with pytest.raises(ValueError, match="validation_split needs x and y arrays"):
        _model().fit([(X, Y)], validation_split=0.5, verbose=False)
