"""The operation counter counts what it should, on every backend, without changing results; the
MLP's training step stays within its operation budget (docs/performance.md)."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib import opcount, optimizers, zoo
from benchmarks.mlp import OP_TARGETS, optimizer_for

from .helpers import assert_close, host


def test_counts_a_known_function(backend: ailib.backends.Backend) -> None:
    counter = ailib.backends.counting(backend)
    xp, be = counter.xp, counter.backend
    a = be.asarray(np.arange(6.0, dtype=np.float32))  # 1 op: asarray
    b = xp.reshape(a, (2, 3))  # a view
    c = xp.sum(b * b + 1.0, axis=1)  # 3 ops: mul, add, sum
    c /= 2.0  # 1 op
    assert counter.total == 5
    assert counter.views["all"] == 1
    assert float(c[0]) == (1 + 2 + 5) / 2  # a read (and a view for c[0])
    assert counter.reads["all"] == 1
    assert dict(counter.names) == {
        ("all", "asarray"): 1,
        ("all", "mul"): 1,
        ("all", "add"): 1,
        ("all", "sum"): 1,
        ("all", "itruediv"): 1,
    }
    assert_close(counter.backend.to_host(c), [4.0, 26.5], "float32")


def test_in_place_operators_keep_the_libraries_semantics(backend: ailib.backends.Backend) -> None:
    counter = ailib.backends.counting(backend)
    a = counter.backend.asarray(np.ones(3, dtype=np.float32))
    alias = a
    alias -= 1.0
    changed = float(counter.xp.sum(a)) == 0.0
    assert changed == backend.mutable  # JAX: a new array; elsewhere: in place
    assert float(counter.xp.sum(alias)) == 0.0


def test_a_model_on_the_counting_backend_computes_the_same() -> None:
    x = np.random.default_rng(0).random((8, 5), dtype=np.float32)
    plain = ailib.Sequential(zoo.mlp(5, (4,), 3), backend="numpy", seed=1)
    counter = ailib.backends.counting(ailib.backends.get("numpy"))
    counted = ailib.Sequential(zoo.mlp(5, (4,), 3), backend=counter.backend, seed=1)
    assert_close(counter.backend.to_host(counted.predict(x)), host(plain.predict(x)))
    assert counter.total > 0


#: the counts of the array API's composition (59, 71 and 119 before issue 13): what the
#: standard's operations allow without fused kernels (docs/performance.md, "The count")
CEILING = {"sgd": 41, "momentum": 43, "adam": 51}


@pytest.mark.parametrize("name", list(OP_TARGETS))
def test_the_mlp_step_stays_within_its_operation_budget(name: str) -> None:
    counts = opcount.count_step(lambda be: zoo.mlp(backend=be), optimizer_for(name))
    assert counts["total"] == sum(counts["ops"].values())
    assert set(counts["ops"]) <= set(opcount.PARTS)  # every operation is filed under a part
    assert counts["ops"]["forward"] >= 8  # 3 products, 3 bias additions, 2 ReLUs: it counts
    assert counts["total"] <= CEILING[name], opcount.table(counts)


@pytest.mark.parametrize("name", list(OP_TARGETS))
@pytest.mark.parametrize("backend, kernels", [("numpy", "cupy"), ("torch", None)])
def test_with_fused_kernels_the_mlp_step_meets_its_operation_target(
    name: str, backend: str, kernels: str | None
) -> None:
    """CuPy's kernels (counted on NumPy) and PyTorch's own forms (counted on its tensors)."""
    if ailib.backends.why_unavailable(backend) is not None:
        pytest.skip(f"backend {backend} unavailable: {ailib.backends.why_unavailable(backend)}")
    counts = opcount.count_step(
        lambda be: zoo.mlp(backend=be), optimizer_for(name), backend=backend, kernels=kernels
    )
    assert counts["names"]["loss"] == {"softmax_cross_entropy": counts["ops"]["loss"]}
    assert counts["names"]["backward"]["relu_backward"] == 2 * (1 if kernels == "cupy" else 2)
    assert counts["total"] <= OP_TARGETS[name], opcount.table(counts)


def test_count_step_takes_a_list_of_layers_and_fit_keywords() -> None:
    counter_free = opcount.count_step(
        zoo.mlp(6, (5,), 3), optimizers.SGD(0.1), features=6, classes=3, batch_size=4
    )
    assert counter_free["ops"]["gather"] == 2  # x and y, taken by the shuffled index


def test_amsgrad_adds_one_operation_on_the_flat_buffer_and_adam_keeps_its_count() -> None:
    """amsgrad's max(V_max, V) is one `maximum` per step on the flat buffer (per parameter on
    the per-parameter path); Adam without it is counted as before (CEILING["adam"])."""
    counts = {
        amsgrad: opcount.count_step(
            lambda be: zoo.mlp(backend=be), optimizers.Adam(amsgrad=amsgrad)
        )
        for amsgrad in (False, True)
    }
    assert counts[False]["total"] <= CEILING["adam"]
    assert "maximum" not in counts[False]["names"]["update"]
    assert counts[True]["names"]["update"] == {**counts[False]["names"]["update"], "maximum": 1}
    assert counts[True]["total"] == counts[False]["total"] + 1
