"""CNN training throughput: ailib (NumPy backend) vs PyTorch CPU eager, same network, same weights.

    python -m benchmarks.cnn [--batch 128] [--steps 8] [--rounds 7] [--backend numpy]
    python -m benchmarks.cnn --accuracy {mnist,fashion} [--epochs N]   # accuracy runs instead

Both sides train `ailib.zoo.cnn()` (Conv 1→32 → ReLU → MaxPool → Conv 32→64 → ReLU → MaxPool →
Dense 3136→128 → ReLU → Dropout → Dense 128→10) with SGD + momentum on the same batches; PyTorch
gets ailib's initial weights copied in, and the two forward passes are checked to agree before
timing. After warm-up, rounds alternate A/B (and which goes first), each timing ``--steps``
training steps; the result is the median samples/s of each side and their ratio. Also times
each ailib layer's forward and backward, to show what bounds the ratio.

Writes benchmarks/results/cnn.json and cnn.md (accuracy runs: cnn_accuracy_<data>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ailib
from ailib import zoo

RESULTS = Path(__file__).parent / "results"
DATA = {
    # the 10k MNIST test digits (they travel with the repository), split 8k train / 2k test
    # with a fixed seed
    "mnist": Path(__file__).resolve().parents[1] / "data" / "mnist-test",
    "fashion": Path("/usr/share/datasets/fashion-mnist"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip): magic (2 zero bytes, type, ndim), big-endian sizes, then uint8 data."""
    import gzip

    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(name: str) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test): float32 pixels in [0, 1] as rows of 784, int64 labels."""
    root = DATA[name]

    def part(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz").reshape(-1, 784)
        y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        return x.astype(np.float32) / 255, y

    if name == "mnist":
        x, y = part("t10k")
        order = np.random.default_rng(0).permutation(len(x))
        train, test = order[:8000], order[8000:]
        return x[train], y[train], x[test], y[test]
    return (*part("train"), *part("t10k"))


def accuracy_run(name: str, epochs: int, batch: int, lr: float, backend: str) -> dict:
    """Train zoo.cnn with Adam on ``name`` and record test accuracy and time per epoch."""
    x, y, xt, yt = load(name)
    model = ailib.Sequential(zoo.cnn(), backend=backend, seed=0)
    history = model.fit(
        x,
        y,
        optimizer=ailib.optimizers.Adam(lr),
        epochs=epochs,
        batch_size=batch,
        validation_data=(xt, yt),
        verbose=True,
    )
    result = {
        "data": name,
        "train": len(x),
        "test": len(xt),
        "epochs": epochs,
        "batch": batch,
        "optimizer": f"Adam(lr={lr})",
        "backend": backend,
        "history": history,
        "final_test_accuracy": history["val_accuracy"][-1],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cnn_accuracy_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def torch_twin(model: ailib.Sequential) -> Any:
    """The same network in torch.nn, with ailib's current weights copied in: every setting of
    each layer is carried over (Conv2d's stride, padding, its "same"/"valid" strings included,
    dilation, groups and bias; the pools' stride, padding and ceil_mode, AvgPool2d's
    count_include_pad; Linear's bias), so that the twin computes what the model computes."""
    import torch
    from torch import nn

    modules = []
    for layer in model.layers:
        name = layer.name
        if name == "Reshape":
            modules.append(nn.Unflatten(1, layer.shape))
        elif name == "Conv2D":
            modules.append(
                nn.Conv2d(
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel_size,
                    stride=layer.stride,
                    padding=layer.padding,
                    dilation=layer.dilation,
                    groups=layer.groups,
                    bias=layer.bias,
                )
            )
        elif name == "Dense":
            modules.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias))
        elif name == "ReLU":
            modules.append(nn.ReLU())
        elif name in ("MaxPool2D", "AvgPool2D"):
            pool, extra = (
                (nn.MaxPool2d, {})
                if name == "MaxPool2D"
                else (nn.AvgPool2d, {"count_include_pad": layer.count_include_pad})
            )
            modules.append(
                pool(
                    layer.kernel_size,
                    layer.stride,
                    layer.padding,
                    ceil_mode=layer.ceil_mode,
                    **extra,
                )
            )
        elif name == "Flatten":
            modules.append(nn.Flatten())
        elif name == "Dropout":
            modules.append(nn.Dropout(layer.p))
        else:
            raise ValueError(f"no torch twin for {name}")
    net = nn.Sequential(*modules)
    with torch.no_grad():
        for layer, module in zip(model.layers, net):
            for key, tensor in (("W", "weight"), ("b", "bias")):
                if key in layer.params:
                    value = model.backend.to_host(layer.params[key])
                    getattr(module, tensor).copy_(torch.from_numpy(value))
    return net


def check_same_function(model: ailib.Sequential, net: Any, x: np.ndarray) -> float:
    """Largest |difference| of the two models' eval-mode outputs (must be float32 round-off)."""
    import torch

    net.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    net.train()
    got = model.backend.to_host(model.predict(x))
    return float(np.max(np.abs(got - ref)))


