"""Callbacks: hooks called in order and able to stop training, early stopping with the best
weights restored, best-only checkpoints, learning-rate schedules and plateaus, progress."""

from __future__ import annotations

import io as text_io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ailib
from ailib.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    PrintEpochs,
    ProgressEvents,
    ReduceLROnPlateau,
)
from ailib.layers import BatchNorm1D, Dense, ReLU
from ailib.optimizers import SGD, Adam

from .helpers import host


def _data(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 5)).astype(np.float32), rng.integers(0, 3, n)


def _model(backend: Any = "numpy") -> ailib.Sequential:
    return ailib.Sequential(
        [Dense(5, 8), BatchNorm1D(8), ReLU(), Dense(8, 3)], backend=backend, seed=0
    )


class Score(Callback):
    """Puts a scripted value under ``logs["score"]`` at each epoch's end (before the callbacks
    listed after it), and keeps host copies of the weights and buffers of every epoch."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.weights: dict[int, dict[str, np.ndarray]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        logs["score"] = self.values[epoch - 1]
        self.weights[epoch] = _state(self.model)


def _state(model: ailib.Sequential) -> dict[str, np.ndarray]:
    return {
        f"{i}.{kind}.{k}": host(v).copy()
        for i, layer in enumerate(model.layers)
        for kind in ("params", "buffers")
        for k, v in getattr(layer, kind).items()
    }


def _assert_state(model: ailib.Sequential, expected: dict[str, np.ndarray]) -> None:
    actual = _state(model)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


# -- the base class -----------------------------------------------------------------------------
class Recorder(Callback):
    def __init__(self, stop_at: tuple[str, int, int] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stop_at = stop_at
        self.epoch = 0

    def _note(self, hook: str, index: int | None, logs: dict[str, Any]) -> None:
        self.calls.append((hook,) if index is None else (hook, index))
        if self.stop_at is not None and self.stop_at == (hook, self.epoch, index):
            self.model.stop_training = True

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self._note("train_begin", None, logs)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self._note("train_end", None, logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self.epoch = epoch
        assert self.model.training
        self._note("epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        assert {"loss", "accuracy", "lr", "seconds"} <= set(logs)
        logs["custom"] = 10.0 * epoch  # goes into the history
        self._note("epoch_end", epoch, logs)

    def on_batch_begin(self, step: int, logs: dict[str, Any]) -> None:
        self._note("batch_begin", step, logs)

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        assert {"size", "samples", "seconds", "batch_loss"} <= set(logs)
        assert ("loss" in logs) == (step == 2)  # read back at the epoch's last step only
        self._note("batch_end", step, logs)


def test_hooks_are_called_in_order_and_logs_reach_the_history() -> None:
    x, y = _data(16)
    recorder = Recorder()
    history = _model().fit(x, y, epochs=2, batch_size=8, callbacks=[recorder])
    epoch = [("batch_begin", 1), ("batch_end", 1), ("batch_begin", 2), ("batch_end", 2)]
    assert recorder.calls == [
        ("train_begin",),
        ("epoch_begin", 1),
        *epoch,
        ("epoch_end", 1),
        ("epoch_begin", 2),
        *epoch,
        ("epoch_end", 2),
        ("train_end",),
    ]
    assert history["custom"] == [10.0, 20.0]


@pytest.mark.parametrize(
    "stop_at, epochs_done, last",
    [
        (("batch_end", 2, 1), 2, ("batch_end", 1)),
        (("epoch_end", 1, 1), 1, ("epoch_end", 1)),
        (("epoch_begin", 3, 3), 3, ("batch_end", 1)),
    ],
    ids=["in-a-batch", "at-an-epoch-end", "at-an-epoch-begin"],
)
def test_a_callback_stops_training(
    stop_at: tuple[str, int, int], epochs_done: int, last: tuple[str, int]
) -> None:
    x, y = _data(16)
    recorder = Recorder(stop_at=stop_at)
    history = _model().fit(x, y, epochs=5, batch_size=8, callbacks=[recorder])
    assert len(history["loss"]) == epochs_done
    assert recorder.calls[-1] == ("train_end",)
    assert last in recorder.calls[-4:]


# -- early stopping -----------------------------------------------------------------------------
def test_early_stopping_stops_after_patience_and_restores_the_best_weights(
    backend: ailib.backends.Backend,
) -> None:
    x, y = _data()
    score = Score([3.0, 2.0, 2.5, 2.1, 1.0, 0.5])
    stopper = EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    model = _model(backend)
    history = model.fit(x, y, epochs=6, batch_size=16, callbacks=[score, stopper])
    assert len(history["loss"]) == 4  # epochs 3 and 4 did not beat epoch 2
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (2.0, 2, 4)
    _assert_state(model, score.weights[2])  # parameters and BatchNorm's running statistics


def test_early_stopping_min_delta_mode_and_no_restore() -> None:
    x, y = _data()
    score = Score([0.50, 0.505, 0.52, 0.60, 0.61])  # an accuracy: higher is better
    stopper = EarlyStopping(monitor="val_score_acc", patience=1, min_delta=0.01)
    assert stopper.tracker.mode == "max"
    stopper = EarlyStopping(monitor="score", mode="max", patience=1, min_delta=0.01)
    model = _model()
    history = model.fit(x, y, epochs=5, batch_size=16, callbacks=[score, stopper])
    assert len(history["loss"]) == 2 and stopper.best == 0.50  # +0.005 is not enough
    _assert_state(model, score.weights[2])  # without restore_best_weights: the last weights


def test_early_stopping_without_its_monitor_says_what_there_is() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="monitor 'val_loss' is not in this epoch's logs .*loss"):
        _model().fit(x, y, callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match="or give fit validation_data"):
        _model().fit(x, y, callbacks=[EarlyStopping()])
    # validation data given: the entry is missing for another reason, and nothing says to give it
    with pytest.raises(ValueError, match=r"'val_typo' is not in .*val_loss.*one of those$"):
        _model().fit(x, y, validation_split=0.25, callbacks=[EarlyStopping(monitor="val_typo")])


# -- checkpoints ----------------------------------------------------------------------------------
def test_model_checkpoint_saves_only_improvements(tmp_path: Path) -> None:
    x, y = _data()
    score = Score([3.0, 2.0, 2.5, 1.5, 1.8])
    best = ModelCheckpoint(tmp_path / "best.npz", monitor="score", save_best_only=True)
    every = ModelCheckpoint(tmp_path / "e{epoch}-{score:.1f}.npz")
    _model().fit(x, y, epochs=5, batch_size=16, callbacks=[score, best, every])
    assert [epoch for epoch, _ in best.saved] == [1, 2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.npz",
        "e1-3.0.npz",
        "e2-2.0.npz",
        "e3-2.5.npz",
        "e4-1.5.npz",
        "e5-1.8.npz",
    ]
    loaded = ailib.load(tmp_path / "best.npz")
    _assert_state(loaded, score.weights[4])
    config = json.loads(np.load(tmp_path / "best.npz")["config.json"].tobytes())
    assert config["checkpoint"]["epoch"] == 4
    assert config["checkpoint"]["history"]["score"] == [3.0, 2.0, 2.5, 1.5]


@pytest.mark.parametrize(
    "template, message",
    [
        ("c{epoch.npz", r"is not a valid template \(expected '}' before end of string\)"),
        ("c{epoch}}.npz", r"is not a valid template \(Single '}' encountered"),
        ("c{0}.npz", "has a positional field"),
        ("c{}.npz", "has a positional field"),
    ],
)
def test_a_checkpoint_template_that_cannot_work_is_refused_before_training(
    tmp_path: Path, template: str, message: str
) -> None:
    """Before: str.format's bare ValueError or IndexError after the first epoch's training."""
    with pytest.raises(ValueError, match=f"^ModelCheckpoint: path .*{message}.*literal braces"):
        ModelCheckpoint(tmp_path / template)


@pytest.mark.parametrize(
    "template, message",
    [
        (
            "c{score_typo}.npz",
            r"KeyError: 'score_typo'\); it may name epoch, accuracy, loss, lr, score",
        ),
        ("c{epoch:s}.npz", r"ValueError: Unknown format code 's'"),
    ],
)
def test_a_checkpoint_template_naming_no_log_says_what_it_may_name(
    tmp_path: Path, template: str, message: str
) -> None:
    """Before: a bare KeyError (or str.format's ValueError) from the first save."""
    x, y = _data()
    checkpoint = ModelCheckpoint(tmp_path / template)
    with pytest.raises(
        ValueError, match=f"^ModelCheckpoint: path .* cannot be filled in .*{message}"
    ):
        _model().fit(x, y, epochs=1, batch_size=16, callbacks=[Score([1.0]), checkpoint])
    assert not any(tmp_path.iterdir())


def test_model_checkpoint_refuses_resume_with_best_only_or_epoch_paths(tmp_path: Path) -> None:
    for kwargs in ({"save_best_only": True}, {"path": tmp_path / "c{epoch}.npz"}):
        with pytest.raises(ValueError, match="resume=True needs one file"):
            ModelCheckpoint(**{"path": tmp_path / "c.npz", **kwargs}, resume=True)


def test_a_nan_validation_loss_is_saved_in_the_checkpoint_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _data()
    bad = x.copy()  # inputs with NaN/inf are refused up front: the evaluation gives the NaN
    monkeypatch.setattr(
        ailib.training, "evaluate_batches", lambda *args: {"loss": float("nan"), "accuracy": 0.5}
    )
    path = tmp_path / "c.npz"
    model = _model()
    expected = model.fit(x, y, epochs=1, validation_data=(bad, y), checkpoint=path)
    assert np.isnan(expected["val_loss"][0])
    assert np.isnan(ailib.io.checkpoint_state(path)[1]["val_loss"][0])  # not the string "nan"
    again = _model().fit(x, y, epochs=1, validation_data=(bad, y), checkpoint=path, resume=True)
    assert np.isnan(again["val_loss"][0]) and again["loss"] == expected["loss"]


# -- learning rates -----------------------------------------------------------------------------
class LearningRates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        self.rates.append(self.trainer.optimizer.lr)


def test_learning_rate_scheduler_per_epoch_and_per_step() -> None:
    x, y = _data()
    history = _model().fit(
        x,
        y,
        optimizer=SGD(lr=1.0),
        epochs=3,
        batch_size=16,
        callbacks=[LearningRateScheduler(ailib.schedules.step_schedule(0.1, 2, gamma=0.5))],
    )
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05])
    rates = LearningRates()
    warmup = ailib.schedules.warmup_schedule(0.1, 4)
    _model().fit(
        x,
        y,
        optimizer=Adam(),
        epochs=2,
        batch_size=16,
        callbacks=[LearningRateScheduler(warmup, unit="step"), rates],
    )
    assert rates.rates == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match=r"schedule\(1\) returned -1.0"):
        _model().fit(x, y, callbacks=[LearningRateScheduler(lambda t: -1.0)])


