"""MLP throughput, side by side: ailib on every backend vs a hand-written NumPy reference and
PyTorch eager, same model (784-256-128-10, ReLU, softmax cross-entropy, SGD, float32), same data,
same initial weights.

    python -m benchmarks.mlp                      # everything available, about 3 minutes idle
    python -m benchmarks.mlp --quick              # a smoke run (under a minute)
    python -m benchmarks.mlp --backends numpy,torch --batch-size 128,1024 --no-sweep
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.mlp   # see docs/performance.md

Method (docs/performance.md says why):
- contenders are built once, their data moved to their device once, then warmed up;
- every measurement is interleaved (A B C, B C A, ...) and repeated; we report the median
  samples/s and, as ratios to the NumPy reference and to PyTorch eager on the same device, the
  median over rounds of each round's ratio (a slow stretch of a shared machine then slows both
  sides of a ratio; the ratio of the medians is kept in the JSON as ``*_of_medians``);
- training is timed on short runs (``--steps`` batches) and on full epochs (``--samples`` rows),
  each a shuffled pass whose mean loss is read back once at the end (so every contender pays one
  device sync per pass, inside the timing);
- inference is ``predict`` on 10,000 rows;
- peak memory is measured in a fresh subprocess per contender (see `memory_child`);
- a sweep over batch size and hidden width shows how the cost grows with the work.

Writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` (default ``benchmarks/results/mlp``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import machine
from .contenders import Contender, build, flops_per_sample, make_data, make_weights

RESULTS = Path(__file__).parent / "results"
TEST_ROWS = 10_000
HIDDEN = (256, 128)
SWEEP_BATCHES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
SWEEP_WIDTHS = (128, 256, 512, 1024, 2048, 4096)  # first hidden layer; the second is half of it
QUICK_BATCHES = (32, 256, 2048)
QUICK_WIDTHS = (128, 1024)
#: (what, goal, comparison) of each target; see `targets`
TARGETS = {
    "train_vs_reference": 0.95,
    "jax_vs_reference": 1.00,
    "train_vs_torch_cpu": 1.30,
    "predict_vs_reference": 0.95,
    "ailib_torch_vs_torch": 1.00,
    "memory_vs_reference": 1.20,
    "cupy_vs_torch_cuda": 1.00,
}
#: array operations per training step of the MLP at batch 128 (ailib.opcount), per optimizer
OP_TARGETS = {"sgd": 35, "momentum": 40, "adam": 55}


# -- array operations per step -----------------------------------------------------------------
def optimizer_for(name: str) -> Any:
    import ailib

    if name == "sgd":
        return ailib.optimizers.SGD(lr=0.05)
    if name == "momentum":
        return ailib.optimizers.SGD(lr=0.05, momentum=0.9)
    return ailib.optimizers.Adam()


def op_counts(
    backend: str = "numpy", batch: int = 128, kernels: str | None = None
) -> dict[str, dict[str, Any]]:
    """`ailib.opcount.count_step` of the benchmark's MLP for each optimizer of `OP_TARGETS`,
    on ``backend``, counting the fused operations as ``kernels``'s (default: the backend's)."""
    from ailib import opcount, zoo

    return {
        name: opcount.count_step(
            lambda be: zoo.mlp(784, HIDDEN, 10, backend=be),
            optimizer_for(name),
            backend=backend,
            batch_size=batch,
            kernels=kernels,
        )
        for name in OP_TARGETS
    }


def count_configurations() -> list[tuple[str, str, str | None, bool]]:
    """(label, backend, kernels, whether its counts have targets) for each configuration
    counted: CuPy's (on the GPU when one runs here, else its kernels counted on NumPy), PyTorch's
    own forms (on its CPU tensors: the same calls as on CUDA), and the array API's
    composition, which NumPy, JAX and array-api-strict run."""
    from ailib import backends

    configs: list[tuple[str, str, str | None, bool]] = []
    if backends.why_unavailable("cupy") is None:
        configs.append(("CuPy", "cupy", None, True))
    else:
        configs.append(("CuPy kernels, counted on numpy", "numpy", "cupy", True))
    if backends.why_unavailable("torch") is None:
        configs.append(("PyTorch", "torch", None, True))
    configs.append(("array API (numpy, jax, strict)", "numpy", "numpy", False))
    return configs


def all_op_counts(batch: int = 128) -> dict[str, dict[str, dict[str, Any]]]:
    """{configuration label: `op_counts`} for every `count_configurations` entry."""
    return {
        label: op_counts(backend, batch, kernels)
        for label, backend, kernels, _ in count_configurations()
    }


def op_count_lines(counts: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """A table: one row per configuration and optimizer, one column per part of the step."""
    from ailib.opcount import PARTS

    lines = [
        "| kernels | optimizer | " + " | ".join(PARTS) + " | total | target |",
        "|---|---|" + "---:|" * (len(PARTS) + 2),
    ]
    for label, by_optimizer in counts.items():
        for name, c in by_optimizer.items():
            cells = " | ".join(str(c["ops"].get(part, 0)) for part in PARTS)
            lines.append(
                f"| {label} | {name} | {cells} | **{c['total']}** | ≤ {OP_TARGETS[name]} |"
            )
    return lines


# -- which contenders ------------------------------------------------------------------------
def contender_names(
    backends: Sequence[str] | None, torch_devices: Sequence[str] | None, reference: bool
) -> tuple[list[str], list[str]]:
    """(names to run, notes on what was left out and why)."""
    import ailib

    names, notes = (["reference"] if reference else []), []
    for device in _torch_devices(torch_devices, notes):
        names.append("torch" if device == "cpu" else f"torch:{device}")
    wanted = list(backends) if backends else [b for b in ailib.backends.NAMES]
    for backend in wanted:
        base, _, how = backend.partition("+")
        reason = ailib.backends.why_unavailable(base)
        if reason is None and how == "compiled":
            problem = ailib.backends.get(base).compile_problem()
            reason = None if problem is None else f"its steps cannot be compiled here: {problem}"
        if reason is None:
            names.append(f"ailib:{backend}")
        else:
            notes.append(f"ailib[{backend}] left out: {reason}")
    return names, notes


def _torch_devices(requested: Sequence[str] | None, notes: list[str]) -> list[str]:
    try:
        import torch
    except ImportError:
        notes.append("PyTorch eager left out: torch is not installed")
        return []
    if requested is None:
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    devices = [d for d in requested if d != "none"]
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        notes.append("PyTorch eager on CUDA left out: torch.cuda.is_available() is False")
        devices = [d for d in devices if not d.startswith("cuda")]
    return devices


def peer_of(contender: Contender) -> str:
    """The PyTorch eager row a contender is compared with: same kind of device."""
    return "torch:cuda" if on_gpu(contender) else "torch"


def on_gpu(contender: Contender) -> bool:
    device = str(contender.device).lower()
    return contender.backend == "cupy" or "cuda" in device or "gpu" in device


# -- timing ------------------------------------------------------------------------------------
def timed(contender: Contender, call: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds for ``call()`` including a device sync at the end, and what it returned."""
    start = time.perf_counter()
    out = call()
    contender.synchronize()
    return time.perf_counter() - start, out