def ailib_runner(model: ailib.Sequential, xs: list[Any], ys: list[Any], lr: float) -> Callable:
    loss = ailib.losses.SoftmaxCrossEntropy()
    opt = ailib.optimizers.SGD(lr, momentum=0.9)
    model.train()

    def run(steps: int) -> None:
        for i in range(steps):
            model.train_step(xs[i % len(xs)], ys[i % len(ys)], loss, opt)
        model.backend.synchronize()

    return run


def torch_runner(net: Any, xs: list[np.ndarray], ys: list[np.ndarray], lr: float) -> Callable:
    import torch

    tx = [torch.from_numpy(x) for x in xs]
    ty = [torch.from_numpy(y) for y in ys]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loss = torch.nn.CrossEntropyLoss()
    net.train()

    def run(steps: int) -> None:
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            loss(net(tx[i % len(tx)]), ty[i % len(ty)]).backward()
            opt.step()

    return run


def interleaved(runners: dict[str, Callable], batch: int, steps: int, rounds: int) -> dict:
    """Median samples/s per runner over ``rounds`` A/B rounds, alternating who goes first."""
    names = list(runners)
    for name in names:  # warm-up
        runners[name](2)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            runners[name](steps)
            rates[name].append(batch * steps / (time.perf_counter() - start))
    return {name: {"median": statistics.median(v), "all": v} for name, v in rates.items()}


def layer_profile(model: ailib.Sequential, x: Any, y: Any, repeats: int = 3) -> list[dict]:
    """Mean milliseconds of each ailib layer's forward and backward on one batch."""
    be, loss = model.backend, ailib.losses.SoftmaxCrossEntropy()
    fwd, bwd = [0.0] * len(model.layers), [0.0] * len(model.layers)
    for _ in range(repeats + 1):
        h = x
        times_f, times_b = [], []
        for layer in model.layers:
            start = time.perf_counter()
            h = layer.forward(h)
            be.synchronize()
            times_f.append(time.perf_counter() - start)
        g = loss.grad(h, y)
        for layer in reversed(model.layers):
            start = time.perf_counter()
            g = layer.backward(g)
            be.synchronize()
            times_b.append(time.perf_counter() - start)
        if _ > 0:  # the first pass is a warm-up
            fwd = [a + b for a, b in zip(fwd, times_f)]
            bwd = [a + b for a, b in zip(bwd, reversed(times_b))]
    return [
        {"layer": repr(layer), "forward_ms": 1000 * f / repeats, "backward_ms": 1000 * b / repeats}
        for layer, f, b in zip(model.layers, fwd, bwd)
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--accuracy", choices=sorted(DATA), help="train and test instead")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.accuracy:
        lr = 1e-3 if args.lr == parser.get_default("lr") else args.lr
        return accuracy_run(args.accuracy, args.epochs, args.batch, lr, args.backend)
    import torch

    rng = np.random.default_rng(0)
    xs = [rng.random((args.batch, 784), dtype=np.float32) for _ in range(4)]
    ys = [rng.integers(0, 10, args.batch).astype(np.int64) for _ in range(4)]
    model = ailib.Sequential(zoo.cnn(), backend=args.backend, seed=0)
    net = torch_twin(model)
    max_diff = check_same_function(model, net, xs[0])
    if max_diff > 1e-3:
        raise SystemExit(f"the torch twin computes something else: max |diff| = {max_diff}")
    be = model.backend
    dev_x, dev_y = [be.asarray(x) for x in xs], [be.asarray(y) for y in ys]
    profile = layer_profile(model, dev_x[0], dev_y[0])
    rates = interleaved(
        {
            f"ailib-{args.backend}": ailib_runner(model, dev_x, dev_y, args.lr),
            "torch-eager": torch_runner(net, xs, ys, args.lr),
        },
        args.batch,
        args.steps,
        args.rounds,
    )
    a, t = (rates[k]["median"] for k in rates)
    result = {
        "benchmark": f"cnn training throughput (samples/s), batch {args.batch}",
        "model": [repr(layer) for layer in model.layers],
        "rates": rates,
        "ratio_ailib_over_torch": a / t,
        "forward_max_abs_diff": max_diff,
        "ailib_layer_profile_ms": profile,
        "settings": vars(args),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cnn.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "cnn.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    names = list(r["rates"])
    lines = [
        "# CNN training throughput",
        "",
        f"{r['benchmark']}; {r['machine']['cpus']} CPUs, torch {r['machine']['torch']} "
        f"({r['machine']['torch_threads']} threads), numpy {r['machine']['numpy']}. Median of "
        f"{r['settings']['rounds']} interleaved rounds of {r['settings']['steps']} steps.",
        "",
        "| runner | median samples/s |",
        "| --- | --- |",
        *[f"| {n} | {r['rates'][n]['median']:.0f} |" for n in names],
        "",
        f"**ratio {names[0]} / {names[1]} = {r['ratio_ailib_over_torch']:.2f}**",
        "",
        "ailib time per layer (ms, one batch):",
        "",
        "| layer | forward | backward |",
        "| --- | --- | --- |",
        *[
            f"| {p['layer']} | {p['forward_ms']:.2f} | {p['backward_ms']:.2f} |"
            for p in r["ailib_layer_profile_ms"]
        ],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
