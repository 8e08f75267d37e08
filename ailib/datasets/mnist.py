"""MNIST and Fashion-MNIST: where the files are looked for, how they are verified, how they load.

Search order for each file (the first hit wins):
  1. ``root`` (the argument), then ``root/<dataset>``;
  2. ``$AILIB_DATA``, then ``$AILIB_DATA/<dataset>``;
  3. the cache, ``$XDG_CACHE_HOME/ailib/<dataset>`` (default ``~/.cache/ailib/<dataset>``);
  4. well-known system locations (Debian's ``dataset-fashion-mnist`` package installs
     Fashion-MNIST under /usr/share/datasets/fashion-mnist);
  5. a download into the cache, trying the mirrors in turn (``$AILIB_MNIST_MIRRORS`` /
     ``$AILIB_FASHION_MNIST_MIRRORS``: comma-separated base URLs, replace the built-in list).

Each file may be gzip-compressed (``*.gz``) or raw (the name without ``.gz``). A downloaded .gz
must match its published MD5. A local file is checked on its decompressed content (recompressed
copies such as Debian's differ in their .gz bytes only): SHA-256 where known, and always the IDX
structure (magic number, dimensions, length). The MNIST training files have no known content
hash here, so for them only the structure is checked.

A file that fails these checks (wrong SHA-256, truncated, not gzip, wrong header, a label that is
no class) is refused, naming it, unless it was found in the cache and downloading is allowed:
the cache is ailib's, so the file is fetched again (at most once per file and call), verified
as any download, and the new copy, which replaces the bad one, is used. Files anywhere else
(``root``, ``$AILIB_DATA``, system directories) are the user's or the system's: never deleted
or overwritten.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import ChecksumMismatch, DownloadFailed, download
from .idx import IDXFormatError, read_idx

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class FileSpec:
    """One published file: its name, the array shape it must hold, the MD5 of the published .gz,
    the SHA-256 of its decompressed content and the .gz's size in bytes (None where unknown)."""

    name: str
    shape: tuple[int, ...]
    md5: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything ailib knows about one dataset; `DATASETS` holds the built-in ones."""

    name: str
    title: str
    files: dict[str, FileSpec]  # keys: train_images, train_labels, test_images, test_labels
    mirrors: tuple[str, ...]
    mirrors_env: str
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


class DatasetUnavailable(FileNotFoundError):
    """A dataset file is neither found locally nor downloadable; the message says where ailib
    looked and how to provide the files."""


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        files={
            "train_images": FileSpec(
                "train-images-idx3-ubyte.gz",
                (60000, 28, 28),
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                size=9912422,
            ),
            "train_labels": FileSpec(
                "train-labels-idx1-ubyte.gz",
                (60000,),
                "d53e105ee54ea40749a09fcbcd1e9432",
                size=28881,
            ),
            "test_images": FileSpec(
                "t10k-images-idx3-ubyte.gz",
                (10000, 28, 28),
                "9fb629c4189551a2d022fa330f9573f3",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                size=1648877,
            ),
            "test_labels": FileSpec(
                "t10k-labels-idx1-ubyte.gz",
                (10000,),
                "ec29112dd5afa0611ce80d1b7f02629c",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                size=4542,
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        mirrors_env="AILIB_MNIST_MIRRORS",
        classes=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        files={
            "train_images": FileSpec(
                "train-images-idx3-ubyte.gz",
                (60000, 28, 28),
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                size=26421880,
            ),
            "train_labels": FileSpec(
                "train-labels-idx1-ubyte.gz",
                (60000,),
                "25c81989df183df01b3e8a0aad5dffbe",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                size=29515,
            ),
            "test_images": FileSpec(
                "t10k-images-idx3-ubyte.gz",
                (10000, 28, 28),
                "bef4ecab320f06d8554ea6380940ec79",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                size=4422102,
            ),
            "test_labels": FileSpec(
                "t10k-labels-idx1-ubyte.gz",
                (10000,),
                "bb300cfdad3c16e7a12a480ee83cd310",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                size=5148,
            ),
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        mirrors_env="AILIB_FASHION_MNIST_MIRRORS",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}

SPLITS = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}


def cache_dir() -> Path:
    """ailib's download cache: ``$XDG_CACHE_HOME/ailib``, by default ``~/.cache/ailib``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ailib"


def mirrors(spec: DatasetSpec) -> list[str]:
    """The mirrors to try, in order: ``$<spec.mirrors_env>`` when set, else the built-in list."""
    override = os.environ.get(spec.mirrors_env, "")
    return [m.strip() for m in override.split(",") if m.strip()] or list(spec.mirrors)


