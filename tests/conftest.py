"""Fixtures shared by the whole suite: every backend, with readable ids, skipped with the reason.

Known per-backend gaps live here, in one place, not as ``if``s in tests.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import ailib

# JAX shows one CPU device unless told otherwise, and reads the flag once, when it is first
# imported: set it before anything imports jax (``import ailib`` does not), keeping flags
# already given. A second CPU device ("jax:cpu:1") exposes what would land on the wrong GPU,
# or on the host, on a machine with several; subprocesses the tests start inherit it.
_JAX_CPU_DEVICES = "--xla_force_host_platform_device_count=2"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_JAX_CPU_DEVICES}".strip()

#: every backend the suite runs on; "array_api_strict:device1" is a second (fake) device that
#: exposes device-mixing bugs without a GPU. The GPU ones ("cupy", "torch:cuda", "jax:gpu")
#: skip with the reason on a machine without one; benchmarks/gpu.sh runs them where there is
#: one. JAX's second CPU device, "jax:cpu:1" (`SECOND_DEVICES`), is not in this list: every
#: case on it took 6-7 minutes of a suite that must stay well under 15; tests/test_devices.py
#: runs what a model makes and keeps on it (the `any_device_backend` fixture).
BACKENDS = [
    "numpy",
    "array_api_strict",
    "array_api_strict:device1",
    "torch",
    "jax",
    "cupy",
    "torch:cuda",
    "jax:gpu",
]

#: backends whose arrays are immutable (updates go through the functional path)
IMMUTABLE = {"jax"}


def _backend_or_skip(name: str) -> ailib.backends.Backend:
    reason = ailib.backends.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return ailib.backends.get(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> ailib.backends.Backend:
    """Each backend in turn; skipped, with the reason, where it cannot run."""
    return _backend_or_skip(request.param)


#: devices other than their library's default, which expose arrays made without ``device=``
#: and compiled calls whose outputs follow the default device rather than their inputs'
SECOND_DEVICES = ["jax:cpu:1"]


@pytest.fixture(params=BACKENDS + SECOND_DEVICES)
def any_device_backend(request: pytest.FixtureRequest) -> ailib.backends.Backend:
    """Each backend, and each second device of `SECOND_DEVICES`, in turn."""
    return _backend_or_skip(request.param)


@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"])
def other_backend(request: pytest.FixtureRequest) -> ailib.backends.Backend:
    """Each backend but NumPy, for comparisons against the NumPy reference."""
    return _backend_or_skip(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per skip reason (with a count), not one per test location: a machine without
    CuPy skips every CuPy case for the same reason, and that is one fact."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skipped, by reason", sep="-")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            terminalreporter.line(f"SKIPPED [{count}] {reason}")
