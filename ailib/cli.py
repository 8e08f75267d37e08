"""The ``ailib`` command: ``ailib train``, ``ailib evaluate``, ``ailib fetch``.

    ailib train --dataset fashion-mnist --epochs 10 --out runs/fashion
    ailib evaluate --model runs/fashion          # on the dataset it was trained on

Bad arguments give one line on stderr and exit status 2. Anything else a user can run into (a
model file or dataset that cannot be used, failed downloads, data that does not fit the model,
diverged training, running out of memory) gives ailib's message, without a traceback, and exit
status 1; ``--debug`` or ``AILIB_DEBUG=1`` adds the traceback (for bug reports). See `EPILOG`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__, backends, datasets, io, metrics, optimizers, training, zoo
from . import distributed as dist
from ._files import atomic_open
from .callbacks import ModelCheckpoint
from .model import Model
from .optimizers import SGD, Adam, Optimizer
from .progress import ProgressBar

DATASETS = ("auto", "mnist", "fashion-mnist", "mnist-test")
#: the fixed seed of the 8,000 / 2,000 split of MNIST's 10,000 test digits ("mnist-test")
SPLIT_SEED = 0
#: learning rates by optimizer when --lr is not given (tuned for the 784-256-128-10 MLP)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}
#: where ``ailib train`` writes without --out: this folder, or the first free "runs/train-<n>"
DEFAULT_OUT = Path("runs/train")
#: the files a run writes; a folder holding any of them holds a run
RUN_FILES = ("model.npz", "history.json", "training.png", "checkpoint.npz")
CHECKPOINT = "checkpoint.npz"


EPILOG = """\
exit status:
  0    success
  1    a model file, dataset or download that cannot be used, data that does not fit the
       model, training that diverged, out of memory: ailib's message on stderr, no traceback
  2    a bad argument: one line on stderr
  130  interrupted (Ctrl-C, or SIGTERM during `ailib train`, which first saves the last
       completed epoch and says how to continue with --resume); 141 the output pipe was
       closed (e.g. by `head`)
--debug (or the environment variable AILIB_DEBUG=1) also prints the traceback of status 1,
for bug reports."""

#: what a user's mistake, a bad file or a failing network raises: reported without traceback
USER_ERRORS = (
    ValueError,  # bad data or files: ModelFileError, IDXFormatError, ChecksumMismatch, shapes
    TypeError,  # data of the wrong kind (strings as labels, ints as inputs)
    OSError,  # files and networks: DatasetUnavailable, DownloadFailed, permissions, disk full
    FloatingPointError,  # TrainingDiverged
    MemoryError,
    backends.BackendUnavailable,
)


class UsageError(ValueError):
    """A bad command-line argument (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ailib",
        description="Train and evaluate ailib models on MNIST-like data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error (AILIB_DEBUG=1)"
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"ailib {__version__} (Python {platform.python_version()}, NumPy {np.__version__})",
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
    train.add_argument("--epochs", type=int, default=10, help="passes over the data (default: 10)")
    train.add_argument(
        "--batch-size", type=int, default=128, help="samples per step (default: 128)"
    )
    train.add_argument(
        "--optimizer", default="adam", choices=sorted(DEFAULT_LR), help="(default: adam)"
    )
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
    train.add_argument(
        "--seed", type=int, default=0, help="seed of weights and shuffling (default: 0)"
    )
    train.add_argument(
        "--out",
        default=None,
        help=f"output directory for model.npz, history.json, training.png (default: "
        f"{DEFAULT_OUT}, or {DEFAULT_OUT}-2, -3, ... when that one holds a run); a folder "
        f"that holds a run is never replaced without --overwrite",
    )
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    train.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run in --out from its {CHECKPOINT} up to --epochs (after Ctrl-C, "
        f"or to train longer); the same result as an uninterrupted run",
    )
    train.add_argument(
        "--validation-split",
        type=float,
        default=0.1,
        help="fraction of the training set held out to validate each epoch, taken from its end "
        "before shuffling; the test set is used once, at the end (default: 0.1; 0: none)",
    )
    train.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="whole training steps as one compiled call (docs/performance.md, 'Compiled "
        "steps'): auto is the backend's default (on for numpy, jax and torch on the CPU; off "
        "for cupy, where on makes each step one CUDA graph); off runs them one operation at a "
        "time (default: auto)",
    )
    train.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training, one process per rank, started by a launcher: "
        "mpiexec -n 4 ailib train --distributed ... (or torchrun ... -m ailib train "
        "--distributed --backend torch); --batch-size is the global batch; rank 0 prints "
        "and writes the outputs (docs/distributed.md)",
    )
    train.set_defaults(func=cmd_train)
    _debug_flag(train)

    evaluate = sub.add_parser("evaluate", help="accuracy and per-class accuracy of a saved model")
    evaluate.add_argument(
        "--model",
        required=True,
        help="a model file, or a run folder holding model.npz (what ailib train wrote)",
    )
    _data_args(evaluate, dataset_default=None)
    evaluate.set_defaults(func=cmd_evaluate)
    _debug_flag(evaluate)

    fetch = sub.add_parser("fetch", help="find or download a dataset and verify it")
    fetch.add_argument("dataset", choices=DATASETS[1:])
    fetch.add_argument(
        "--data-root", default=None, help="directory searched first for the files (default: none)"
    )
    fetch.add_argument("--quiet", action="store_true")
    fetch.set_defaults(func=cmd_fetch)
    _debug_flag(fetch)
    return parser


