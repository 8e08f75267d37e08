"""Test accuracy and training time of `ailib train`'s models, with the machine they ran on.

    python -m benchmarks.accuracy                        # every run whose data is found here
    python -m benchmarks.accuracy --only mlp-mnist-test  # one run (names: `RUNS`)

Each run is one ``ailib train`` command line (`RUNS`), run in this process on NumPy; its test
accuracy, training seconds and `benchmarks.machine.describe()` are merged into
benchmarks/results/accuracy.json under the run's name (runs whose data is missing here keep their
earlier entry). README.md's table of measured figures is generated from that file
(`benchmarks.report`), and a test checks that it is.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from ailib import cli, datasets

from . import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "accuracy.json"
DIGITS = ["--dataset", "mnist-test", "--data-root", str(ROOT / "data" / "mnist-test")]

#: name -> (what it is, ``ailib train`` arguments); `make demo` is "mlp-fashion" (or MNIST)
RUNS: dict[str, tuple[str, list[str]]] = {
    "mlp-fashion": (
        "MLP 784-256-128-10 (`make demo`: Adam, cosine decay, 10 epochs)",
        ["--dataset", "fashion-mnist", "--model", "mlp", "--epochs", "10"],
    ),
    "mlp-mnist-test": (
        "MLP 784-256-128-10 (`make demo`'s settings)",
        [*DIGITS, "--model", "mlp", "--epochs", "10"],
    ),
    "cnn-fashion": (
        "CNN (`--model cnn`: 2×conv3×3 + pool, dense 128, dropout; 10 epochs)",
        ["--dataset", "fashion-mnist", "--model", "cnn", "--epochs", "10"],
    ),
    "cnn-mnist-test": (
        "CNN (`--model cnn`, 3 epochs)",
        [*DIGITS, "--model", "cnn", "--epochs", "3"],
    ),
}


def run(name: str) -> dict[str, Any] | None:
    """Train run ``name``; its record, or None when its data is not available here."""
    _, arguments = RUNS[name]
    info = machine.describe()
    with tempfile.TemporaryDirectory() as out:
        argv = ["train", *arguments, "--backend", "numpy", "--quiet", "--out", out]
        try:
            status = cli.main(argv)
        except datasets.DatasetUnavailable:
            return None
        if status != 0:
            if not (Path(out) / "history.json").exists():
                return None  # the command said why (e.g. the data is not here)
            raise RuntimeError(f"ailib {' '.join(argv)} exited with status {status}")
        record = json.loads((Path(out) / "history.json").read_text())
    return {
        "command": "ailib train " + " ".join(a.replace(str(ROOT) + "/", "") for a in arguments),
        "dataset": record["dataset"],
        "test_samples": int(sum(map(sum, record["confusion"]))),
        "epochs": len(record["history"]["loss"]),
        "test_accuracy": record["test_accuracy"],
        "seconds": record["seconds"],
        "seconds_per_epoch": record["history"]["seconds"],
        "backend": record["backend"],
        "machine": info,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), action="append", help="(repeatable)")
    args = parser.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    for name in args.only or list(RUNS):
        record = run(name)
        if record is None:
            print(f"{name}: its data is not available here; earlier entry kept")
            continue
        results["runs"][name] = record
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name}: {100 * record['test_accuracy']:.2f}% in {record['seconds']:.1f} s")
    return results


if __name__ == "__main__":
    main()