def interleaved(
    contenders: dict[str, Contender], repeats: int, run: Callable[[Contender], Any]
) -> dict[str, dict[str, list[Any]]]:
    """``repeats`` rounds; each round runs every contender once, the starting one rotating, so
    slow drifts of the machine (thermal, other load) hit every contender alike."""
    names = list(contenders)
    out: dict[str, dict[str, list[Any]]] = {n: {"seconds": [], "values": []} for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            seconds, value = timed(contenders[name], lambda name=name: run(contenders[name]))
            out[name]["seconds"].append(seconds)
            out[name]["values"].append(value)
    return out


def throughput(raw: dict[str, dict[str, list[Any]]], samples: int) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, r in raw.items():
        rates = [samples / s for s in r["seconds"]]
        rows[name] = {
            "samples_per_s": statistics.median(rates),
            "all": rates,
            "seconds_median": statistics.median(r["seconds"]),
            "loss": (r["values"][-1] if r["values"] and r["values"][-1] is not None else None),
        }
    return rows


def paired_ratio(row: dict[str, Any], peer: dict[str, Any] | None) -> float | None:
    """``row`` against ``peer`` (rows of `throughput` from one `interleaved` run): the median
    over rounds of the ratio of their samples/s in that round, which a slow stretch of the
    machine (its neighbours' load) moves much less than the ratio of the two medians."""
    if not peer or not peer.get("samples_per_s"):
        return None
    mine, theirs = row.get("all", []), peer.get("all", [])
    if not mine or len(mine) != len(theirs):
        return float(row["samples_per_s"] / peer["samples_per_s"])
    return float(statistics.median(a / b for a, b in zip(mine, theirs)))


def add_ratios(rows: dict[str, dict[str, Any]], contenders: dict[str, Contender]) -> None:
    ref = rows.get("reference")
    for name, row in rows.items():
        peer = rows.get(peer_of(contenders[name]))
        row["vs_reference"] = paired_ratio(row, ref)
        row["vs_torch"] = paired_ratio(row, peer)
        for key, other in (("vs_reference", ref), ("vs_torch", peer)):
            median = other.get("samples_per_s") if other else None
            row[f"{key}_of_medians"] = row["samples_per_s"] / median if median else None


# -- peak memory, in a fresh process per contender ----------------------------------------------
def memory_child(name: str, batch: int, steps: int) -> dict[str, Any]:
    """Run in a subprocess: load ``steps * batch`` rows, then train one shuffled pass over them
    and report the peak memory that training added on top of the loaded data:

    - ``rss_mb``: peak resident set size minus the size before training (the kernel's peak
      counter is reset first through /proc/self/clear_refs), for every CPU contender — what the
      operating system had to give, including allocator caches;
    - ``traced_mb``: tracemalloc's peak for NumPy-based contenders (NumPy reports its buffers to
      tracemalloc; PyTorch and JAX do not), the bytes actually live at the worst moment, traced
      from before the model is built so that parameters, gradients and preallocated buffers
      count, less the loaded data; ``traced_later_mb``: the same over a second pass (the first
      includes a compiled step's one-time trace and check, which copy the parameters);
    - ``device_mb``: for CUDA contenders, what the memory pool had to reserve (CuPy pool total,
      torch ``max_memory_reserved``).
    """
    import tracemalloc

    weights = make_weights(HIDDEN)
    x, y = make_data(steps * batch)
    tracemalloc.start()  # from before the model exists: parameters and buffers count
    contender = build(name, weights)
    before_load = tracemalloc.get_traced_memory()[0]
    contender.load(x, y, x[:batch])
    data_copy = tracemalloc.get_traced_memory()[0] - before_load  # the data, if it was copied
    del x, y
    gc.collect()
    result: dict[str, Any] = {"name": name}
    traced = contender.backend in ("numpy", "array_api_strict") and not on_gpu(contender)
    if not traced:
        tracemalloc.stop()
    device_before = _device_reserved(contender)
    rss_before = _status_kb("VmRSS")
    reset = _reset_peak_rss()
    if traced:
        tracemalloc.reset_peak()
    contender.epoch(steps * batch, batch)
    contender.synchronize()
    if traced:
        result["traced_mb"] = (tracemalloc.get_traced_memory()[1] - data_copy) / 2**20
        # a second pass: its peak is training's own, without the one-time work of the first
        # (a compiled step's trace and check hold copies of the parameters for a step or two)
        tracemalloc.reset_peak()
        contender.epoch(steps * batch, batch)
        contender.synchronize()
        result["traced_later_mb"] = (tracemalloc.get_traced_memory()[1] - data_copy) / 2**20
        tracemalloc.stop()
    peak = _status_kb("VmHWM")
    if reset and peak is not None and rss_before is not None:
        result["rss_mb"] = (peak - rss_before) / 1024
    if device_before is not None:
        result["device_mb"] = (_device_reserved(contender, peak=True) - device_before) / 2**20
    return result


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _device_reserved(contender: Contender, peak: bool = False) -> int | None:
    """Bytes the CUDA memory pool holds: before training (``peak=False``: cached blocks freed
    and the peak counter reset first) or the most it held since (``peak=True``; CuPy's pool
    never shrinks by itself, so its total is its peak)."""
    if not on_gpu(contender):
        return None
    if contender.backend == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        if not peak:
            pool.free_all_blocks()
        return pool.total_bytes()
    import torch

    torch.cuda.synchronize()
    if not peak:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return torch.cuda.max_memory_reserved()


def measure_memory(
    names: Sequence[str], batch: int, steps: int, timeout: float = 300
) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.mlp",
            "--memory-child",
            name,
            "--batch-size",
            str(batch),
            "--steps",
            str(steps),
        ]
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=Path(__file__).resolve().parent.parent,
            )
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            out[name] = (
                json.loads(lines[-1])
                if done.returncode == 0 and lines
                else {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
            )
        except subprocess.TimeoutExpired:
            out[name] = {"error": f"timed out after {timeout:.0f} s"}
    return out


# -- sweep ---------------------------------------------------------------------------------------
def sweep(
    names: Sequence[str],
    x: np.ndarray,
    y: np.ndarray,
    values: Sequence[int],
    axis: str,
    batch: int,
    repeats: int,
    budget_flops: float,
    log: Callable[[str], None],
) -> dict[str, list[list[float]]]:
    """Training samples/s against batch size (``axis="batch"``, width 256-128) or against the
    first hidden width H (``axis="width"``, layers 784-H-H/2-10, batch ``batch``). Each point
    trains about ``budget_flops`` (at least 3 steps), interleaved, median of ``repeats``."""
    out: dict[str, list[list[float]]] = {n: [] for n in names}
    for value in values:
        hidden = HIDDEN if axis == "batch" else (value, value // 2)
        b = value if axis == "batch" else batch
        per_sample = flops_per_sample([x.shape[1], *hidden, 10])[1]
        steps = max(3, min(x.shape[0] // b, math.ceil(budget_flops / per_sample / b)))
        samples = steps * b
        weights = make_weights(hidden)
        contenders = {n: build(n, weights) for n in names}
        for c in contenders.values():
            c.load(x[:samples], y[:samples], x[:b])
            timed(c, lambda c=c, s=samples, b=b: c.epoch(s, b))  # warm-up, at the timed size
        rows = throughput(
            interleaved(contenders, repeats, lambda c, s=samples, b=b: c.epoch(s, b)), samples
        )
        for n in names:
            out[n].append([value, rows[n]["samples_per_s"]])
        log(
            f"  {axis}={value}: "
            + ", ".join(f"{n} {rows[n]['samples_per_s']:,.0f}/s" for n in names)
        )
        del contenders
        gc.collect()
    return out


# -- targets -------------------------------------------------------------------------------------
def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 4 with the measured ratio and "pass", "short" or "n/a"."""
    rows: list[dict[str, Any]] = []

    def add(
        what: str,
        ratio: float | None,
        goal: float,
        higher_is_better: bool = True,
        basis: str = "",
        unit: str = "x",
    ) -> None:
        if ratio is None:
            status = "n/a"
        else:
            status = "pass" if (ratio >= goal if higher_is_better else ratio <= goal) else "short"
        rows.append(
            {
                "target": what,
                "goal": ("≥ " if higher_is_better else "≤ ")
                + (f"{goal:.2f}" if unit == "x" else f"{goal:g}"),
                "unit": unit,
                "measured": ratio,
                "status": status,
                "basis": basis,
            }
        )

    def train(batch: int) -> tuple[dict[str, Any], str]:
        block = result["training"].get(str(batch), {})
        if "epoch" in block:
            return block["epoch"], f"full epochs of {result['config']['samples']} rows"
        return block.get("short", {}), f"{result['config']['steps']}-step runs"

    first = result["config"]["batch_sizes"][0]
    rows_b, basis = train(first)

    def ratio(a: str, b: str, rows_: dict[str, Any], key: str = "samples_per_s") -> float | None:
        if a in rows_ and b in rows_ and rows_[b].get(key):
            if key == "samples_per_s":
                return paired_ratio(rows_[a], rows_[b])
            return rows_[a][key] / rows_[b][key]
        return None

    add(
        f"ailib[numpy] training vs NumPy reference (batch {first})",
        ratio("ailib:numpy", "reference", rows_b),
        TARGETS["train_vs_reference"],
        basis=basis,
    )
    for batch in result["config"]["batch_sizes"][1:]:
        rows_o, basis_o = train(batch)
        add(
            f"ailib[numpy] training vs NumPy reference (batch {batch})",
            ratio("ailib:numpy", "reference", rows_o),
            TARGETS["train_vs_reference"],
            basis=basis_o,
        )
    for name in ("ailib:jax", "ailib:jax+compiled"):
        if name in rows_b:
            add(
                f"{rows_b[name].get('label', name)} training vs NumPy reference (batch {first})",
                ratio(name, "reference", rows_b),
                TARGETS["jax_vs_reference"],
                basis=basis,
            )
    add(
        f"ailib[numpy] training vs PyTorch CPU eager (batch {first})",
        ratio("ailib:numpy", "torch", rows_b),
        TARGETS["train_vs_torch_cpu"],
        basis=basis,
    )
    add(
        "ailib[numpy] inference vs NumPy reference (10k rows)",
        ratio("ailib:numpy", "reference", result.get("predict", {})),
        TARGETS["predict_vs_reference"],
        basis="predict",
    )
    add(
        f"ailib[torch] training vs PyTorch eager, CPU (batch {first})",
        ratio("ailib:torch", "torch", rows_b),
        TARGETS["ailib_torch_vs_torch"],
        basis=basis,
    )
    memory = result.get("memory", {})
    key = "traced_mb" if "traced_mb" in memory.get("ailib:numpy", {}) else "rss_mb"
    add(
        "ailib[numpy] peak training memory vs NumPy reference",
        ratio("ailib:numpy", "reference", memory, key),
        TARGETS["memory_vs_reference"],
        higher_is_better=False,
        basis=f"{key} (memory, extra over the data)",
    )
    if "traced_later_mb" in memory.get("ailib:numpy", {}):
        add(
            "ailib[numpy] peak training memory vs NumPy reference, a later pass",
            ratio("ailib:numpy", "reference", memory, "traced_later_mb"),
            TARGETS["memory_vs_reference"],
            higher_is_better=False,
            basis="traced_later_mb (the second pass: compiling's one-time copies are done)",
        )
    for batch in result["config"]["batch_sizes"]:
        rows_c, basis_c = train(batch)
        for name in ("ailib:cupy", "ailib:cupy+compiled"):
            if name in rows_c or (name == "ailib:cupy" and "torch:cuda" in rows_c):
                add(
                    f"{name[6:].replace('+', ' ')} training vs PyTorch eager CUDA (batch "
                    f"{batch}; = epoch-time ratio inverted)",
                    ratio(name, "torch:cuda", rows_c),
                    TARGETS["cupy_vs_torch_cuda"],
                    basis=basis_c,
                )
    targeted = {label for label, _, _, t in count_configurations() if t}
    for label, by_optimizer in result.get("op_counts", {}).items():
        if label not in targeted:
            continue
        for name, counts in by_optimizer.items():
            add(
                f"array operations per training step, {name} (batch 128)",
                counts["total"],
                OP_TARGETS[name],
                higher_is_better=False,
                basis=f"ailib.opcount, {label}",
                unit="",
            )
    return rows


# -- reports -------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _measured(t: dict[str, Any]) -> str:
    """A target's measured value: a ratio ("0.93x") or a count ("41")."""
    if t.get("unit", "x") == "x":
        return f"{_fmt(t['measured'])}x"
    return "—" if t["measured"] is None else f"{t['measured']:g}"


def markdown(result: dict[str, Any]) -> str:
    info, cfg = result["machine"], result["config"]
    blas = info.get("openblas") or {}
    v = info["versions"]
    lines = [
        "# MLP benchmark: ailib vs a hand-written NumPy reference vs PyTorch eager",
        "",
        f"Model 784-{'-'.join(map(str, cfg['hidden']))}-10, ReLU, softmax cross-entropy, SGD "
        f"(lr {cfg['lr']}), float32; synthetic Fashion-MNIST-shaped data; same initial weights "
        f"for all. Median of {cfg['repeats']} interleaved repeats.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores; GPU: {info['gpu'] or 'none'}; "
        f"load average at start {_fmt(info['load_average'][0] if info['load_average'] else None, 1)}"
        f", at end {_fmt(result['load_average_end'][0] if result.get('load_average_end') else None, 1)}",
        f"- Date: {info['date']}; Python {info['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- OpenBLAS: {blas.get('corename', '?')} kernel, {blas.get('threads', '?')} threads; "
        f"torch threads: {info.get('torch_threads')}; environment: {info['environment'] or '{}'}",
        f"- FLOPs per sample: {cfg['flops_forward']:,} forward, {cfg['flops_train']:,} "
        f"forward + backward (no dE/dX for the first layer)",
        f"- Command: `{cfg['command']}`; wall time {result['wall_seconds']:.0f} s",
    ]
    for note in result["notes"]:
        lines.append(f"- Note: {note}")
    lines += [
        "",
        "## Targets",
        "",
        "| target | goal | measured | status | basis |",
        "|---|---|---|---|---|",
    ]
    for t in result["targets"]:
        lines.append(
            f"| {t['target']} | {t['goal']} | {_measured(t)} | **{t['status']}** | {t['basis']} |"
        )
    if result.get("op_counts"):
        lines += [
            "",
            "## Array operations per training step (batch 128, ailib.opcount)",
            "",
            *op_count_lines(result["op_counts"]),
        ]
    lines += ["", "## Training throughput", ""]
    for batch, block in result["training"].items():
        for phase, rows in block.items():
            what = (
                f"{cfg['steps']} steps"
                if phase == "short"
                else f"full epochs of {cfg['samples']:,} rows"
            )
            lines += [
                f"### batch {batch}, {what}",
                "",
                "| contender | samples/s (median) | min – max | × reference | × torch eager | "
                "GFLOP/s | loss |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for r in rows.values():
                lines.append(
                    f"| {r['label']} | {r['samples_per_s']:,.0f} | {min(r['all']):,.0f} – "
                    f"{max(r['all']):,.0f} | {_fmt(r['vs_reference'])} | {_fmt(r['vs_torch'])} | "
                    f"{r['samples_per_s'] * cfg['flops_train'] / 1e9:.1f} | {_fmt(r['loss'], 4)} |"
                )
            lines.append("")
    if result.get("predict"):
        lines += [
            f"## Inference (predict on {TEST_ROWS:,} rows)",
            "",
            "| contender | samples/s (median) | × reference | × torch eager |",
            "|---|---:|---:|---:|",
        ]
        for r in result["predict"].values():
            lines.append(
                f"| {r['label']} | {r['samples_per_s']:,.0f} | {_fmt(r['vs_reference'])}"
                f" | {_fmt(r['vs_torch'])} |"
            )
        lines.append("")
    if result.get("memory"):
        lines += [
            f"## Peak memory added by training (batch {cfg['batch_sizes'][0]}, "
            f"{cfg['memory_steps']} steps, fresh process each)",
            "",
            "| contender | tracemalloc peak MB | tracemalloc peak, second pass MB | RSS peak MB "
            "| device MB |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, m in result["memory"].items():
            if "error" in m:
                lines.append(f"| {name} | error: {m['error']} | | | |")
                continue
            lines.append(
                f"| {name} | {_fmt(m.get('traced_mb'), 1)} | "
                f"{_fmt(m.get('traced_later_mb'), 1)} | {_fmt(m.get('rss_mb'), 1)} | "
                f"{_fmt(m.get('device_mb'), 1)} |"
            )
        lines += [
            "",
            "tracemalloc sees NumPy buffers only (not PyTorch's or JAX's); RSS peak is "
            "what the OS gave, allocator caches included.",
            "",
        ]
    if result.get("sweep"):
        for axis, data in result["sweep"].items():
            names = list(data)
            xs = [p[0] for p in data[names[0]]]
            title = "batch size" if axis == "batch" else "first hidden width H (784-H-H/2-10)"
            lines += [
                f"## Sweep: training samples/s against {title}",
                "",
                "| " + axis + " | " + " | ".join(names) + " |",
                "|---:|" + "---:|" * len(names),
            ]
            for i, xv in enumerate(xs):
                lines.append(
                    f"| {xv} | " + " | ".join(f"{data[n][i][1]:,.0f}" for n in names) + " |"
                )
            lines.append("")
        if result.get("plot"):
            lines.append(f"![throughput against batch size and width]({Path(result['plot']).name})")
            lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sweeps = result["sweep"]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4.5), squeeze=False)
    for ax, (axis, data) in zip(axes[0], sweeps.items()):
        for name, points in data.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size" if axis == "batch" else "first hidden width H (784-H-H/2-10)")
        ax.set_ylabel("training samples/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    info = result["machine"]
    fig.suptitle(
        f"MLP training throughput — {info['cpu']}, {info['cores']} cores"
        + (f", {info['gpu']}" if info["gpu"] else "")
        + f" — {info['date'][:10]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main ----------------------------------------------------------------------------------------
def save_partial(result: dict[str, Any], out: Path) -> None:
    """Write what is measured so far to ``<out>.json`` (``"complete": false``), so that a run
    killed at its time limit still leaves its finished stages behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = {**result, "complete": False}
    out.with_suffix(".json").write_text(json.dumps(partial, indent=1, default=str) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.mlp",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 50 steps, 3 repeats, epochs of 20,000 rows, a 5-point sweep",
    )
    p.add_argument(
        "--backends",
        type=_names,
        help="ailib backends to run, comma-separated (default: every available one); a name "
        "may end in +compiled or +eager to force compiled steps on or off (ailib.compiling)",
    )
    p.add_argument(
        "--torch",
        type=_names,
        dest="torch_devices",
        help="PyTorch eager devices, e.g. cpu,cuda or none (default: cpu, and cuda when available)",
    )
    p.add_argument("--no-reference", action="store_true", help="leave out the NumPy reference")
    p.add_argument(
        "--batch-size",
        type=_ints,
        default=[128],
        help="batch size(s), comma-separated; the first is the one targets use (default 128)",
    )
    p.add_argument("--steps", type=int, help="batches per short training run (default 150)")
    p.add_argument(
        "--samples", type=int, help="rows per full epoch (default 60000; 0 skips full epochs)"
    )
    p.add_argument("--repeats", type=int, help="interleaved repeats per measurement (default 5)")
    p.add_argument("--no-sweep", action="store_true", help="skip the batch-size / width sweep")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "mlp",
        help="output path without suffix: writes OUT.json, OUT.md, OUT.png "
        "(default benchmarks/results/mlp)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for every library (sets OMP/OPENBLAS/MKL_NUM_THREADS and "
        "XLA's flags, then restarts); default: each library's own choice. Use 1 "
        "on a machine that others are using: multi-threaded BLAS collapses when "
        "its threads are descheduled",
    )
    p.add_argument(
        "--counts",
        action="store_true",
        help="print the array operations per training step (SGD, momentum, Adam) and stop",
    )
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.steps = args.steps or (50 if quick else 150)
    args.repeats = args.repeats or (3 if quick else 5)
    args.samples = (20_000 if quick else 60_000) if args.samples is None else args.samples
    return args


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in _names(text)]


def thread_environment(threads: int) -> dict[str, str]:
    """The environment that caps every library's CPU thread pool at ``threads``."""
    n = str(threads)
    env = {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        env = thread_environment(args.threads)
        if any(os.environ.get(k) != v for k, v in env.items()):
            # thread pools are sized when a library is first loaded: restart with the variables set
            argv = list(sys.argv[1:] if argv is None else argv)
            os.execve(
                sys.executable,
                [sys.executable, "-m", "benchmarks.mlp", *argv],
                {**os.environ, **env},
            )
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.batch_size[0], args.steps)))
        return {}
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    info = machine.describe()
    names, notes = contender_names(args.backends, args.torch_devices, not args.no_reference)
    notes = machine.warnings(info) + notes
    for note in notes:
        log("note: " + note)
    counts = all_op_counts()
    log("array operations per training step of the MLP, batch 128 (ailib.opcount):")
    for line in op_count_lines(counts):
        print("    " + line, flush=True)
    if args.counts:
        return {"op_counts": counts}
    sizes = [784, *HIDDEN, 10]
    flops_fwd, flops_train = flops_per_sample(sizes)
    n = max(args.samples, args.steps * max(args.batch_size))
    x, y = make_data(n + TEST_ROWS)
    x_test, x, y = x[n:], x[:n], y[:n]
    weights = make_weights(HIDDEN)
    contenders = {name: build(name, weights) for name in names}
    labels = {name: c.name for name, c in contenders.items()}
    log("contenders: " + ", ".join(labels.values()))
    for c in contenders.values():
        c.load(x, y, x_test)

    result: dict[str, Any] = {
        "machine": info,
        "notes": notes,
        "op_counts": counts,
        "training": {},
        "config": {
            "hidden": list(HIDDEN),
            "lr": 0.05,
            "batch_sizes": args.batch_size,
            "steps": args.steps,
            "samples": args.samples,
            "repeats": args.repeats,
            "memory_steps": args.steps,
            "flops_forward": flops_fwd,
            "flops_train": flops_train,
            "contenders": labels,
            "command": "python -m benchmarks.mlp "
            + " ".join(sys.argv[1:] if argv is None else argv),
        },
    }
    for batch in args.batch_size:
        block: dict[str, Any] = {}
        warm = min(n, min(n, 10 * batch) + (args.samples % batch if args.samples else 0))
        for c in contenders.values():  # warm-up: kernels, buffers, the last partial batch shape
            timed(c, lambda c=c, s=warm, b=batch: c.epoch(s, b))
        phases = [("short", args.steps * batch)] + (
            [("epoch", args.samples)] if args.samples else []
        )
        for phase, samples in phases:
            log(f"training, batch {batch}, {phase} ({samples:,} rows) x {args.repeats} repeats")
            for c in contenders.values():
                # one untimed pass of this size first: JAX compiles fit's batch gather for the
                # length of the shuffled order, i.e. once per number of rows trained on
                timed(c, lambda c=c, s=samples, b=batch: c.epoch(s, b))
            rows = throughput(
                interleaved(contenders, args.repeats, lambda c, s=samples, b=batch: c.epoch(s, b)),
                samples,
            )
            add_ratios(rows, contenders)
            for name, r in rows.items():
                r["label"] = labels[name]
                log(
                    f"  {labels[name]:28s} {r['samples_per_s']:>10,.0f} samples/s  "
                    f"x ref {_fmt(r['vs_reference'])}  x torch {_fmt(r['vs_torch'])}"
                )
            block[phase] = rows
        result["training"][str(batch)] = block
        for c in contenders.values():  # what ailib warned (a compiled step run uncompiled)
            for note in getattr(c, "notes", []):
                if note not in notes:
                    log("note: " + note)
                    notes.append(note)
        save_partial(result, args.out)

    log(f"inference: predict on {TEST_ROWS:,} rows")
    for c in contenders.values():
        timed(c, c.predict)
    pred = throughput(interleaved(contenders, 3 * args.repeats, lambda c: c.predict()), TEST_ROWS)
    add_ratios(pred, contenders)
    for name, r in pred.items():
        r["label"] = labels[name]
        log(
            f"  {labels[name]:28s} {r['samples_per_s']:>10,.0f} samples/s  "
            f"x ref {_fmt(r['vs_reference'])}"
        )
    result["predict"] = pred
    save_partial(result, args.out)
    del contenders
    gc.collect()

    if not args.no_memory:
        log("peak memory, one subprocess per contender")
        result["memory"] = measure_memory(names, args.batch_size[0], args.steps)
        for name, m in result["memory"].items():
            log(f"  {name:28s} {m}")
        save_partial(result, args.out)

    if not args.no_sweep:
        sweep_names = [nm for nm in names if not nm.endswith(("jax", "array_api_strict"))]
        budget = 1.5e9 if args.quick else 4e9
        result["sweep"] = {}
        log("sweep over batch size")
        result["sweep"]["batch"] = sweep(
            sweep_names,
            x,
            y,
            QUICK_BATCHES if args.quick else SWEEP_BATCHES,
            "batch",
            args.batch_size[0],
            max(2, args.repeats // 2),
            budget,
            log,
        )
        log("sweep over hidden width")
        result["sweep"]["width"] = sweep(
            sweep_names,
            x,
            y,
            QUICK_WIDTHS if args.quick else SWEEP_WIDTHS,
            "width",
            args.batch_size[0],
            max(2, args.repeats // 2),
            budget,
            log,
        )

    result["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["wall_seconds"] = time.perf_counter() - started
    result["targets"] = targets(result)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    if result.get("sweep") and plot(result, out.with_suffix(".png")):
        result["plot"] = str(out.with_suffix(".png"))
    result["complete"] = True
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    log(
        f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}"
        + (f", {result['plot']}" if result.get("plot") else "")
    )
    print()
    print("| target | goal | measured | status |")
    print("|---|---|---|---|")
    for t in result["targets"]:
        print(f"| {t['target']} | {t['goal']} | {_measured(t)} | {t['status']} |")
    return result


if __name__ == "__main__":
    main()
