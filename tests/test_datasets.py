"""Datasets: the IDX format and its corruptions, the search order, verified downloads from a
local HTTP server, and preprocessing."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from ailib import datasets
from ailib.datasets import ChecksumMismatch, DatasetSpec, DatasetUnavailable, IDXFormatError, mnist

from .datasets_helpers import dead_url, gz, serve, tiny_arrays, tiny_dataset, write_tiny
from .hostile import gzip_zeros, peak_memory

MiB = 1 << 20


# -- IDX ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path: Path, name: str, dtype: str) -> None:
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    path = datasets.write_idx(tmp_path / name, array)
    assert path.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")
    back = datasets.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_layout_is_big_endian_with_the_published_header(tmp_path: Path) -> None:
    path = datasets.write_idx(tmp_path / "x.idx", np.array([[1, 2, 3]], dtype=np.int32))
    data = path.read_bytes()
    assert data[:4] == bytes([0, 0, 0x0C, 2])
    assert data[4:12] == (1).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert data[12:] == b"".join(v.to_bytes(4, "big") for v in (1, 2, 3))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1,) * 33, "arrays need 1 to 32 dimensions, received 33"),  # read_idx reads 32
        (
            (2**32, 0),
            r"IDX stores each dimension as a uint32 \(below 2\*\*32\), received shape \(4294967296, 0\)",
        ),
    ],
    ids=["33 dimensions", "a dimension of 2**32"],
)
def test_write_idx_refuses_what_read_idx_could_not_read(
    tmp_path: Path, shape: tuple[int, ...], message: str
) -> None:
    """Before: a file read_idx refuses, or NumPy's bare OverflowError from the header."""
    with pytest.raises(ValueError, match=f"^write_idx: {message}"):
        datasets.write_idx(tmp_path / "a.idx", np.zeros(shape, np.uint8))
    assert not any(tmp_path.iterdir())


def _valid_idx() -> bytes:
    header = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    return header + bytes(range(6))