def _debug_flag(parser: argparse.ArgumentParser) -> None:
    """--debug after the command too (SUPPRESS: not resetting one given before it)."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="print tracebacks"
    )


def _data_args(parser: argparse.ArgumentParser, dataset_default: str | None = "auto") -> None:
    parser.add_argument(
        "--dataset",
        default=dataset_default,
        choices=DATASETS,
        help="mnist-test: MNIST's 10k test digits split 8k/2k; auto: mnist if found or "
        "downloadable, else fashion-mnist "
        + (
            "(default: auto)"
            if dataset_default
            else "(default: the one recorded in the model file, else auto)"
        ),
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="numpy, cupy, torch, jax, array_api_strict, or auto: cupy when a GPU "
        "is usable, else numpy (default: auto)",
    )
    parser.add_argument(
        "--data-root", default=None, help="directory searched first for the files (default: none)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars, plain lines only")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status (see
    `EPILOG`): errors are reported as ailib's message, tracebacks only with --debug."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("AILIB_DEBUG", "") not in ("", "0")
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return args.func(args)
    except UsageError as exc:
        print(f"ailib: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BrokenPipeError:  # e.g. `ailib evaluate ... | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        print(f"ailib: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(f"ailib: {describe(exc)}", file=sys.stderr)
        return 1


def describe(exc: BaseException) -> str:
    """The message of ``exc`` for the command line: ailib's own, with a hint for memory."""
    if isinstance(exc, MemoryError):
        detail = str(exc) or "MemoryError"
        return f"out of memory ({detail}); try smaller --hidden sizes or --batch-size"
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename:  # e.g. PermissionError
        text = f"{exc.filename}: {exc.strerror}"
    return text or type(exc).__name__


