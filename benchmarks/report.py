"""The measured figures quoted in README.md and docs/, generated from benchmarks/results/.

    python -m benchmarks.report          # rewrite every generated block from the result files
    python -m benchmarks.report --check  # exit 1 if a block differs from what the files say

A generated block sits between ``<!-- results: NAME -->`` and ``<!-- /results -->``; `BLOCKS` maps
each NAME to the function that writes it. tests/test_doc_figures.py fails when a block differs
from what the files say, and when README.md quotes a percentage outside such a block.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

from .accuracy import RUNS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- results: ([\w-]+) -->\n)(.*?)(<!-- /results -->)", re.DOTALL)
DATA = {
    "fashion-mnist": "full Fashion-MNIST (60k / 10k)",
    "mnist-test": "MNIST's 10k real test digits, 8k / 2k",
}


def _json(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def machine_words(info: dict[str, Any]) -> str:
    """``AMD EPYC, 2 cores, load 1.9, 2026-11-29`` from `benchmarks.machine.describe()`."""
    load = info.get("load_average")
    parts = [str(info.get("cpu", "?")), f"{info.get('cores', '?')} cores"]
    if load:
        parts.append(f"load {load[0]:.1f}")
    parts.append(str(info.get("date", "?"))[:10])
    return ", ".join(parts)


def accuracy_table() -> str:
    """README's table: one row per run of benchmarks/results/accuracy.json, in `RUNS` order."""
    runs = _json("accuracy.json")["runs"]
    rows = [
        "| model | data | test accuracy | training time (NumPy) | machine |",
        "|---|---|---|---|---|",
    ]
    for name, (what, _) in RUNS.items():
        if name not in runs:
            continue
        r = runs[name]
        per_epoch = r["seconds"] / r["epochs"]
        rows.append(
            f"| {what} | {DATA.get(r['dataset'], r['dataset'])} | "
            f"{100 * r['test_accuracy']:.2f} % ({r['epochs']} epochs) | "
            f"{r['seconds']:.0f} s ({per_epoch:.1f} s / epoch) | {machine_words(r['machine'])} |"
        )
    missing = [name for name in RUNS if name not in runs]
    if missing:
        rows.append("")
        rows.append(
            f"Not measured yet (their data was not on the machine): {', '.join(missing)}; "
            f"`python -m benchmarks.accuracy --only NAME` adds them."
        )
    return "\n".join(rows) + "\n"


def speed_summary() -> str:
    """README's sentence on throughput, from mlp.json (1 thread), mlp-2threads.json, cnn.json."""
    one, two, cnn = _json("mlp.json"), _json("mlp-2threads.json"), _json("cnn.json")
    e1, e2 = one["training"]["128"]["epoch"], two["training"]["128"]["epoch"]

    def jax(epoch: dict[str, Any], words: str) -> str:
        row = epoch.get("ailib:jax")
        return "" if row is None else f"{words}{row['vs_reference']:.2f}× the reference"

    return (
        f"Full 60,000-row epochs at batch 128 (`benchmarks/results/mlp.json`, one thread per "
        f"library, {machine_words(one['machine'])}): ailib on NumPy "
        f"{e1['ailib:numpy']['vs_reference']:.2f}× the hand-written NumPy reference and "
        f"{e1['ailib:numpy']['vs_torch']:.2f}× PyTorch CPU eager; ailib on torch tensors "
        f"{e1['ailib:torch']['vs_torch']:.2f}× PyTorch's own loop"
        f"{jax(e1, '; ailib on JAX (compiled) ')}. With two threads "
        f"(`mlp-2threads.json`, {machine_words(two['machine'])}): "
        f"{e2['ailib:numpy']['vs_reference']:.2f}× and {e2['ailib:numpy']['vs_torch']:.2f}×"
        f"{jax(e2, '; JAX ')}. "
        f"CNN (`cnn.json`, batch 128, {cnn['machine']['cpus']} CPUs): "
        f"{cnn['ratio_ailib_over_torch']:.2f}× PyTorch CPU eager.\n"
    )


BLOCKS: dict[str, Callable[[], str]] = {"accuracy": accuracy_table, "speed": speed_summary}


def render(text: str) -> str:
    """``text`` with every generated block rewritten from the result files."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"unknown results block {name!r}; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name]() + match.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    args = parser.parse_args(argv)
    stale = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "differ from benchmarks/results" if args.check else "rewritten"
    print(f"{', '.join(map(str, stale)) or 'nothing'} {verb if stale else 'to do'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
