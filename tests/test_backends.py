"""The backend selector: names, availability, errors, defaults, host round trips, RNG."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

import ailib
from ailib.backends import BackendUnavailable
from ailib.layers import Dense


def test_unknown_backend_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'") as info:
        ailib.backends.get("tensorflow")
    for name in ailib.backends.NAMES:
        assert name in str(info.value)


def test_available_always_has_numpy_and_only_runnable_backends() -> None:
    names = ailib.backends.available()
    assert "numpy" in names
    for name in names:
        assert ailib.backends.why_unavailable(name) is None


def test_cupy_unusable_says_why_and_how(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = ailib.backends.why_unavailable("cupy")
    if reason is None:
        pytest.skip("cupy runs here: nothing to explain")
    assert (
        "cupy is not installed: pip install 'ailib[cuda12]'" in reason
        or "cupy is installed but no CUDA device was found" in reason
    )
    with pytest.raises(BackendUnavailable):
        ailib.Sequential([], backend="cupy")


def test_missing_library_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` fail
    monkeypatch.setattr(ailib.backends, "_cache", {})
    with pytest.raises(
        BackendUnavailable, match=r"jax is not installed: pip install 'ailib\[jax\]'"
    ):
        ailib.backends.get("jax")


def test_set_backend_is_the_default_and_keywords_override() -> None:
    before = ailib.get_default()
    try:
        ailib.set_backend("array_api_strict")
        assert ailib.layers.Dense(2, 3).backend.name == "array_api_strict"
        assert ailib.layers.Dense(2, 3, backend="numpy").backend.name == "numpy"
        assert ailib.Sequential([ailib.layers.Tanh()]).backend.name == "array_api_strict"
    finally:
        ailib.set_backend(before)


def test_aliases_and_device_suffix() -> None:
    assert ailib.backends.get("np") is ailib.backends.get("numpy")
    strict1 = ailib.backends.get("array_api_strict:device1")
    assert strict1.device != ailib.backends.get("array_api_strict").device


def test_host_round_trip_keeps_values_and_dtype(backend: ailib.backends.Backend) -> None:
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    dev = backend.asarray(host)
    assert backend.owns(dev)
    assert dev.dtype == backend.xp.float32
    np.testing.assert_array_equal(backend.to_host(dev), host)


@pytest.mark.parametrize("name", ["int8", "int16", "int32", "uint8", "uint16", "float64"])
def test_asarray_takes_every_standard_dtype_by_name_numpy_dtype_or_its_own(
    backend: ailib.backends.Backend, name: str
) -> None:
    """int8 and int16 are the standard's too: ``asarray(a, dtype=xp.int8)`` said "data type
    'torch.int8' not understood" (also JAX's and array-api-strict's), and ``dtype="int8"`` was
    an unknown dtype. A NumPy dtype the backend lacks is refused by name."""
    host = np.arange(6).reshape(2, 3)
    for spec in (name, np.dtype(name), getattr(backend.xp, name)):
        dev = backend.asarray(host, dtype=spec)
        assert backend.dtype_name(dev.dtype) == name
        np.testing.assert_array_equal(backend.to_host(dev), host.astype(name))
    if getattr(backend.xp, "float16", None) is None:
        with pytest.raises(ValueError, match="'float16' .NumPy's. has no counterpart on backend"):
            backend.asarray(host, dtype=np.float16)


def test_python_floats_become_float32(backend: ailib.backends.Backend) -> None:
    assert backend.asarray([0.5, 1.5]).dtype == backend.xp.float32
    assert backend.float_dtype == backend.xp.float32


def test_random_is_seeded_and_identical_across_backends(backend: ailib.backends.Backend) -> None:
    a = backend.to_host(backend.random(7).normal((3, 2), 0.0, 1.0, "float32"))
    b = backend.to_host(backend.random(7).normal((3, 2), 0.0, 1.0, "float32"))
    ref = ailib.backends.get("numpy").random(7).normal((3, 2), 0.0, 1.0, "float32")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, ref)
    perm = backend.to_host(backend.random(3).permutation(10))
    assert sorted(perm.tolist()) == list(range(10))


def test_bernoulli_mask_has_the_right_rate(backend: ailib.backends.Backend) -> None:
    mask = backend.to_host(backend.random(0).bernoulli_mask((200, 50), 0.8, "float32"))
    assert mask.dtype == np.float32
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    assert abs(mask.mean() - 0.8) < 0.02


def test_import_ailib_imports_no_gpu_or_framework_library() -> None:
    code = (
        "import sys, ailib, ailib.layers, ailib.losses, ailib.optimizers, ailib.model\n"
        "ailib.Sequential([ailib.layers.Dense(2, 2)], backend='numpy')\n"
        "bad = [m for m in ('cupy', 'torch', 'jax', 'matplotlib', 'tqdm') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_device_that_does_not_exist_is_unavailable_not_a_crash() -> None:
    with pytest.raises(BackendUnavailable, match="array_api_strict has no device 'gpu'"):
        ailib.backends.get("array_api_strict:gpu")
    if ailib.backends.why_unavailable("jax") is None:
        assert (
            ailib.backends.get("jax:cpu").asarray([1.0]).dtype
            == ailib.backends.get("jax").xp.float32
        )


def test_synchronize_waits_with_or_without_arrays(backend: ailib.backends.Backend) -> None:
    x = backend.asarray([1.0, 2.0]) * 3.0
    backend.synchronize()
    backend.synchronize(x)  # JAX waits for x itself (it has no global queue)
    np.testing.assert_array_equal(backend.to_host(x), [3.0, 6.0])


def test_jax_x64_stays_off_until_64_bit_is_asked_for() -> None:
    if ailib.backends.why_unavailable("jax") is not None:
        pytest.skip(f"jax unavailable: {ailib.backends.why_unavailable('jax')}")
    code = (
        "import jax.numpy as jnp, numpy as np, ailib\n"
        "from ailib.layers import Dense, Dropout, ReLU\n"
        "ailib.backends.available()\n"
        "assert jnp.asarray(1.0).dtype == jnp.float32, 'x64 on after available()'\n"
        "m = ailib.Sequential([Dense(3, 4), ReLU(), Dropout(0.5), Dense(4, 2)], backend='jax',"
        " seed=0)\n"
        "m.fit(np.ones((8, 3)), np.array([0, 1] * 4), epochs=2, batch_size=4, shuffle=True)\n"
        "m.evaluate(np.ones((4, 3)), np.array([0, 1, 0, 1]))\n"
        "assert jnp.asarray(1.0).dtype == jnp.float32, 'x64 on after a float32 model'\n"
        "ailib.Sequential([Dense(3, 4)], backend='jax', dtype='float64')\n"
        "assert jnp.asarray(1.0).dtype == jnp.float64, 'float64 was asked for: x64 on'\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_an_array_api_namespace_older_than_ailib_needs_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    xs = pytest.importorskip("array_api_strict")
    monkeypatch.setattr(ailib.backends, "_cache", {})
    xs.set_array_api_strict_flags(api_version="2023.12")
    try:
        with pytest.raises(
            BackendUnavailable,
            match=r"array_api_strict: its array-API namespace .* implements version 2023\.12, "
            r"ailib needs 2024\.12 or later",
        ):
            ailib.backends.get("array_api_strict")
    finally:
        xs.reset_array_api_strict_flags()
    assert ailib.backends.API_VERSION == "2024.12"


def test_auto_is_the_command_lines_rule_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    """backend="auto" in Python: CuPy when it runs here, else NumPy, with the reasons."""
    reason = ailib.backends.why_unavailable("cupy")
    choice = ailib.backends.auto_choice()
    if reason is None:
        assert choice.name == "cupy" and choice.passed_over == {}
    else:
        assert choice.name == "numpy"
        assert choice.passed_over == {"cupy": reason.splitlines()[0]}
        assert str(choice) == f"numpy (auto: cupy unavailable: {reason.splitlines()[0]})"
    with caplog.at_level(logging.INFO, logger="ailib.backends"):
        backend = ailib.backends.get("auto")
    assert backend is ailib.backends.get(choice.name)
    assert [r.getMessage() for r in caplog.records] == [f"backend: {choice}"]
    model = ailib.Sequential([Dense(2, 1)], backend="AUTO")
    assert model.backend is backend
    assert ailib.backends.why_unavailable("auto") is None


def test_auto_says_nothing_by_default() -> None:
    code = "import ailib; ailib.Sequential([ailib.layers.Dense(2, 1)], backend='auto')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == ""


def test_jax_on_a_gpu_runs_models_at_full_float32_matmul_precision() -> None:
    """JAX multiplies float32 matrices in TF32 on GPUs by default; the backend's context (in
    which every Sequential pass and compiled step runs) asks for full precision there, and
    leaves the CPU (and the process-wide setting) alone."""
    jax = pytest.importorskip("jax")
    from types import SimpleNamespace

    from ailib.backends._libs import _jax_context

    assert _jax_context(jax, SimpleNamespace(platform="cpu")) is None
    context = _jax_context(jax, SimpleNamespace(platform="gpu"))
    assert context is not None
    before = jax.config.jax_default_matmul_precision
    with context():
        assert jax.config.jax_default_matmul_precision == "highest"
    assert jax.config.jax_default_matmul_precision == before
    if ailib.backends.why_unavailable("jax:gpu") is None:  # on a GPU machine: the real one
        be = ailib.backends.get("jax:gpu")
        with be.context():
            assert jax.config.jax_default_matmul_precision == "highest"