# -- argument checks ------------------------------------------------------------------------
def pick_backend(name: str) -> backends.Backend:
    """The backend called ``name``; "auto" is `backends.auto_choice` (cupy when it runs here,
    else numpy), and says which and why."""
    if name == "auto":
        choice = backends.auto_choice()
        print(f"backend: {choice}", file=sys.stderr)
        return backends.get(choice.name)
    try:
        return backends.get(name)
    except (ValueError, backends.BackendUnavailable) as exc:
        raise UsageError(f"--backend: {exc}") from None


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds any file a run writes (`RUN_FILES`)."""
    return any((folder / name).exists() for name in RUN_FILES)


def choose_out(args: argparse.Namespace) -> Path:
    """Where this run writes, checked before any data is read; nothing is created yet.

    Without --out: `DEFAULT_OUT`, or the first of ``runs/train-2``, ``-3``, ... that holds no
    run. With --out: that folder, refused when it already holds a run, unless --overwrite
    (or --resume, which continues it)."""
    if args.out is None:
        out, n = DEFAULT_OUT, 1
        while holds_run(out):
            n += 1
            out = DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}-{n}")
    else:
        out = Path(args.out)
        if holds_run(out) and not (args.overwrite or args.resume):
            raise UsageError(
                f"--out {out} already holds a run; pass --resume to continue it, --overwrite "
                f"to replace it, or choose another --out"
            )
    if args.resume and not (out / CHECKPOINT).is_file():
        where = "--resume needs --out" if args.out is None else f"--out {out} holds no {CHECKPOINT}"
        raise UsageError(f"{where}: nothing to resume")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a writable directory (a file is in the way)")
    parent = out
    while not parent.exists():  # the nearest folder that exists must let us create the rest
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        what = "not a directory" if not parent.is_dir() else "permission denied"
        raise UsageError(f"--out {out}: not a writable directory ({parent}: {what})")
    return out


class RunFolder:
    """``with RunFolder(out):`` creates ``out`` (and missing parents) and checks it is
    writable; if the block fails and left the folders it created empty, they are removed, so a
    run that fails before writing anything leaves no empty run folder behind."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created: list[Path] = []

    def __enter__(self) -> Path:
        missing = [p for p in (self.out, *self.out.parents) if not p.exists()]
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.created = missing
            with tempfile.TemporaryFile(dir=self.out):
                pass
        except OSError as exc:
            self._remove_empty()
            raise UsageError(
                f"--out {self.out}: not a writable directory ({exc.strerror or exc})"
            ) from None
        return self.out

    def __exit__(self, kind: type | None, *rest: object) -> None:
        if kind is not None:
            self._remove_empty()

    def _remove_empty(self) -> None:
        for folder in self.created:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): keep it
                break


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
            print(f"{str(exc).splitlines()[0]}; using Fashion-MNIST", file=sys.stderr)
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
class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``ailib train`` (exit status 130), with what was kept."""


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: the last epoch is kept


#: what ``ailib train --distributed`` says when no launcher started it (exit status 2)
LAUNCH_HELP = """\
--distributed needs a launcher that starts one process per rank, for example:
  mpiexec -n 4 ailib train --distributed ...              (one machine: pip install mpi4py mpich)
  srun --mpi=pmix -n 8 ailib train --distributed ...      (Slurm)
  mpiexec -n 8 -f hostfile ailib train --distributed ...  (several machines)
  torchrun --nproc-per-node 4 -m ailib train --distributed --backend torch ...