CORRUPTIONS = {
    "bad magic": lambda b: b"\x01" + b[1:],
    "unknown type": lambda b: b[:2] + b"\x42" + b[3:],
    "zero dimensions": lambda b: b[:3] + b"\x00",
    "too many dimensions": lambda b: b[:3] + b"\x03" + b[4:],
    # consistent sizes, but more axes than NumPy holds (it raised NumPy's own ValueError)
    "255 dimensions of size 1": lambda b: (
        bytes([0, 0, 8, 255]) + (1).to_bytes(4, "big") * 255 + b"\x07"
    ),
    "larger dimension": lambda b: b[:8] + (4).to_bytes(4, "big") + b[12:],
    "truncated data": lambda b: b[:-1],
    "trailing bytes": lambda b: b + b"\x00",
    "truncated header": lambda b: b[:6],
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_idx_is_refused_naming_the_file(
    tmp_path: Path, corruption: str, compress: bool
) -> None:
    data = CORRUPTIONS[corruption](_valid_idx())
    path = tmp_path / f"broken-{corruption.replace(' ', '-')}.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(IDXFormatError, match=path.name):
        datasets.read_idx(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage body", "bad crc"])
def test_broken_gzip_is_refused_naming_the_file(tmp_path: Path, damage: str) -> None:
    good = gzip.compress(_valid_idx())
    data = {
        "truncated": good[: len(good) // 2],
        "garbage body": good[:10] + b"\xff" * 20,
        "bad crc": good[:-8] + bytes(8),
    }[damage]
    path = tmp_path / "images.gz"
    path.write_bytes(data)
    with pytest.raises(IDXFormatError, match="images.gz.*gzip"):
        datasets.read_idx(path)


def _idx_header(dtype_code: int, *dims: int) -> bytes:
    return bytes([0, 0, dtype_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


# name -> (gzip content: header then this many zero bytes, expected shape, the fault)
INFLATING = {
    "a 64 KB .gz inflating to 64 MiB, header says 6 labels": (
        (_idx_header(8, 6), 64 * MiB),
        (6,),
        "has trailing bytes",
    ),
    "header declares 2**40 items": (
        (_idx_header(8, 1 << 20, 1 << 20), 64 * MiB),
        None,
        "declares 1099511627776 bytes of data",
    ),
    "header declares 2**40 items where 6 are expected": (
        (_idx_header(8, 1 << 20, 1 << 20), 64 * MiB),
        (6,),
        r"holds uint8 \(1048576, 1048576\), expected uint8 \(6,\)",
    ),
    "header declares more than the .gz can hold": (
        (_idx_header(8, 1 << 30), 1 << 20),
        None,
        "more than 1[0-9]+ .the limit, or what the compressed file can hold",
    ),
}


@pytest.mark.parametrize("case", list(INFLATING))
def test_inflating_idx_is_refused_from_its_header_in_bounded_memory(
    tmp_path: Path, case: str
) -> None:
    (header, zeros), shape, fault = INFLATING[case]
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip_zeros(zeros, prefix=header))
    assert path.stat().st_size < 100_000
    with peak_memory() as peak, pytest.raises(IDXFormatError, match=fault):
        datasets.read_idx(path, shape=shape)
    assert peak[0] < 2 * MiB, f"peak {peak[0] / MiB:.1f} MiB"


def test_inflating_dataset_file_is_refused_by_load(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_dataset()
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    files = write_tiny(isolated / "root", spec)
    files["test_images"].write_bytes(gzip_zeros(64 * MiB, prefix=_idx_header(8, 6, 28, 28)))
    with peak_memory() as peak, pytest.raises(IDXFormatError, match="t10k-images.*trailing"):
        datasets.load_mnist_test(isolated / "root", download=False)
    assert peak[0] < 2 * MiB, f"peak {peak[0] / MiB:.1f} MiB"


def test_file_with_the_wrong_shape_for_its_role_is_refused(tmp_path: Path) -> None:
    spec = tiny_dataset(checksums=False)
    files = write_tiny(tmp_path, spec)
    with pytest.raises(IDXFormatError, match=r"holds uint8 \(6,\), expected uint8 \(6, 28, 28\)"):
        mnist.load_file(files["test_labels"], spec.files["test_images"])
    with pytest.raises(IDXFormatError, match=r"holds uint8 \(6, 28, 28\), expected uint8 \(8, 28"):
        mnist.load_file(files["test_images"], spec.files["train_images"])


def test_local_file_is_checked_on_its_decompressed_content(tmp_path: Path) -> None:
    spec = tiny_dataset()
    files = write_tiny(tmp_path, spec)
    # recompressed (different .gz bytes, same content, like Debian's copies): accepted
    path = files["test_images"]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=7))
    mnist.load_file(path, spec.files["test_images"])
    # same structure, different pixels: refused by the SHA-256 of the content
    other = datasets.read_idx(path)
    other[0, 0, 0] ^= 1
    datasets.write_idx(path, other)
    with pytest.raises(ChecksumMismatch, match="SHA-256"):
        mnist.load_file(path, spec.files["test_images"])


@pytest.mark.parametrize("label", [10, 255])
def test_labels_outside_the_classes_are_refused_naming_the_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, label: int
) -> None:
    """A labels file with the right header but a label that is no class (the MNIST training
    files have no content hash here): refused on loading, not after a run trained on it."""
    spec = tiny_dataset(checksums=False)
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    files = write_tiny(isolated / "root", spec)
    labels = datasets.read_idx(files["train_labels"])
    labels[3] = label
    datasets.write_idx(files["train_labels"], labels)
    message = (
        f"{files['train_labels']}: labels must lie in \\[0, 9\\] \\(the 10 classes of MNIST\\), "
        f"the file holds labels up to {label}"
    )
    with pytest.raises(IDXFormatError, match=message):
        datasets.load("mnist", "train", isolated / "root", download=False)
    datasets.load("mnist", "test", isolated / "root", download=False)  # the other split is fine


@pytest.mark.parametrize("name, split", [("mnsit", "train"), ("mnist", "validation")])
def test_an_unknown_dataset_or_split_is_named(name: str, split: str) -> None:
    """Before: a bare KeyError."""
    with pytest.raises(
        ValueError,
        match=f"expected a dataset in .*'fashion-mnist'.* and a split "
        f"in \\['test', 'train'\\], received '{name}', '{split}'",
    ):
        datasets.load(name, split, download=False)


# -- where files are found ------------------------------------------------------------------
@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $AILIB_DATA, a private cache, built-in mirrors replaced by a dead one."""
    monkeypatch.delenv("AILIB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", dead_url())
    return tmp_path


def test_cache_honours_xdg_cache_home(isolated: Path) -> None:
    assert datasets.cache_dir() == isolated / "xdg" / "ailib"


def test_search_order_root_env_cache_system(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    places = {p: isolated / p for p in ("root", "env", "system")}
    places["cache"] = datasets.cache_dir() / "mnist"
    spec = tiny_dataset(checksums=False, system_dirs=(str(places["system"]),))
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_DATA", str(places["env"]))
    order = ["root", "env", "cache", "system"]
    for marker, place in enumerate(order):  # each place holds different digits: label = marker
        write_tiny(places[place], spec, fill=marker)
    for marker, place in enumerate(order):
        _, y = datasets.load("mnist", "test", places["root"], download=False)
        assert (y == marker).all(), f"expected the copy in {place}"
        for f in places[place].rglob("*.gz"):
            f.unlink()


def test_uncompressed_files_are_found(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tiny_dataset()
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    for path in write_tiny(isolated / "raw", spec).values():
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    x, y = datasets.load_mnist_test(isolated / "raw", download=False)
    assert x.shape == spec.files["test_images"].shape and y.dtype == np.int64


def test_nothing_local_and_no_download_says_where_it_looked(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(datasets.DATASETS, "mnist", tiny_dataset())
    with pytest.raises(DatasetUnavailable) as info:
        datasets.load_mnist(isolated / "nowhere", download=False)
    message = str(info.value)
    for expected in (
        str(isolated / "nowhere"),
        str(datasets.cache_dir() / "mnist"),
        "AILIB_DATA",
        "AILIB_MNIST_MIRRORS",
        "download=False",
    ):
        assert expected in message


def test_offline_download_failure_is_one_clear_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(datasets.DATASETS, "mnist", tiny_dataset())
    with pytest.raises(DatasetUnavailable, match="could not download") as info:
        datasets.load_mnist(quiet=True)
    assert dead_url() in str(info.value) and "Looked in" in str(info.value)
    assert not [p for p in datasets.cache_dir().rglob("*") if p.is_file()]


def test_the_published_checksums_are_the_built_in_ones() -> None:
    fashion, digits = datasets.DATASETS["fashion-mnist"], datasets.DATASETS["mnist"]
    assert fashion.files["train_images"].md5 == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert digits.files["test_labels"].sha256.startswith("ff7bcfd4")
    assert digits.files["train_images"].sha256 is None  # structure-only check, documented
    assert digits.mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert datasets.FASHION_MNIST_CLASSES[0] == "T-shirt/top" and len(fashion.classes) == 10
    assert "/usr/share/datasets/fashion-mnist" in fashion.system_dirs


# -- preprocessing --------------------------------------------------------------------------
def test_to_float_flatten_one_hot() -> None:
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    f = datasets.to_float(x)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, [[[0, 1], [0.2, 0.4]]], rtol=1e-7)
    assert datasets.flatten(f).shape == (1, 4)
    np.testing.assert_array_equal(datasets.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(TypeError, match="uint8"):
        datasets.to_float(f)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        datasets.one_hot(np.array([3]), 3)


def test_train_test_split_is_seeded_disjoint_and_complete() -> None:
    x, y = np.arange(100).reshape(50, 2), np.arange(50)
    (xa, ya), (xb, yb) = datasets.train_test_split(x, y, test_size=10, seed=3)
    assert len(ya) == 40 and len(yb) == 10
    assert sorted(np.concatenate([ya, yb]).tolist()) == list(range(50))
    np.testing.assert_array_equal(xa[:, 0] // 2, ya)  # rows stay with their labels
    (_, again), _ = datasets.train_test_split(x, y, test_size=10, seed=3)
    (_, other), _ = datasets.train_test_split(x, y, test_size=10, seed=4)
    np.testing.assert_array_equal(again, ya)
    assert not np.array_equal(other, ya)
    assert len(datasets.train_test_split(x, y, test_size=0.3)[1][1]) == 15
    with pytest.raises(ValueError, match="empty"):
        datasets.train_test_split(x, y, test_size=50)


PREPROCESSING_MISTAKES = {
    "one_hot of no labels": (
        lambda: datasets.one_hot(np.array([], dtype=np.int64)),
        ValueError,
        "one_hot: no labels to count the classes from; pass classes=",
    ),
    "one_hot of 0 classes": (
        lambda: datasets.one_hot(np.array([], dtype=np.int64), classes=0),
        ValueError,
        "one_hot: classes must be positive, received 0",
    ),
    "flatten of a scalar": (
        lambda: datasets.flatten(np.float32(3)),
        ValueError,
        r"flatten: expected samples \(N, ...\), received a scalar float32",
    ),
    "a NaN test_size": (
        lambda: datasets.train_test_split(np.zeros(10), np.zeros(10), test_size=float("nan")),
        ValueError,
        r"test_size must be a count \(int\) or a fraction in \(0, 1\), received nan",
    ),
    "a test_size as text": (
        lambda: datasets.train_test_split(np.zeros(10), np.zeros(10), test_size="0.2"),
        TypeError,
        "test_size must be a count .*, received '0.2'",
    ),
}


@pytest.mark.parametrize("case", list(PREPROCESSING_MISTAKES))
def test_preprocessing_mistakes_are_named(case: str) -> None:
    """Before: NumPy's "zero-size array to reduction operation maximum", an IndexError, "cannot
    convert float NaN to integer", "invalid literal for int()"; 0 classes gave a (0, 0) array."""
    call, kind, message = PREPROCESSING_MISTAKES[case]
    with pytest.raises(kind, match=message):
        call()


# -- downloads from a local HTTP server -----------------------------------------------------
@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, list[str], DatasetSpec]]:
    """A local mirror serving the tiny files: (base URL, requested paths, their spec)."""
    spec = tiny_dataset()
    write_tiny(tmp_path / "mirror", spec)
    with serve(tmp_path / "mirror") as (url, requests):
        yield url, requests, spec


