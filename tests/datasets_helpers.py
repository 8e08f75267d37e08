"""Tiny stand-ins for MNIST-like datasets, and a local HTTP server to download them from.

The built-in `DatasetSpec`s carry the published checksums; tests swap in a `tiny_dataset` whose
checksums are those of the tiny files (the seam is the `ailib.datasets.DATASETS` table), so
verification itself is never weakened.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import socketserver
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ailib import datasets
from ailib.datasets import DatasetSpec, FileSpec
from ailib.datasets.idx import idx_bytes

SIZES = {"train": 8, "test": 6}
NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def tiny_arrays(fill: int | None = None, sizes: dict[str, int] = SIZES) -> dict[str, np.ndarray]:
    """Seeded 28x28 uint8 images and labels per file key; with ``fill``, other images and
    labels all ``fill`` (files that are valid but not the published ones)."""
    rng = np.random.default_rng(0 if fill is None else fill + 1)
    arrays = {}
    for split, n in sizes.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10 if fill is None else np.full(n, fill)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    return arrays


def gz(array: np.ndarray) -> bytes:
    return gzip.compress(idx_bytes(array), mtime=0)


def tiny_dataset(
    name: str = "mnist",
    checksums: bool = True,
    system_dirs: tuple[str, ...] = (),
    mirrors: tuple[str, ...] = (),
    sizes: dict[str, int] = SIZES,
) -> DatasetSpec:
    """A copy of the built-in spec ``name`` for `tiny_arrays`: its shapes, and (with
    ``checksums``) the MD5 and size of each .gz and SHA-256 of each decompressed file."""
    files = {}
    for key, array in tiny_arrays(sizes=sizes).items():
        md5 = hashlib.md5(gz(array)).hexdigest() if checksums else "0" * 32
        sha = hashlib.sha256(idx_bytes(array)).hexdigest() if checksums else None
        size = len(gz(array)) if checksums else None
        files[key] = FileSpec(NAMES[key], array.shape, md5, sha, size)
    real = datasets.DATASETS[name]
    return DatasetSpec(
        name,
        real.title,
        files,
        mirrors or (dead_url(),),
        real.mirrors_env,
        real.classes,
        system_dirs,
    )


def write_tiny(
    directory: Path, spec: DatasetSpec, fill: int | None = None, keys: tuple[str, ...] | None = None
) -> dict[str, Path]:
    """Write the tiny files (all, or ``keys``) under their published names into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    sizes = {split: spec.files[f"{split}_labels"].shape[0] for split in ("train", "test")}
    for key, array in tiny_arrays(fill, sizes).items():
        if keys is None or key in keys:
            paths[key] = directory / spec.files[key].name
            paths[key].write_bytes(gz(array))
    return paths


@functools.cache
def dead_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requests.append(self.path)


@contextmanager
def serve(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server for ``directory`` on 127.0.0.1 (port 0) in a thread: (base URL, the list
    of paths requested so far)."""
    requests: list[str] = []
    handler = type("Handler", (_Quiet,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def misbehaving(
    behaviour: Callable[[socket.socket, dict], None],
) -> Iterator[tuple[str, dict]]:
    """A TCP server on 127.0.0.1 (port 0, a thread per connection) that reads each request's
    head and then lets ``behaviour(connection, stats)`` answer however it likes; yields (base
    URL, stats). ``stats["requests"]`` lists the request lines, ``stats["stop"]`` is set when the
    server shuts down (loops in behaviours should end then)."""
    stats: dict = {"requests": [], "sent": 0, "stop": threading.Event()}

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                part = self.request.recv(4096)
                if not part:
                    return
                head += part
            stats["requests"].append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            try:
                behaviour(self.request, stats)
            except OSError:  # the client hung up: what a cut-off looks like from here
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", stats
    finally:
        stats["stop"].set()
        server.shutdown()
        server.server_close()
        thread.join()