see docs/distributed.md"""


def _communicator(args: argparse.Namespace) -> dist.Communicator:
    """The job's communicator for ``--distributed`` (UsageError without a launcher). Ranks
    other than 0 print nothing from here on: their stdout and stderr go to the null device
    (an error that ends the job is still shown, on the process's own stderr)."""
    if dist.launcher() is None:
        raise UsageError(LAUNCH_HELP)
    name = backends.auto_choice().name if args.backend == "auto" else args.backend
    try:
        comm = dist.init(backend=name)
    except (ValueError, backends.BackendUnavailable) as exc:
        raise UsageError(f"--backend: {exc}") from None
    if not comm.is_root:
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    print(f"distributed: {comm.size} ranks over {comm.engine}", file=sys.stderr)
    return comm


def cmd_train(args: argparse.Namespace) -> int:
    if not args.distributed:
        return _cmd_train(args, None)
    comm = _communicator(args)
    with dist.abort_on_error(comm):  # an unexpected error on one rank ends them all
        try:
            return _cmd_train(args, comm)
        except UsageError as exc:  # every rank checks the same arguments: all stop alike
            bad_arguments = exc
        except USER_ERRORS as exc:
            if comm.size == 1:
                raise
            if getattr(exc, "on_every_rank", False) and not comm.is_root:
                raise  # raised alike on every rank (a divergence): rank 0 says it (the guard)
            # the others may be waiting for this rank: say why once, then end every rank
            where = "" if comm.is_root else f"rank {comm.rank} of {comm.size}: "
            print(f"ailib: {where}{describe(exc)}", file=sys.__stderr__, flush=True)
            comm.abort(exc)
    raise bad_arguments  # status 2, printed by rank 0 (the others print nothing)


def _cmd_train(args: argparse.Namespace, comm: dist.Communicator | None) -> int:
    """`cmd_train`; with ``comm``, one rank of data-parallel training (rank 0 writes)."""
    for flag in ("epochs", "batch_size"):
        if getattr(args, flag) < 1:
            raise UsageError(
                f"--{flag.replace('_', '-')} must be positive, received {getattr(args, flag)}"
            )
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be positive, received {args.lr}")
    if not 0 <= args.validation_split < 1:
        raise UsageError(f"--validation-split must be in [0, 1), received {args.validation_split}")
    builder_kwargs = _hidden(args)
    out = choose_out(args) if comm is None else _shared_out(args, comm)
    be = pick_backend(args.backend) if comm is None else comm.backend
    name, (x, y), (xt, yt), classes = load_data(args.dataset, args.data_root, args.quiet)
    held = training.split_rows(len(x), args.validation_split) if args.validation_split else 0
    print(
        f"dataset: {name} ({len(x) - held} train, {held} validation, {len(xt)} test); model: "
        f"{args.model}; backend: {be.spec}; out: {out}",
        file=sys.stderr,
    )

    if args.model == "mlp":
        builder_kwargs["in_features"] = x.shape[1]
    model = zoo.build(
        args.model, backend=be, seed=args.seed, classes=len(classes), **builder_kwargs
    )
    model.meta = {"dataset": name, "classes": list(classes), "model": args.model}
    model.compile_steps = {"auto": None, "on": True, "off": False}[args.compile]
    problem = be.compile_problem() if args.compile == "on" else None
    if args.compile == "on" and comm is not None:
        # the ranks exchange gradients between each step's backward pass and its update
        problem = "data-parallel steps are not compiled"
    if problem is not None and (comm is None or comm.is_root):
        print(f"note: --compile on: {problem}; the steps run uncompiled", file=sys.stderr)
    if comm is not None:
        args.ranks = comm.size  # recorded in history.json
        if not comm.is_root:  # train alongside rank 0, write nothing
            _train(args, model, x, y, out / CHECKPOINT, comm)
            return 0
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with RunFolder(out):
            model, history, seconds, stopped = _train(args, model, x, y, out / CHECKPOINT, comm)
            confusion = _confusion(model, xt, yt, len(classes))
            model.save(out / "model.npz")
            written = _write_outputs(args, out, name, be, classes, history, confusion, seconds)
    finally:
        signal.signal(signal.SIGTERM, previous)
    epochs = len(history["loss"])
    print(
        f"test accuracy: {100 * metrics.accuracy(confusion):.2f}% on {name} "
        f"({epochs} epoch{'s' if epochs != 1 else ''}, {seconds:.1f} s on {be.name})"
    )
    print(f"outputs: {', '.join(str(out / f) for f in written)}")
    if stopped:
        raise Interrupted(
            f"interrupted during epoch {epochs + 1} of {args.epochs}; epochs 1-{epochs} are "
            f"saved in {out} (model, history, plot and {CHECKPOINT}). To continue: "
            f"{_resume_command(args, out)}"
        )
    return 0


def _shared_out(args: argparse.Namespace, comm: dist.Communicator) -> Path:
    """`choose_out` decided by rank 0 and told to every rank, so all stop alike on a bad one."""
    try:
        found: dict[str, Any] = {"out": str(choose_out(args))} if comm.is_root else {}
    except UsageError as exc:
        found = {"error": str(exc)}
    found = dist.broadcast_object(comm, found)
    if "error" in found:
        raise UsageError(found["error"])
    return Path(found["out"])


def _train(
    args: argparse.Namespace,
    model: Model,
    x: Any,
    y: Any,
    checkpoint: Path,
    comm: dist.Communicator | None = None,
) -> tuple[Model, dict[str, list[float]], float, bool]:
    """Fit with a checkpoint after every epoch. On Ctrl-C or SIGTERM, the model and history of
    the last completed epoch, read back from that checkpoint. Returns (model, history, seconds
    of training, whether it was interrupted)."""
    progress = ProgressBar(quiet=args.quiet)  # the same display as fit(verbose="auto")
    start = time.perf_counter()
    try:
        history = model.fit(
            x,
            y,
            optimizer=make_optimizer(args),
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
            # the checkpoint first: the progress display reports the epochs it restored
            callbacks=[ModelCheckpoint(checkpoint, resume=args.resume), progress],
            verbose=False,
            log_every=20,
            lr_schedule=make_schedule(args),
            distributed=comm,
        )
    except io.CheckpointMismatch as exc:
        raise UsageError(
            f"{exc.path}: {exc.difference}; --resume needs the run's own settings (see "
            f"{exc.path.parent / 'history.json'}), or start afresh with --overwrite or another --out"
        ) from None
    except KeyboardInterrupt:
        if not checkpoint.is_file():
            raise Interrupted("interrupted before the first epoch ended; nothing saved") from None
        print("\ninterrupted: saving the last completed epoch", file=sys.stderr, flush=True)
        meta = model.meta
        model = io.load(checkpoint, backend=model.backend)
        model.meta = meta
        _, history = io.checkpoint_state(checkpoint)
        return model, history, time.perf_counter() - start, True
    return model, history, time.perf_counter() - start, False


def checkpoint_epoch(path: Path) -> int:
    """The last completed epoch saved in the checkpoint ``path`` (0 when there is none)."""
    return io.checkpoint_state(path)[0] if path.is_file() else 0


def _resume_command(args: argparse.Namespace, out: Path) -> str:
    """The command line that continues this run: the same arguments, --out, --resume."""
    argv = [a for a in args.argv if a not in ("--overwrite", "--resume", "--debug")]
    if args.out is None:
        argv += ["--out", str(out)]
    return shlex.join(["ailib", *argv, "--resume"])


def _write_outputs(
    args: argparse.Namespace,
    out: Path,
    name: str,
    be: backends.Backend,
    classes: Sequence[str],
    history: dict[str, list[float]],
    confusion: np.ndarray,
    seconds: float,
) -> list[str]:
    """history.json and training.png beside model.npz; the names of the files there."""
    record = {
        "dataset": name,
        "model": args.model,
        "backend": be.name,
        "ranks": getattr(args, "ranks", 1),
        "classes": list(classes),
        "args": {k: v for k, v in vars(args).items() if k not in ("func", "argv")},
        "seconds": seconds,
        "test_accuracy": metrics.accuracy(confusion),
        "confusion": confusion.tolist(),
        "history": history,
    }
    with atomic_open(out / "history.json") as f:
        f.write(json.dumps(record, indent=1).encode("utf-8"))
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
    return [*written, CHECKPOINT]


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


def model_file(path: str) -> Path:
    """``--model``: a model file, or a run folder holding model.npz."""
    model = Path(path)
    if model.is_dir():
        if not (model / "model.npz").is_file():
            raise UsageError(f"--model {path}: a folder without model.npz (not a run folder)")
        return model / "model.npz"
    if not model.is_file():
        what = "not a regular file or folder" if model.exists() else "no such file or folder"
        raise UsageError(f"--model {path}: {what}")
    return model


def cmd_evaluate(args: argparse.Namespace) -> int:
    path = model_file(args.model)
    recorded = io.metadata(path).get("dataset")
    dataset = args.dataset
    if dataset is None:
        dataset = recorded if recorded in DATASETS else "auto"
        if recorded in DATASETS:
            print(f"dataset: {dataset} (recorded in {path})", file=sys.stderr)
    elif recorded in DATASETS and recorded != dataset:
        print(
            f"note: {path} was trained on {recorded}; evaluating on {dataset} as asked",
            file=sys.stderr,
        )
    be = pick_backend(args.backend)
    model = io.load(path, backend=be)
    name, _, (xt, yt), classes = load_data(dataset, args.data_root, args.quiet)
    scored = model.num_classes()
    if scored is not None and scored != len(classes):  # fewer: never predicts some classes
        raise ValueError(
            f"{path} scores {scored} classes, {name} has {len(classes)}; evaluate a model on the "
            f"kind of data it was trained on (--dataset)"
        )
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