def test_reduce_lr_on_plateau() -> None:
    x, y = _data()
    score = Score([1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6])
    plateau = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    history = _model().fit(
        x, y, optimizer=SGD(lr=0.1), epochs=9, batch_size=16, callbacks=[score, plateau]
    )
    # epoch 3: the 2nd without improvement -> 0.05 from epoch 4 (the history has the rate each
    # epoch trained with); epoch 4 improves; epochs 5, 6 do not -> 0.025 from epoch 7, which
    # cools down (does not count); epochs 8, 9 do not improve -> min_lr after epoch 9
    assert history["lr"] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3)
    assert plateau.trainer.optimizer.lr == pytest.approx(0.02)
    score = Score([1.0] * 8)
    plateau = ReduceLROnPlateau(monitor="score", factor=0.5, patience=1, min_lr=0.02)
    history = _model().fit(
        x, y, optimizer=SGD(lr=0.1), epochs=5, batch_size=16, callbacks=[score, plateau]
    )
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.02])  # floor at min_lr


# -- reporting ----------------------------------------------------------------------------------
def test_progress_events_and_printed_epochs() -> None:
    x, y = _data()
    events: list[dict[str, Any]] = []
    stream = text_io.StringIO()
    _model().fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        log_every=4,
        callbacks=[ProgressEvents(events.append), PrintEpochs(stream)],
    )
    steps = [(e["epoch"], e["step"]) for e in events if e["event"] == "step"]
    assert steps == [(1, 4), (1, 6), (2, 4), (2, 6)]
    assert all(e["steps"] == 6 for e in events if e["event"] == "step")
    assert all(e["epochs"] == 2 for e in events)
    ends = [e for e in events if e["event"] == "epoch_end"]
    assert [e["epoch"] for e in ends] == [1, 2] and "accuracy" in ends[0]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2: loss=")


