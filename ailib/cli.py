"""The ``ailib`` command: ``ailib train``, ``ailib evaluate``, ``ailib fetch``.

    ailib train --dataset fashion-mnist --epochs 10 --out runs/fashion
    ailib evaluate --model runs/fashion/model.npz --dataset fashion-mnist

Bad arguments give one line on stderr and exit status 2; a dataset or model file that cannot be
used gives its message and status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import backends, datasets, io, metrics, optimizers, zoo
from .cli_progress import Progress
from .model import Model
from .optimizers import SGD, Adam, Optimizer

DATASETS = ("auto", "mnist", "fashion-mnist", "mnist-test")
#: the fixed seed of the 8,000 / 2,000 split of MNIST's 10,000 test digits ("mnist-test")
SPLIT_SEED = 0
#: learning rates by optimizer when --lr is not given (tuned for the 784-256-128-10 MLP)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}


class UsageError(ValueError):
    """A bad command-line argument (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ailib", description="Train and evaluate ailib models on MNIST-like data."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model and save it with its history and plot")
    _data_args(train)
    train.add_argument(
        "--model",
        default="mlp",
        choices=sorted(zoo.MODELS),
        help="architecture from ailib.zoo.MODELS (default: mlp)",
    )
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--optimizer", default="adam", choices=sorted(DEFAULT_LR))
    train.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: 1e-3 for adam, 0.05 for sgd with momentum 0.9)",
    )
    train.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="learning rate over the epochs: cosine decay to 0 (default) or constant",
    )
    train.add_argument(
        "--hidden",
        default=None,
        help="hidden layer sizes, comma-separated (mlp default: 256,128; cnn: one size; "
        "resnet: the channels of each stage, default 16,32,64)",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of weights and shuffling")
    train.add_argument(
        "--out",
        default="runs/train",
        help="output directory for model.npz, history.json, training.png",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="accuracy and per-class accuracy of a saved model")
    evaluate.add_argument("--model", required=True, help="a model.npz written by ailib train")
    _data_args(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    fetch = sub.add_parser("fetch", help="find or download a dataset and verify it")
    fetch.add_argument("dataset", choices=DATASETS[1:])
    fetch.add_argument("--data-root", default=None, help="directory searched first for the files")
    fetch.add_argument("--quiet", action="store_true")
    fetch.set_defaults(func=cmd_fetch)
    return parser


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="auto",
        choices=DATASETS,
        help="mnist-test: MNIST's 10k test digits split 8k/2k; auto: mnist if "
        "found or downloadable, else fashion-mnist (default)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="numpy, cupy, torch, jax, array_api_strict, or auto: cupy when a GPU "
        "is usable, else numpy (default)",
    )
    parser.add_argument("--data-root", default=None, help="directory searched first for the files")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, plain lines only")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"ailib: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (
        datasets.DatasetUnavailable,
        datasets.IDXFormatError,
        datasets.ChecksumMismatch,
        io.ModelFileError,
    ) as exc:
        print(f"ailib: {exc}", file=sys.stderr)
        return 1


# -- argument checks ------------------------------------------------------------------------
def pick_backend(name: str) -> backends.Backend:
    """The backend called ``name``; "auto" is cupy when it runs here, else numpy (and says so)."""
    if name == "auto":
        reason = backends.why_unavailable("cupy")
        chosen = "cupy" if reason is None else "numpy"
        print(
            f"backend: {chosen} (auto{'' if reason is None else ': cupy unavailable'})",
            file=sys.stderr,
        )
        return backends.get(chosen)
    try:
        return backends.get(name)
    except (ValueError, backends.BackendUnavailable) as exc:
        raise UsageError(f"--backend: {exc}") from None


def output_dir(path: str) -> Path:
    """``path`` created if needed and checked writable."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(
            f"--out {path}: not a writable directory ({exc.strerror or exc})"
        ) from None
    return out


def _hidden(args: argparse.Namespace) -> dict[str, Any]:
    if args.hidden is None:
        return {}
    try:
        sizes = tuple(int(s) for s in args.hidden.split(","))
    except ValueError:
        raise UsageError(f"--hidden {args.hidden!r}: expected comma-separated integers") from None
    if any(s < 1 for s in sizes):
        raise UsageError(f"--hidden {args.hidden!r}: sizes must be positive")
    if args.model == "mlp":
        return {"hidden": sizes}
    if args.model == "resnet":
        return {"channels": sizes}
    if len(sizes) != 1:
        raise UsageError(f"--hidden: model {args.model} takes one hidden size")
    return {"hidden": sizes[0]}


# -- data -----------------------------------------------------------------------------------
def load_data(
    name: str, root: str | None, quiet: bool
) -> tuple[str, tuple, tuple, tuple[str, ...]]:
    """(dataset used, (x_train, y_train), (x_test, y_test), class names): flat float32 rows."""
    if name == "auto":
        try:
            return load_data("mnist", root, quiet)
        except datasets.DatasetUnavailable as exc:
            print(
                f"MNIST is not available ({str(exc).splitlines()[0]}); using Fashion-MNIST",
                file=sys.stderr,
            )
            return load_data("fashion-mnist", root, quiet)
    if name == "mnist-test":
        x, y = datasets.load_mnist_test(root, quiet=quiet)
        train, test = datasets.train_test_split(x, y, test_size=2000, seed=SPLIT_SEED)
    else:
        train = datasets.load(name, "train", root, quiet=quiet)
        test = datasets.load(name, "test", root, quiet=quiet)
    spec = datasets.DATASETS["fashion-mnist" if name == "fashion-mnist" else "mnist"]
    rows = [(datasets.flatten(datasets.to_float(x)), y) for x, y in (train, test)]
    return name, rows[0], rows[1], spec.classes


# -- commands -------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    for flag in ("epochs", "batch_size"):
        if getattr(args, flag) < 1:
            raise UsageError(
                f"--{flag.replace('_', '-')} must be positive, received {getattr(args, flag)}"
            )
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be positive, received {args.lr}")
    builder_kwargs = _hidden(args)
    be = pick_backend(args.backend)
    out = output_dir(args.out)
    name, (x, y), (xt, yt), classes = load_data(args.dataset, args.data_root, args.quiet)
    print(
        f"dataset: {name} ({len(x)} train, {len(xt)} test); model: {args.model}; backend: "
        f"{be.name}",
        file=sys.stderr,
    )

    if args.model == "mlp":
        builder_kwargs["in_features"] = x.shape[1]
    model = zoo.build(
        args.model, backend=be, seed=args.seed, classes=len(classes), **builder_kwargs
    )
    start = time.perf_counter()
    history = model.fit(
        x,
        y,
        optimizer=make_optimizer(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(xt, yt),
        progress=Progress(len(x), quiet=args.quiet),
        log_every=20,
        lr_schedule=make_schedule(args),
    )
    seconds = time.perf_counter() - start

    confusion = _confusion(model, xt, yt, len(classes))
    model.save(out / "model.npz")
    record = {
        "dataset": name,
        "model": args.model,
        "backend": be.name,
        "classes": list(classes),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "seconds": seconds,
        "test_accuracy": metrics.accuracy(confusion),
        "confusion": confusion.tolist(),
        "history": history,
    }
    (out / "history.json").write_text(json.dumps(record, indent=1))
    written = ["model.npz", "history.json"]
    from . import plot

    if plot.have_matplotlib():
        plot.training_figure(
            history,
            confusion,
            classes,
            out / "training.png",
            title=f"{args.model} on {name} ({be.name})",
        )
        written.append("training.png")
    else:
        print(
            "note: matplotlib is not installed (pip install 'ailib[plot]'), so no training.png",
            file=sys.stderr,
        )
    print(
        f"test accuracy: {100 * metrics.accuracy(confusion):.2f}% on {name} "
        f"({args.epochs} epoch{'s' if args.epochs > 1 else ''}, {seconds:.1f} s on {be.name})"
    )
    print(f"outputs: {', '.join(str(out / f) for f in written)}")
    return 0


def make_optimizer(args: argparse.Namespace) -> Optimizer:
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    return Adam(lr=lr) if args.optimizer == "adam" else SGD(lr=lr, momentum=0.9)


def make_schedule(args: argparse.Namespace) -> Callable[[int], float] | None:
    if args.schedule == "constant":
        return None
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    return optimizers.cosine_schedule(lr, args.epochs)


def _confusion(model: Model, x: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray:
    logits = model.backend.to_host(model.predict(x, batch_size=1024))
    return metrics.confusion_matrix(y, np.argmax(logits, axis=1), classes)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not Path(args.model).is_file():
        raise UsageError(f"--model {args.model}: no such file")
    be = pick_backend(args.backend)
    model = io.load(args.model, backend=be)
    name, _, (xt, yt), classes = load_data(args.dataset, args.data_root, args.quiet)
    confusion = _confusion(model, xt, yt, len(classes))
    print(f"{name}: accuracy {100 * metrics.accuracy(confusion):.2f}% on {len(xt)} test samples")
    width = max(len(c) for c in classes)
    for cls, acc, count in zip(classes, metrics.per_class_accuracy(confusion), confusion.sum(1)):
        print(f"  {cls:<{width}}  {100 * acc:6.2f}%  ({count} samples)")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    if args.dataset == "mnist-test":
        datasets.load_mnist_test(args.data_root, quiet=args.quiet)
    else:
        for split in ("train", "test"):
            datasets.load(args.dataset, split, args.data_root, quiet=args.quiet)
    print(f"{args.dataset}: available and verified")
    return 0