def search_dirs(spec: DatasetSpec, root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where local files are looked for, in order, as (label, directory) pairs."""
    dirs = []
    if root is not None:
        dirs += [("root", Path(root)), ("root", Path(root) / spec.name)]
    if os.environ.get("AILIB_DATA"):
        env = Path(os.environ["AILIB_DATA"])
        dirs += [("$AILIB_DATA", env), ("$AILIB_DATA", env / spec.name)]
    dirs.append(("cache", cache_dir() / spec.name))
    dirs += [("system", Path(d)) for d in spec.system_dirs]
    return dirs


def find_local(
    spec: DatasetSpec, file: FileSpec, root: str | os.PathLike | None = None
) -> Path | None:
    """The first local copy of ``file`` (compressed or not) along `search_dirs`, or None."""
    for _, directory in search_dirs(spec, root):
        for name in (file.name, file.name.removesuffix(".gz")):
            if (directory / name).is_file():
                return directory / name
    return None


def load_file(path: Path, file: FileSpec) -> np.ndarray:
    """Read ``path`` and check it is ``file``: its IDX header (shape, uint8) before the data is
    decompressed, then the content's SHA-256 (when known)."""
    digest = hashlib.sha256()
    array = read_idx(path, shape=file.shape, dtype=np.uint8, digest=digest)
    if file.sha256 is not None and digest.hexdigest() != file.sha256:
        raise ChecksumMismatch(
            f"{path}: SHA-256 of the decompressed content is {digest.hexdigest()}, expected "
            f"{file.sha256} ({file.name}); delete the file and fetch it again"
        )
    return array


def _in_cache(spec: DatasetSpec, path: Path, root: str | os.PathLike | None = None) -> bool:
    """Whether ``path``, as `find_local` or a download gives it, lies in ailib's cache (and in
    no directory searched before it, such as a ``root`` that is the cache): a file ailib may
    replace."""
    for label, directory in search_dirs(spec, root):
        if directory == path.parent:
            return label == "cache"
    return False


def fetch(
    spec: DatasetSpec,
    keys: tuple[str, ...],
    root: str | os.PathLike | None = None,
    *,
    download_missing: bool = True,
    quiet: bool = False,
    timeout: float = 30.0,
    deadline: float | None = None,
) -> dict[str, Path]:
    """Local paths of ``spec``'s files ``keys``, downloading missing ones into the cache
    (``timeout`` and ``deadline``: see `ailib.datasets.download`)."""
    found = _fetch(spec, keys, root, download_missing, quiet, timeout, deadline)
    return {key: path for key, (path, _) in found.items()}


def _fetch(
    spec: DatasetSpec,
    keys: tuple[str, ...],
    root: str | os.PathLike | None,
    download_missing: bool,
    quiet: bool,
    timeout: float = 30.0,
    deadline: float | None = None,
) -> dict[str, tuple[Path, bool]]:
    """`fetch`, saying for each path whether it was downloaded just now."""
    paths, dead, failures = {}, set(), []
    for key in keys:
        file = spec.files[key]
        path = find_local(spec, file, root)
        downloaded = False
        if path is None and download_missing:
            try:
                path = download(
                    file.name,
                    mirrors(spec),
                    cache_dir() / spec.name,
                    file.md5,
                    size=file.size,
                    timeout=timeout,
                    deadline=deadline,
                    quiet=quiet,
                    dead=dead,
                )
                downloaded = True
            except DownloadFailed as exc:
                failures.append(str(exc))
        if path is None:
            raise DatasetUnavailable(
                _unavailable_message(spec, keys, root, download_missing, failures)
            )
        paths[key] = path, downloaded
    return paths


def _load_checked(spec: DatasetSpec, key: str, path: Path) -> np.ndarray:
    """`load_file`, and for a labels file, every label one of ``spec``'s classes."""
    array = load_file(path, spec.files[key])
    if key.endswith("labels") and array.size and array.max() >= len(spec.classes):
        raise IDXFormatError(  # uint8: never below 0
            f"{path}: labels must lie in [0, {len(spec.classes) - 1}] (the "
            f"{len(spec.classes)} classes of {spec.title}), the file holds labels up to "
            f"{array.max()}; delete it and fetch it again"
        )
    return array


def _load_or_refetch(
    spec: DatasetSpec,
    key: str,
    path: Path,
    downloaded: bool,
    root: str | os.PathLike | None,
    refetch: bool,
    quiet: bool,
) -> np.ndarray:
    """`_load_checked`; a bad file found in the cache (not downloaded just now) is fetched
    again when ``refetch``, once: the verified copy replaces it and is loaded."""
    try:
        return _load_checked(spec, key, path)
    except (ChecksumMismatch, IDXFormatError) as exc:
        if downloaded or not _in_cache(spec, path, root):
            raise
        bad = exc
    fault = str(bad)
    for advice in ("; delete the file and fetch it again", "; delete it and fetch it again"):
        fault = fault.removesuffix(advice)  # ailib fetches it itself
    if not refetch:
        raise type(bad)(
            f"{fault}\nIt is in ailib's download cache: load with download=True to fetch it "
            f"again (the verified copy replaces it)"
        ) from bad
    if not quiet:
        print(f"{fault}\nIt is in ailib's download cache: fetching it again", file=sys.stderr)
    file = spec.files[key]
    try:
        fresh = download(
            file.name, mirrors(spec), cache_dir() / spec.name, file.md5, size=file.size, quiet=quiet
        )
    except DownloadFailed as failed:
        raise type(bad)(f"{fault}\nFetching it again failed; the file is kept.\n{failed}") from bad
    removed = ""
    if fresh != path:  # the bad file was the decompressed one: the new .gz would come first
        path.unlink(missing_ok=True)
        removed = f"; {path} removed"
    if not quiet:
        print(f"{fresh}: fetched again and verified{removed}", file=sys.stderr, flush=True)
    return _load_checked(spec, key, fresh)


def _unavailable_message(
    spec: DatasetSpec,
    keys: tuple[str, ...],
    root: str | os.PathLike | None,
    downloaded: bool,
    failures: list[str],
) -> str:
    names = ", ".join(spec.files[k].name for k in keys)
    looked = "\n".join(f"  {label}: {d}" for label, d in search_dirs(spec, root))
    if root is None:
        looked += (
            "\n  (no root given; $AILIB_DATA is not set)"
            if "AILIB_DATA" not in os.environ
            else "\n  (no root given)"
        )
    tried = (
        ("\n".join(failures) if failures else "")
        if downloaded
        else "download=False, so nothing was downloaded"
    )
    return (
        f"{spec.title} is not available: {names} not found.\nLooked in:\n{looked}\n{tried}\n"
        f"To provide the files, download them from {mirrors(spec)[0]} (or any mirror) and put "
        f"them in {cache_dir() / spec.name}, or pass root=DIR (on the command line: --data-root DIR) / set AILIB_DATA=DIR, or point "
        f"${spec.mirrors_env} at a reachable mirror (comma-separated base URLs)."
    )


def load(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    quiet: bool = False,
) -> Arrays:
    """One split ("train" or "test") of dataset ``name`` ("mnist", "fashion-mnist") as
    (images uint8 (N, 28, 28), labels int64 (N,)) on the host; labels outside the dataset's
    classes are refused (`IDXFormatError` naming the file). A bad file in the cache is fetched
    again when ``download`` (module docstring)."""
    if name not in DATASETS or split not in SPLITS:
        raise ValueError(
            f"load: expected a dataset in {sorted(DATASETS)} and a split in {sorted(SPLITS)}, "
            f"received {name!r}, {split!r}"
        )
    spec = DATASETS[name]
    keys = SPLITS[split]
    found = _fetch(spec, keys, root, download, quiet)
    images, labels = (
        _load_or_refetch(spec, k, *found[k], root, refetch=download, quiet=quiet) for k in keys
    )
    return images, labels.astype(np.int64)


def load_mnist(
    root: str | os.PathLike | None = None, *, download: bool = True, quiet: bool = False
) -> tuple[Arrays, Arrays]:
    """MNIST as ``(x_train, y_train), (x_test, y_test)``: uint8 images (N, 28, 28) and int64
    labels (N,), 60,000 + 10,000, on the host. See the module docstring for where the files are
    looked for; ``download=False`` never touches the network; ``quiet`` hides download progress."""
    return (
        load("mnist", "train", root, download=download, quiet=quiet),
        load("mnist", "test", root, download=download, quiet=quiet),
    )


def load_mnist_test(
    root: str | os.PathLike | None = None, *, download: bool = True, quiet: bool = False
) -> Arrays:
    """Only MNIST's 10,000 test digits, ``(x, y)``: needs just the two t10k files, so a directory
    holding only those is enough. Split them with `train_test_split` to train and test on real
    digits without the 60,000-image training files."""
    return load("mnist", "test", root, download=download, quiet=quiet)


def load_fashion_mnist(
    root: str | os.PathLike | None = None, *, download: bool = True, quiet: bool = False
) -> tuple[Arrays, Arrays]:
    """Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``, like `load_mnist`; the class
    names are ``FASHION_MNIST_CLASSES``. Found without a download where Debian's
    ``dataset-fashion-mnist`` package is installed."""
    return (
        load("fashion-mnist", "train", root, download=download, quiet=quiet),
        load("fashion-mnist", "test", root, download=download, quiet=quiet),
    )


FASHION_MNIST_CLASSES = DATASETS["fashion-mnist"].classes
