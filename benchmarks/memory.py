"""Peak memory of inference: `predict` and `evaluate` of ``zoo.cnn`` on 60,000 MNIST-sized images,
ailib on NumPy vs PyTorch's own CNN under ``torch.no_grad()``, at the same batch size.

    python -m benchmarks.memory                       # 60,000 rows, batch 1024 (about 2 minutes)
    python -m benchmarks.memory --rows 10000 --batch-size 256,1024

Each measurement runs in a fresh subprocess: the data (float32 rows, 784 pixels) and the model
are made first, then the kernel's peak-RSS counter is reset (/proc/self/clear_refs) and the
figure is the peak resident size during the call minus the size before it: what the call made
the operating system give, allocator caches included. Targets (issue 13): ailib's predict peak
at most 0.5 GB, and at most 1.5x PyTorch's at the same batch size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .mlp import _reset_peak_rss, _status_kb

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("ailib:predict", "ailib:evaluate", "torch:predict")
LIMIT_MB = 500.0
VS_TORCH = 1.5


def _data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((rows, 784), dtype=np.float32), rng.integers(0, 10, rows)


def _torch_cnn() -> Any:
    """zoo.cnn's architecture in PyTorch: conv 3x3 (1->32) - max-pool 2 - ReLU - conv 3x3
    (32->64) - max-pool 2 - ReLU - flatten - linear 3136->128 - ReLU - dropout - linear 128->10."""
    import torch

    nn = torch.nn
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, 10),
    ).eval()


def child(name: str, rows: int, batch: int) -> dict[str, Any]:
    """In a fresh process: the peak RSS (MB) that one call of ``name`` adds."""
    x, y = _data(rows)
    library, what = name.split(":")
    if library == "torch":
        import torch

        net, tx = _torch_cnn(), torch.from_numpy(x)

        def call() -> Any:
            with torch.no_grad():
                return torch.cat([net(tx[i : i + batch]) for i in range(0, rows, batch)])

        call_ = call
    else:
        import ailib
        from ailib import zoo

        model = ailib.Sequential(zoo.cnn(), backend="numpy", seed=0, input_shape=(784,))
        model.loss = ailib.losses.get("softmax_cross_entropy")
        if what == "predict":
            call_ = lambda: model.predict(x, batch_size=batch)  # noqa: E731
        else:
            call_ = lambda: model.evaluate(x, y, batch_size=batch)  # noqa: E731
    before = _status_kb("VmRSS")
    if not _reset_peak_rss() or before is None:
        return {"name": name, "error": "no /proc/self/clear_refs: peak RSS cannot be reset"}
    start = time.perf_counter()
    call_()
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    return {
        "name": name,
        "rows": rows,
        "batch": batch,
        "peak_mb": (peak - before) / 1024,
        "seconds": seconds,
    }


def measure(name: str, rows: int, batch: int, timeout: float = 600) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", name]
    cmd += ["--rows", str(rows), "--batch-size", str(batch)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        return {"name": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def targets(results: list[dict[str, Any]]) -> list[str]:
    """One line per target and batch size: measured, goal, pass/short."""
    lines = []
    by = {(r["name"], r.get("batch")): r for r in results}
    for batch in sorted({r.get("batch") for r in results if r.get("batch")}):
        ours = by.get(("ailib:predict", batch), {}).get("peak_mb")
        torch = by.get(("torch:predict", batch), {}).get("peak_mb")
        if ours is not None:
            status = "pass" if ours <= LIMIT_MB else "short"
            lines.append(
                f"| ailib predict peak, batch {batch} | ≤ {LIMIT_MB:.0f} MB | {ours:.0f} MB | {status} |"
            )
        if ours is not None and torch:
            ratio = ours / torch
            status = "pass" if ratio <= VS_TORCH else "short"
            lines.append(
                f"| ailib / PyTorch no_grad predict peak, batch {batch} | ≤ {VS_TORCH:.2f}x "
                f"| {ratio:.2f}x | {status} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--batch-size", default="1024", help="comma-separated (default 1024)")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch_size.split(",")]
    if args.child:
        print(json.dumps(child(args.child, args.rows, batches[0])))
        return []
    results = []
    for batch in batches:
        for name in args.contenders.split(","):
            r = measure(name, args.rows, batch)
            results.append(r)
            shown = (
                "error: " + r["error"]
                if "error" in r
                else (f"{r['peak_mb']:8.1f} MB peak RSS growth, {r['seconds']:.1f} s")
            )
            print(f"{name:16s} {args.rows} rows, batch {batch}: {shown}", flush=True)
    print("\n| target | goal | measured | status |\n|---|---|---|---|")
    print("\n".join(targets(results)))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