def test_the_old_keywords_are_callbacks(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = _data()
    events: list[dict[str, Any]] = []
    history = _model().fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=True,
        progress=events.append,
        lr_schedule=lambda e: 0.1 / e,
    )
    assert history["lr"] == pytest.approx([0.1, 0.05])
    assert capsys.readouterr().out.count("\nepoch ") == 2  # verbose=True: epoch lines on stdout
    assert [e["event"] for e in events] == ["step", "epoch_end"] * 2
    with pytest.raises(ValueError, match="resume=True needs checkpoint="):
        _model().fit(x, y, resume=True)


@pytest.mark.parametrize(
    "make, error, fault",
    [
        # bool("no") is True: resume="no" resumed from an old checkpoint
        (lambda: ModelCheckpoint("c.npz", resume="no"), TypeError, "resume must be True or"),
        (
            lambda: ModelCheckpoint("c.npz", save_best_only="false"),
            TypeError,
            "ModelCheckpoint: save_best_only must be True or False, received 'false'",
        ),
        (
            lambda: EarlyStopping(restore_best_weights="yes"),
            TypeError,
            "EarlyStopping: restore_best_weights must be True or False",
        ),
        # int(2.5) was a quiet 2; "3" a comparison's own TypeError
        (lambda: EarlyStopping(patience=2.5), ValueError, "patience must be an int >= 0, recei"),
        (lambda: EarlyStopping(patience="3"), ValueError, "EarlyStopping: patience must be an"),
        (lambda: EarlyStopping(patience=-1), ValueError, "patience must be an int >= 0"),
        (lambda: ReduceLROnPlateau(cooldown=1.5), ValueError, "cooldown must be an int >= 0"),
        (lambda: ReduceLROnPlateau(factor="0.5"), TypeError, "factor must be a number"),
        (lambda: ReduceLROnPlateau(min_lr=None), TypeError, "min_lr must be a number"),
        (lambda: ReduceLROnPlateau(min_lr=math.inf), ValueError, "min_lr must be >= 0 and fin"),
        (lambda: EarlyStopping(min_delta="0.1"), TypeError, "min_delta must be a number"),
        (lambda: EarlyStopping(monitor=None), TypeError, "monitor must be the name of a log"),
    ],
)
def test_callback_settings_of_the_wrong_kind_are_refused_by_name(
    make: Any, error: type, fault: str
) -> None:
    with pytest.raises(error, match=fault):
        make()
    assert EarlyStopping(patience=np.int64(2)).patience == 2  # a NumPy integer is an int