def _cached(spec: DatasetSpec) -> list[str]:
    return sorted(p.name for p in (datasets.cache_dir() / spec.name).glob("*") if p.is_file())


def test_download_verifies_and_caches(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    url, requests, spec = mirror
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
    (x, y), (xt, yt) = datasets.load_mnist()
    expected = tiny_arrays()
    np.testing.assert_array_equal(x, expected["train_images"])
    np.testing.assert_array_equal(yt, expected["test_labels"])
    assert _cached(spec) == sorted(f.name for f in spec.files.values())
    assert "downloaded " + url in capsys.readouterr().err  # progress goes to stderr
    # a second load is served from the cache: no new requests
    count = len(requests)
    datasets.load_mnist(quiet=True)
    assert len(requests) == count


def test_quiet_download_prints_nothing(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, spec = mirror
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
    datasets.load_mnist_test(quiet=True)
    assert capsys.readouterr().err == ""


def test_checksum_mismatch_is_refused_and_not_cached(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_dataset()
    write_tiny(tmp_path / "bad", spec, fill=3)  # valid IDX files, other bytes than published
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    with serve(tmp_path / "bad") as (url, _):
        monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
        with pytest.raises(DatasetUnavailable, match="does not match the published"):
            datasets.load_mnist_test(quiet=True)
    cache = datasets.cache_dir() / spec.name
    assert not cache.exists() or not any(cache.iterdir())  # no file, no temporary file


def test_bad_mirror_then_good_mirror(
    isolated: Path, tmp_path: Path, mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _, spec = mirror
    write_tiny(tmp_path / "bad", spec, fill=3)
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    with serve(tmp_path / "bad") as (bad, bad_requests):
        monkeypatch.setenv("AILIB_MNIST_MIRRORS", f"{bad},{good}")
        _, y = datasets.load_mnist_test(quiet=True)
    assert len(bad_requests) == 2  # each file was tried there first, and refused
    np.testing.assert_array_equal(y, tiny_arrays()["test_labels"])


def test_dead_first_mirror_is_skipped_after_it_fails(
    isolated: Path, mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _, spec = mirror
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", f" {dead_url()} , {good}")
    datasets.load_mnist(quiet=True)
    assert len(_cached(spec)) == 4
    dead: set[str] = set()
    target = isolated / "direct"
    with pytest.raises(datasets.DownloadFailed, match="refused|Errno"):
        datasets.download("x.gz", [dead_url()], target, "0" * 32, quiet=True, dead=dead)
    assert dead == {dead_url()}
    with pytest.raises(datasets.DownloadFailed, match="skipped"):
        datasets.download("x.gz", [dead_url()], target, "0" * 32, quiet=True, dead=dead)


def test_http_error_moves_to_the_next_mirror(
    isolated: Path, tmp_path: Path, mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _, spec = mirror
    (tmp_path / "empty").mkdir()
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    with serve(tmp_path / "empty") as (missing, _):
        monkeypatch.setenv("AILIB_MNIST_MIRRORS", f"{missing},{good}")
        datasets.load_mnist_test(quiet=True)
        monkeypatch.setenv("AILIB_MNIST_MIRRORS", missing)
        with pytest.raises(DatasetUnavailable, match="HTTP 404"):
            datasets.load_mnist(quiet=True)


def test_fashion_mirrors_have_their_own_variable(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_dataset("fashion-mnist")
    write_tiny(tmp_path / "fashion", spec)
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", spec)
    with serve(tmp_path / "fashion") as (url, requests):
        monkeypatch.setenv("AILIB_FASHION_MNIST_MIRRORS", url)
        (x, _), _ = datasets.load_fashion_mnist(quiet=True)
    assert len(requests) == 4 and x.shape == (8, 28, 28)


# -- a corrupt file: fetched again where it is ailib's (the cache), refused elsewhere --------
def _flip_last_pixel(gz_bytes: bytes) -> bytes:
    raw = gzip.decompress(gz_bytes)
    return gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1]), mtime=0)


# how a cached t10k-images file is damaged -> the error it gets
CORRUPT_FILES = {
    "other pixels": (_flip_last_pixel, ChecksumMismatch),  # valid IDX: only the SHA-256 tells
    "truncated .gz": (lambda b: b[: len(b) // 2], IDXFormatError),
    "bad gzip CRC": (lambda b: b[:-8] + bytes(8), IDXFormatError),
    "an HTML page": (lambda b: b"<html>Service Unavailable</html>", IDXFormatError),
    "empty": (lambda b: b"", IDXFormatError),
}


def _corrupt(path: Path, case: str) -> bytes:
    damage, _ = CORRUPT_FILES[case]
    path.write_bytes(damage(path.read_bytes()))
    return path.read_bytes()


@pytest.mark.parametrize("case", list(CORRUPT_FILES))
def test_a_corrupt_file_in_the_cache_is_fetched_again(
    case: str,
    isolated: Path,
    tmp_path: Path,
    mirror,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: refused ("delete the file and fetch it again"), though the cache is ailib's."""
    url, requests, spec = mirror
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
    datasets.load_mnist_test(quiet=True)
    cached = datasets.cache_dir() / "mnist" / spec.files["test_images"].name
    _corrupt(cached, case)
    del requests[:]
    x, y = datasets.load_mnist_test()
    np.testing.assert_array_equal(x, tiny_arrays()["test_images"])
    np.testing.assert_array_equal(y, tiny_arrays()["test_labels"])
    assert requests == ["/" + cached.name]  # that file only, once
    assert cached.read_bytes() == (tmp_path / "mirror" / cached.name).read_bytes()
    assert _cached(spec) == sorted(spec.files[k].name for k in ("test_images", "test_labels"))
    report = capsys.readouterr().err
    assert (
        f"{cached}: " in report and "It is in ailib's download cache: fetching it again" in report
    )
    assert f"{cached}: fetched again and verified\n" in report
    assert "delete" not in report  # ailib does it itself


def test_a_corrupt_decompressed_file_in_the_cache_gives_way_to_a_fetched_gz(
    isolated: Path, mirror, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, requests, spec = mirror
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
    name = spec.files["test_labels"].name
    write_tiny(datasets.cache_dir() / "mnist", spec, keys=("test_images",))
    raw = datasets.cache_dir() / "mnist" / name.removesuffix(".gz")
    raw.write_bytes(gzip.decompress(gz(tiny_arrays()["test_labels"]))[:-2])  # truncated
    _, y = datasets.load_mnist_test(quiet=True)
    np.testing.assert_array_equal(y, tiny_arrays()["test_labels"])
    assert requests == ["/" + name] and not raw.exists()
    assert capsys.readouterr().err == ""  # quiet


def test_a_file_fetched_again_that_is_still_bad_is_refused_not_fetched_forever(
    isolated: Path, mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published SHA-256 that no copy has (the mirror's file passes its MD5): one fetch."""
    url, requests, spec = mirror
    images = spec.files["test_images"]
    wrong = replace(spec, files={**spec.files, "test_images": replace(images, sha256="0" * 64)})
    monkeypatch.setitem(datasets.DATASETS, "mnist", wrong)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
    write_tiny(datasets.cache_dir() / "mnist", spec, keys=("test_images", "test_labels"))
    with pytest.raises(ChecksumMismatch, match=f"expected {'0' * 64}"):
        datasets.load_mnist_test(quiet=True)
    assert requests == ["/" + images.name]


def test_a_corrupt_cached_file_is_kept_when_fetching_it_again_fails(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_dataset()
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)  # mirrors: a dead one (isolated)
    files = write_tiny(datasets.cache_dir() / "mnist", spec, keys=("test_images", "test_labels"))
    bad = _corrupt(files["test_images"], "other pixels")
    with pytest.raises(ChecksumMismatch) as info:
        datasets.load_mnist_test(quiet=True)
    message = str(info.value)
    assert str(files["test_images"]) in message and "SHA-256" in message
    assert "Fetching it again failed; the file is kept." in message and dead_url() in message
    assert files["test_images"].read_bytes() == bad


def test_a_corrupt_cached_file_is_refused_without_download(
    isolated: Path, mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "delete the file and fetch it again", not that ailib can fetch it itself."""
    url, requests, spec = mirror
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
    files = write_tiny(datasets.cache_dir() / "mnist", spec, keys=("test_images", "test_labels"))
    bad = _corrupt(files["test_labels"], "truncated .gz")
    with pytest.raises(IDXFormatError) as info:
        datasets.load_mnist_test(download=False)
    assert str(info.value).startswith(f"{files['test_labels']}: not a valid gzip file")
    assert "It is in ailib's download cache: load with download=True to fetch it again" in str(
        info.value
    )
    assert files["test_labels"].read_bytes() == bad and requests == []


@pytest.mark.parametrize("where", ["root", "root/mnist", "$AILIB_DATA", "system", "root = cache"])
@pytest.mark.parametrize("case", list(CORRUPT_FILES))
def test_a_corrupt_file_outside_the_cache_is_refused_and_left_alone(
    case: str, where: str, isolated: Path, mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's files and the system's are never deleted or overwritten, even with a mirror
    at hand; the error names the file (and what was expected where a checksum differs)."""
    url, requests, spec = mirror
    system = isolated / "usr-share"
    spec = replace(spec, system_dirs=(str(system),))
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setenv("AILIB_MNIST_MIRRORS", url)
    root = isolated / "root"
    directory = {
        "root": root,
        "root/mnist": root / "mnist",
        "$AILIB_DATA": isolated / "env",
        "system": system,
        "root = cache": datasets.cache_dir() / "mnist",
    }[where]
    if where == "$AILIB_DATA":
        monkeypatch.setenv("AILIB_DATA", str(directory))
    if where == "root = cache":
        root = directory
    files = write_tiny(directory, spec, keys=("test_images", "test_labels"))
    bad = _corrupt(files["test_images"], case)
    _, error = CORRUPT_FILES[case]
    with pytest.raises(error, match=str(files["test_images"])) as info:
        datasets.load_mnist_test(root, quiet=True)
    if error is ChecksumMismatch:
        assert f"expected {spec.files['test_images'].sha256}" in str(info.value)
    assert files["test_images"].read_bytes() == bad
    assert sorted(p.name for p in directory.iterdir()) == sorted(f.name for f in files.values())
    assert requests == []
