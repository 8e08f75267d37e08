"""The ``ailib`` command on tiny stand-in datasets: train, evaluate, fetch, bad arguments."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ailib
from ailib import cli, datasets, plot
from ailib.cli_progress import Progress

from .datasets_helpers import dead_url, tiny_dataset, write_tiny

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
    assert "test accuracy:" in stdout and str(out / "training.png") in stdout
    assert "epoch 2/2: loss" in stderr and "samples/s" in stderr
    record = json.loads((out / "history.json").read_text())
    assert record["dataset"] == "mnist" and len(record["history"]["val_accuracy"]) == 2
    assert np.asarray(record["confusion"]).sum() == 20
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
    assert "backend: numpy (auto: cupy unavailable)" in stderr or "backend: cupy (auto)" in stderr
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
        "unknown model": ["train", "--model", "resnet"],
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


def test_progress_bar_on_a_terminal() -> None:
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(100, stream=stream)
    progress(
        {
            "event": "step",
            "epoch": 1,
            "epochs": 2,
            "step": 3,
            "steps": 4,
            "loss": 0.5,
            "samples": 75,
            "seconds": 0.5,
        }
    )
    progress(
        {
            "event": "epoch_end",
            "epoch": 1,
            "epochs": 2,
            "loss": 0.4,
            "accuracy": 0.9,
            "seconds": 0.7,
        }
    )
    text = stream.getvalue()
    assert "epoch 1/2" in text and "loss 0.5000, 150 samples/s" in text
    assert text.rstrip().endswith("epoch 1/2: loss 0.4000, accuracy 90.00%, 0.7 s, 150 samples/s")
    quiet = Terminal()
    Progress(100, quiet=True, stream=quiet)(
        {
            "event": "step",
            "epoch": 1,
            "epochs": 2,
            "step": 3,
            "steps": 4,
            "loss": 0.5,
            "samples": 75,
            "seconds": 0.5,
        }
    )
    assert quiet.getvalue() == ""


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
