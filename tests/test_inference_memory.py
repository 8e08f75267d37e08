"""Inference keeps no backward state and runs in batches, so its memory does not grow with the
number of rows (benchmarks/memory.py measures the peak)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ailib
from ailib import training, zoo
from ailib.layers import Identity


class Spy(Identity):
    """Identity that records the batch sizes it sees and whether its backprop was kept."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def call(self, x: Any) -> Any:
        self.rows.append(x.shape[0])
        return super().call(x)


def _model() -> tuple[ailib.Sequential, Spy]:
    spy = Spy()
    return ailib.Sequential([*zoo.mlp(6, (5,), 3), spy], backend="numpy", seed=0), spy


def test_predict_runs_in_batches_by_default_and_equals_one_pass() -> None:
    model, spy = _model()
    n = 2 * training.INFERENCE_BATCH + 5
    x = np.random.default_rng(0).random((n, 6), dtype=np.float32)
    out = model.predict(x)
    assert spy.rows == [training.INFERENCE_BATCH, training.INFERENCE_BATCH, 5]
    whole = model.predict(x, batch_size=None)
    assert spy.rows[-1] == n
    np.testing.assert_allclose(np.asarray(out), np.asarray(whole), rtol=1e-6, atol=1e-7)
    model.evaluate(x, np.zeros(n, dtype=np.int64))
    assert spy.rows[-3:] == [training.INFERENCE_BATCH, training.INFERENCE_BATCH, 5]


def test_inference_keeps_no_backward_state() -> None:
    model, _ = _model()
    x = np.ones((7, 6), dtype=np.float32)
    model.predict(x, batch_size=3)
    model.evaluate(x, np.zeros(7, dtype=np.int64), batch_size=3)
    assert model.backprops == [] and model.output is None
    assert all(layer.latest is None for layer in model.layers)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_predict_refuses_a_bad_batch_size(bad: Any) -> None:
    model, _ = _model()
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        model.predict(np.ones((2, 6), dtype=np.float32), batch_size=bad)
