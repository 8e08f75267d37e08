"""The ``ailib`` command on tiny stand-in datasets: train, evaluate, fetch, bad arguments."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ailib
from ailib import cli, datasets, plot, zoo

from .datasets_helpers import dead_url, misbehaving, tiny_dataset, write_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A --data-root holding tiny MNIST and Fashion-MNIST; no cache, no network."""
    monkeypatch.delenv("AILIB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("mnist", "fashion-mnist"):
        spec = tiny_dataset(name, sizes={"train": 40, "test": 20})
        monkeypatch.setitem(datasets.DATASETS, name, spec)
        write_tiny(tmp_path / "data" / name, spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", dead_url())
    monkeypatch.setenv("AILIB_FASHION_MNIST_MIRRORS", dead_url())
    return tmp_path / "data"


def train(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data-root",
        str(data),
        "--out",
        str(out),
        "--quiet",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--backend",
        "numpy",
        *extra,
    ]


def test_train_writes_model_history_and_plot_then_evaluate(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert cli.main(train(data, out, "--dataset", "mnist", "--hidden", "16")) == 0
    stdout, stderr = capsys.readouterr()
    assert "test accuracy:" in stdout
    drawn = plot.have_matplotlib()  # without matplotlib: no plot, a notice (tested below)
    assert (str(out / "training.png") in stdout) == drawn
    assert "epoch 2/2: loss" in stderr and "samples/s" in stderr
    record = json.loads((out / "history.json").read_text())
    assert record["dataset"] == "mnist" and len(record["history"]["val_accuracy"]) == 2
    assert np.asarray(record["confusion"]).sum() == 20
    if drawn:
        assert (out / "training.png").read_bytes().startswith(b"\x89PNG")
    model = ailib.load(out / "model.npz")
    assert model.layers[0].out_features == 16

    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(out / "model.npz"),
                "--dataset",
                "mnist",
                "--data-root",
                str(data),
                "--backend",
                "array_api_strict",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert f"{100 * record['test_accuracy']:.2f}%" in stdout  # same model, same answer
    assert len([line for line in stdout.splitlines() if "samples)" in line]) == 10


def test_compile_flag_turns_compiled_steps_on_and_off_with_the_same_training(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ailib import compiling

    asked: list[bool] = []
    real = compiling.compiled_step

    def recording(*args: Any) -> Any:
        step = real(*args)
        asked.append(step is not None)
        return step

    monkeypatch.setattr(compiling, "compiled_step", recording)
    records = {}
    for setting in ("off", "on"):
        asked.clear()
        out = tmp_path / setting
        extra = ("--dataset", "mnist", "--optimizer", "sgd", "--compile", setting)
        assert cli.main(train(data, out, *extra)) == 0
        assert any(asked) is (setting == "on") and asked
        records[setting] = json.loads((out / "history.json").read_text())
        assert records[setting]["args"]["compile"] == setting
    # NumPy's compiled steps are the uncompiled ones to the bit
    assert records["on"]["history"]["loss"] == records["off"]["history"]["loss"]
    assert records["on"]["test_accuracy"] == records["off"]["test_accuracy"]
    capsys.readouterr()
    out = tmp_path / "strict"
    extra = ("--dataset", "mnist", "--backend", "array_api_strict", "--compile", "on")
    assert cli.main([*train(data, out), *extra]) == 0
    stderr = capsys.readouterr().err
    assert "note: --compile on: " in stderr and "the steps run uncompiled" in stderr


def test_fashion_evaluation_names_the_classes(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(train(data, tmp_path, "--dataset", "fashion-mnist", "--optimizer", "sgd")) == 0
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "model.npz"),
                "--dataset",
                "fashion-mnist",
                "--data-root",
                str(data),
                "--quiet",
            ]
        )
        == 0
    )
    assert "Ankle boot" in capsys.readouterr().out


def test_cnn_from_the_zoo(data: Path, tmp_path: Path) -> None:
    assert (
        cli.main(
            train(
                data,
                tmp_path,
                "--dataset",
                "mnist",
                "--model",
                "cnn",
                "--hidden",
                "8",
                "--epochs",
                "1",
            )
        )
        == 0
    )
    assert "Conv2D" in [layer.name for layer in ailib.load(tmp_path / "model.npz").layers]


def test_resnet_from_the_zoo(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--dataset", "mnist", "--model", "resnet", "--hidden", "2,3", "--epochs", "1")
    assert cli.main(train(data, tmp_path, *args)) == 0
    model = ailib.load(tmp_path / "model.npz", backend="array_api_strict")
    assert type(model) is ailib.Model and "Add" in [layer.name for layer in model.layers]
    args = ["evaluate", "--model", str(tmp_path / "model.npz"), "--data-root", str(data)]
    assert cli.main([*args, "--dataset", "mnist", "--quiet"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_auto_falls_back_to_fashion_and_picks_a_backend(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (data / "mnist").iterdir():
        path.unlink()
    args = train(data, tmp_path, "--epochs", "1")
    args[args.index("--backend") + 1] = "auto"
    assert cli.main(args) == 0
    stdout, stderr = capsys.readouterr()
    assert "MNIST is not available" in stderr and "using Fashion-MNIST" in stderr
    reason = ailib.backends.why_unavailable("cupy")
    if reason is None:
        assert "backend: cupy (auto" in stderr
    else:  # the reason, not only that it is unavailable
        assert f"backend: numpy (auto: cupy unavailable: {reason.splitlines()[0]})" in stderr
    assert "(MNIST is not available" not in stderr  # said once, not nested
    assert "on fashion-mnist" in stdout


def test_mnist_test_splits_the_10k_digits_8k_2k(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_dataset("mnist", sizes={"train": 1, "test": 2100})
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    write_tiny(data / "digits", spec, keys=("test_images", "test_labels"))
    assert (
        cli.main(train(data / "digits", tmp_path, "--dataset", "mnist-test", "--epochs", "1")) == 0
    )
    assert (
        np.asarray(json.loads((tmp_path / "history.json").read_text())["confusion"]).sum() == 2000
    )


def test_without_matplotlib_a_notice_and_no_plot(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plot, "have_matplotlib", lambda: False)
    assert cli.main(train(data, tmp_path, "--dataset", "mnist", "--epochs", "1")) == 0
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "training.png").exists() and (tmp_path / "model.npz").exists()


def test_fetch_and_missing_data(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fetch", "mnist", "--data-root", str(data)]) == 0
    assert "available and verified" in capsys.readouterr().out
    assert cli.main(["fetch", "mnist", "--data-root", str(data / "nowhere"), "--quiet"]) == 1
    assert "Looked in" in capsys.readouterr().err


def _bad_arguments(tmp_path: Path) -> dict[str, list[str]]:
    blocker = tmp_path / "file"
    blocker.write_text("")
    return {
        "unknown backend": ["train", "--backend", "tensorflow"],
        "zero epochs": ["train", "--epochs", "0"],
        "negative batch": ["train", "--batch-size", "-4"],
        "bad lr": ["train", "--lr", "0"],
        "not a number": ["train", "--epochs", "ten"],
        "unknown dataset": ["train", "--dataset", "cifar"],
        "unknown model": ["train", "--model", "vgg"],
        "bad hidden": ["train", "--hidden", "256,x"],
        "unwritable out": ["train", "--out", str(blocker / "sub"), "--backend", "numpy"],
        "missing model file": ["evaluate", "--model", str(tmp_path / "absent.npz")],
        "no command": [],
    }


@pytest.mark.parametrize("case", list(_bad_arguments(Path("/"))))
def test_bad_arguments_one_line_exit_2(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(_bad_arguments(tmp_path)[case]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("ailib: error: ")
    assert not (tmp_path / "runs").exists()  # nothing written before the arguments are checked


def test_python_m_ailib_help_and_lazy_imports() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ailib", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "train" in run.stdout and "evaluate" in run.stdout
    code = (
        "import sys, ailib.cli; heavy = {'matplotlib', 'tqdm', 'torch', 'jax', 'cupy'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.stdout.strip() == "[]", run.stderr


# -- errors: one message, exit status 1, no traceback (unless --debug) ------------------------
CLI_IN_A_PROCESS = """
import resource, sys
from ailib import cli, datasets
from tests.datasets_helpers import tiny_dataset

limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for name in ("mnist", "fashion-mnist"):  # the tiny stand-ins the data fixture wrote
    datasets.DATASETS[name] = tiny_dataset(name, sizes={"train": 40, "test": 20})
sys.exit(cli.main(sys.argv[2:]))
"""


def run_cli(
    *argv: str, limit: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``ailib *argv`` in a fresh process, as a user runs it (no pytest warning filters), on
    the tiny datasets; ``limit``: an address-space limit in bytes."""
    return subprocess.run(
        [sys.executable, "-c", CLI_IN_A_PROCESS, str(limit), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})},
    )


def _assert_one_message(run: subprocess.CompletedProcess, pattern: str) -> None:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    messages = [line for line in run.stderr.splitlines() if line.startswith("ailib:")]
    assert len(messages) == 1, run.stderr
    assert re.search(pattern, messages[0]), messages[0]


def test_user_errors_give_one_message_and_status_1(data: Path, tmp_path: Path) -> None:
    common = ("--data-root", str(data), "--quiet", "--backend", "numpy", "--dataset", "mnist")
    train_args = ("train", *common, "--out", str(tmp_path / "run"), "--epochs", "2")

    _assert_one_message(
        run_cli(*train_args, "--optimizer", "sgd", "--lr", "1e30", "--schedule", "constant"),
        r"^ailib: Sequential.fit: the (validation )?loss became (nan|inf) (at|after) epoch \d+",
    )
    fresh = ("train", *common, "--out", str(tmp_path / "run2"), "--epochs", "2")
    _assert_one_message(  # another --out: the diverged run above keeps its folder
        run_cli(*fresh, "--hidden", "4000000000", limit=2 << 30),
        r"^ailib: out of memory \(.*\); try smaller --hidden sizes or --batch-size",
    )
    other = ailib.Sequential(zoo.mlp(64, (8,), 10), backend="numpy").save(tmp_path / "other.npz")
    _assert_one_message(
        run_cli("evaluate", "--model", str(other), *common),
        r"^ailib: Sequential.predict: the first layer \(Dense\) expects x of shape \(N, 64\), "
        r"received \(20, 784\)",
    )
    for k in (3, 20):  # before: 3 passed silently, 20 failed in confusion_matrix
        scores = ailib.Sequential(zoo.mlp(784, (8,), k), backend="numpy").save(tmp_path / "k.npz")
        _assert_one_message(
            run_cli("evaluate", "--model", str(scores), *common),
            rf"^ailib: {re.escape(str(scores))} scores {k} classes, mnist has 10; evaluate a model",
        )
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04" + bytes(100))
    _assert_one_message(
        run_cli("evaluate", "--model", str(broken), *common),
        f"^ailib: {re.escape(str(broken))}: not a readable ailib model file",
    )


def test_a_non_http_mirror_gives_the_dataset_message(tmp_path: Path) -> None:
    def ssh(conn: socket.socket, stats: dict) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    with misbehaving(ssh) as (url, _):
        run = run_cli(
            "fetch",
            "mnist",
            "--quiet",
            "--data-root",
            str(tmp_path / "empty"),
            env={"AILIB_MNIST_MIRRORS": url, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("ailib: MNIST is not available")
    assert f"{url}train-images-idx3-ubyte.gz: does not speak HTTP" in run.stderr


def test_debug_shows_the_traceback(data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a model")
    args = ("evaluate", "--model", str(broken), "--data-root", str(data), "--backend", "numpy")
    for run in (
        run_cli("--debug", *args),
        run_cli(*args, "--debug"),
        run_cli(*args, env={"AILIB_DEBUG": "1"}),
    ):
        assert run.returncode == 1
        assert "Traceback (most recent call last)" in run.stderr and "ModelFileError" in run.stderr
        assert run.stderr.splitlines()[-1].startswith(f"ailib: {broken}: not a readable")


def test_help_documents_the_exit_statuses_and_debug(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status:" in text and "AILIB_DEBUG=1" in text and "--debug" in text
    for status in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {status}" in text


# -- a newcomer's first hour ------------------------------------------------------------------
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"ailib {ailib.__version__} (Python ")


def test_train_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for default in ("(default: 10)", "(default: 128)", "(default: runs/train,", "(default: adam)"):
        assert default in text, default


def test_runs_are_numbered_not_overwritten(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = train(data, Path("unused"), "--dataset", "mnist", "--epochs", "1", "--hidden", "8")
    del args[args.index("--out") : args.index("--out") + 2]
    assert cli.main(args) == 0 and cli.main(args) == 0
    assert (tmp_path / "runs/train/model.npz").is_file()
    assert (tmp_path / "runs/train-2/model.npz").is_file()
    assert "outputs: runs/train-2/model.npz" in capsys.readouterr().out
    again = [*args, "--out", "runs/train"]
    assert cli.main(again) == 2
    assert "runs/train already holds a run; pass --resume to continue it, --overwrite" in (
        capsys.readouterr().err
    )
    before = (tmp_path / "runs/train/model.npz").stat().st_mtime_ns
    assert cli.main([*again, "--overwrite"]) == 0
    assert (tmp_path / "runs/train/model.npz").stat().st_mtime_ns != before


def test_a_run_that_fails_before_training_leaves_no_folder(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = train(data / "nowhere", tmp_path / "runs" / "deep" / "x", "--dataset", "mnist")
    assert cli.main(args) == 1
    assert "MNIST is not available" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(ailib.Sequential, "fit", _raise_memory_error)  # fails in the folder
    assert cli.main(train(data, tmp_path / "runs" / "y", "--dataset", "mnist")) == 1
    assert not (tmp_path / "runs").exists()


def _raise_memory_error(*args: object, **kwargs: object) -> None:
    raise MemoryError("stand-in")


def test_evaluate_takes_the_recorded_dataset_and_a_run_folder(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert cli.main(train(data, out, "--dataset", "fashion-mnist", "--epochs", "1")) == 0
    meta = ailib.io.metadata(out / "model.npz")
    assert meta["dataset"] == "fashion-mnist" and meta["model"] == "mlp"
    assert meta["classes"][-1] == "Ankle boot"
    assert ailib.load(out / "model.npz").meta == meta
    capsys.readouterr()
    evaluate = ["evaluate", "--model", str(out), "--data-root", str(data), "--backend", "numpy"]
    assert cli.main(evaluate) == 0  # no --dataset: not mnist (auto) but the recorded one
    stdout, stderr = capsys.readouterr()
    assert stdout.startswith("fashion-mnist: accuracy") and "Ankle boot" in stdout
    assert f"dataset: fashion-mnist (recorded in {out / 'model.npz'})" in stderr
    assert cli.main([*evaluate, "--dataset", "mnist"]) == 0  # asked for: done, with a note
    assert "was trained on fashion-mnist; evaluating on mnist as asked" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(tmp_path)]) == 2
    assert "a folder without model.npz" in capsys.readouterr().err
    os.mkfifo(tmp_path / "fifo.npz")
    assert cli.main(["evaluate", "--model", str(tmp_path / "fifo.npz")]) == 2
    assert "fifo.npz: not a regular file or folder" in capsys.readouterr().err  # it exists


def test_a_text_file_as_model_is_named_not_unpickled(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    assert cli.main(["evaluate", "--model", str(text), "--data-root", str(data)]) == 1
    err = capsys.readouterr().err
    assert f"{text}: not a readable ailib model file" in err and "pickle" not in err


def test_missing_data_names_the_command_line_option(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["fetch", "mnist", "--data-root", str(data / "nowhere"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ailib: MNIST is not available: ") and "--data-root DIR" in err


@pytest.mark.parametrize("script", ["xor.py", "mnist.py"])
def test_examples_refuse_a_bad_backend_in_one_line(script: str) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--backend", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (
        f"{script}: error: --backend: unknown backend 'nope'; valid names are: numpy, cupy, "
        "torch, jax, array_api_strict, or auto\n"
    )


def test_demo_ends_by_saying_how_to_use_the_command(data: Path, tmp_path: Path) -> None:
    """scripts/demo.sh, in a copy of the checkout's layout, with a stand-in venv python that
    runs the command on the tiny datasets."""
    (tmp_path / "scripts").mkdir()
    demo = tmp_path / "scripts" / "demo.sh"
    demo.write_text((ROOT / "scripts" / "demo.sh").read_text())
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    python = venv / "python"
    (venv / "cli.py").write_text(CLI_IN_A_PROCESS)
    python.write_text(
        f'#!/bin/sh\nshift 2  # -m ailib\nexec {sys.executable} {venv / "cli.py"} 0 "$@"\n'
    )
    python.chmod(0o755)
    env = {**os.environ, "PY": str(python), "EPOCHS": "1", "AILIB_DATA": str(data)}
    env["PYTHONPATH"] = str(ROOT)
    for _ in range(2):  # twice: the demo's folder is replaced, not refused
        run = subprocess.run(
            ["bash", str(demo)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
        )
        assert run.returncode == 0, run.stderr
    assert (tmp_path / "runs" / "demo" / "model.npz").is_file()
    assert f"{venv}/ailib evaluate --model runs/demo" in run.stdout
    assert f"source {venv}/activate" in run.stdout


# -- interrupted runs ---------------------------------------------------------------------------
#: SIGINT handled as in a user's terminal: a test run started in the background by a shell
#: without job control (``sh -c '... &'``) has SIGINT ignored, which its children inherit (and
#: Python installs no KeyboardInterrupt handler for an ignored SIGINT). Set in the child itself:
#: a ``preexec_fn`` would make subprocess fork, which JAX, imported by other tests, warns about.
INTERRUPTIBLE = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


def _interrupted_run(data: Path, out: Path, sig: signal.Signals, argv: list[str]) -> str:
    """Start ``ailib train`` in a process, send it ``sig`` once epoch 3 is done; its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE + CLI_IN_A_PROCESS, "0", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    # the child must not run far ahead of this reader: its lines for 400 tiny epochs fit in a
    # default pipe (64 KiB), so on a busy machine the whole run could end before the signal is
    # sent; a pipe of one page holds some 25 lines, and the child waits for the reader beyond
    try:
        import fcntl

        fcntl.fcntl(proc.stderr.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    except (ImportError, AttributeError, OSError):  # not Linux: the default pipe
        pass
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("epoch 3/"):
            proc.send_signal(sig)
            break
    stdout, rest = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(lines) + rest
    return "".join(lines) + rest + stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_keeps_its_epochs_and_resume_finishes_it(
    data: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    epochs = "400"  # tiny epochs: the signal comes while many are left
    argv = train(data, tmp_path / "cut", "--dataset", "mnist", "--hidden", "8", "--epochs", epochs)
    argv[argv.index("--batch-size") + 1] = "8"
    text = _interrupted_run(data, tmp_path / "cut", sig, argv)
    cut = tmp_path / "cut"
    done = ailib.io.checkpoint_state(cut / "checkpoint.npz")[0]
    assert 3 <= done < int(epochs), text
    assert "Traceback" not in text
    assert f"interrupted during epoch {done + 1} of {epochs}; epochs 1-{done} are saved" in text
    command = shlex.join(["ailib", *argv, "--resume"])
    assert f"To continue: {command}" in text
    record = json.loads((cut / "history.json").read_text())
    assert len(record["history"]["loss"]) == done and np.asarray(record["confusion"]).sum() == 20
    kept = ailib.load(cut / "model.npz")
    assert kept.meta["dataset"] == "mnist"
    if plot.have_matplotlib():
        assert (cut / "training.png").is_file()

    resumed = run_cli(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"training: {int(epochs) - done} epochs of 5 batches (36 samples), from epoch " in (
        resumed.stderr
    )
    whole = run_cli(*[tmp_path / "whole" if a == str(cut) else a for a in map(str, argv)])
    assert whole.returncode == 0, whole.stderr
    a, b = ailib.load(cut / "model.npz"), ailib.load(tmp_path / "whole" / "model.npz")
    for key, value in a.params.items():
        np.testing.assert_array_equal(value, b.params[key])  # the same run, bit for bit
    ha = json.loads((cut / "history.json").read_text())["history"]
    hb = json.loads((tmp_path / "whole" / "history.json").read_text())["history"]
    assert ha["loss"] == hb["loss"] and ha["val_accuracy"] == hb["val_accuracy"]


def test_resume_needs_a_checkpoint(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*train(data, tmp_path / "none", "--dataset", "mnist"), "--resume"]) == 2
    assert f"--out {tmp_path / 'none'} holds no checkpoint.npz: nothing to resume" in (
        capsys.readouterr().err
    )


def test_the_validation_part_is_held_out_from_the_training_set(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train(data, tmp_path / "v", "--dataset", "mnist", "--validation-split", "0.25")
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "dataset: mnist (30 train, 10 validation, 20 test)" in err
    assert "training: 2 epochs of 2 batches (30 samples)" in err
    record = json.loads((tmp_path / "v" / "history.json").read_text())
    assert np.asarray(record["confusion"]).sum() == 20  # the test set: once, at the end
    assert (
        cli.main([*train(data, tmp_path / "n", "--dataset", "mnist"), "--validation-split", "0"])
        == 0
    )
    assert "val_loss" not in json.loads((tmp_path / "n" / "history.json").read_text())["history"]
