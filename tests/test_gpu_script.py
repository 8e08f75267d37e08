"""benchmarks/gpu.sh cannot rot: its dry run works on a CPU machine, lists its stages with
their commands and limits, fits one device call, and writes its log under $OUT."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _dry_run(out: Path) -> str:
    env = {"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": sys.executable, "HOME": str(out)}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_dry_run_lists_every_stage_and_logs_under_out(tmp_path: Path) -> None:
    out = _dry_run(tmp_path)
    for stage in ("1. environment", "2. tests", "3. train", "4. bench"):
        assert f"== {stage}" in out
    log = tmp_path / "gpu.log"
    for _ in range(50):  # tee, in a process substitution, may finish just after bash exits
        if "== done" in log.read_text():
            break
        time.sleep(0.1)
    assert log.read_text() == out
    assert "JAX_DEFAULT_MATMUL_PRECISION=float32" in out
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in out
    tests = next(line for line in out.splitlines() if " -m pytest " in line)
    assert " -x" not in tests and "cupy\\ or\\ cuda\\ or\\ gpu" in tests
    train = next(line for line in out.splitlines() if " -m ailib train " in line)
    assert "--backend cupy --dataset mnist-test" in train
    assert str(ROOT / "data" / "mnist-test") in train
    bench = next(line for line in out.splitlines() if " -m benchmarks.mlp " in line)
    assert "--backends cupy\\,cupy+compiled --torch cuda" in bench and "--samples 60000" in bench
    assert "--batch-size 128\\,1024" in bench and f"--out {tmp_path}/4-bench" in bench


def test_stage_limits_fit_one_device_call(tmp_path: Path) -> None:
    out = _dry_run(tmp_path)
    limits = [int(s) for s in re.findall(r"^\+ timeout (\d+)s", out, flags=re.MULTILINE)]
    assert len(limits) >= 4
    assert sum(limits) + 5 * len(limits) <= 540, limits  # each stage may take 5 s to stop


def test_the_data_the_gpu_run_trains_on_travels_with_the_repository() -> None:
    import ailib

    x, y = ailib.datasets.load_mnist_test(ROOT / "data" / "mnist-test", download=False)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)


def test_help_and_unknown_options() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--dry-run" in done.stdout
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr


@pytest.mark.parametrize(
    ("probe", "said", "crashed"),
    [
        ("print('yes, products by cuBLAS called directly (libcublas.so.13)')", "yes, pro", False),
        ("import ctypes; ctypes.string_at(0)", "the probe CRASHED (exit -11)", True),
        ("import time; time.sleep(30)", "the probe HUNG (no answer after 1 s)", True),
    ],
)
def test_the_capture_probe_runs_apart_so_that_a_crash_of_cublas_called_directly_is_survived(
    monkeypatch: pytest.MonkeyPatch, probe: str, said: str, crashed: bool
) -> None:
    """gpu.sh's environment stage asks in a child process whether CuPy steps can be CUDA
    graphs: a segfault there (cuBLAS called through ctypes, never run before a first GPU run)
    is reported, and turns cuBLAS called directly off for the later stages."""
    from benchmarks import gpu_env

    monkeypatch.setattr(gpu_env, "CAPTURE_PROBE", probe)
    line, bad = gpu_env.capture_line(timeout=1.0)
    assert line.startswith("ailib CUDA graph steps on cupy: ") and said in line, line
    assert bad is crashed
    script = SCRIPT.read_text()
    assert 'grep -q "^SET AILIB_CUBLAS_DIRECT=0"' in script
    assert "export AILIB_CUBLAS_DIRECT=0" in script
