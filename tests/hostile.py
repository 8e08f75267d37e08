"""Crafting hostile files on the fly: .npy members with any header, zip archives whose directory
lies about sizes, model configs of any shape, gzip streams that inflate far beyond their size."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def npy_header(shape: tuple[int, ...], descr: str = "<f4", fortran: bool = False) -> bytes:
    """The .npy (version 1.0) header of an array of ``shape`` and ``descr``, without data."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    )
    return f.getvalue()


def npy(array: np.ndarray) -> bytes:
    """``array`` as .npy bytes (object arrays as NumPy pickles them)."""
    f = io.BytesIO()
    np.save(f, array, allow_pickle=True)
    return f.getvalue()


def config_npy(config: Any) -> bytes:
    """A config (any JSON value, or raw text) as the uint8 .npy member ailib stores."""
    text = config if isinstance(config, str) else json.dumps(config)
    return npy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))


def dense_config(n_in: int, n_out: int, shapes: dict[str, list[int]] | None = None) -> dict:
    """The config of a model holding one Dense(n_in, n_out), listing ``shapes`` (default: the
    true ones)."""
    shapes = shapes or {"W": [n_out, n_in], "b": [n_out]}
    return {
        "format": "ailib.model",
        "version": 1,
        "dtype": "float32",
        "layers": [
            {
                "class": "Dense",
                "config": {"in_features": n_in, "out_features": n_out},
                "params": {k: {"shape": v, "dtype": "float32"} for k, v in shapes.items()},
                "buffers": {},
            }
        ],
    }


def write_zip(
    path: Path,
    members: dict[str, bytes],
    *,
    compression: int = zipfile.ZIP_STORED,
    claims: dict[str, int] | None = None,
    stored_claims: dict[str, int] | None = None,
    versions: dict[str, int] | None = None,
) -> Path:
    """A zip of ``members``; the directory and the local headers of some members lie:
    ``claims`` overwrites the uncompressed size they state, ``stored_claims`` the compressed
    (stored) size, ``versions`` the zip version needed to extract (x 10, e.g. 64 for 6.4)."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    data = bytearray(path.read_bytes())
    # (what, its offset in a local header, in a central directory entry, struct format)
    for lies, local, central, fmt in (
        (claims, 22, 24, "<I"),
        (stored_claims, 18, 20, "<I"),
        (versions, 4, 6, "<H"),
    ):
        for name, value in (lies or {}).items():
            _patch(data, name.encode(), b"PK\x03\x04", 26, 30, local, fmt, value)
            _patch(data, name.encode(), b"PK\x01\x02", 28, 46, central, fmt, value)
    path.write_bytes(bytes(data))
    return path


def _patch(
    data: bytearray,
    name: bytes,
    sig: bytes,
    name_len: int,
    name_at: int,
    at: int,
    fmt: str,
    value: int,
) -> None:
    """Set the field at offset ``at`` of every header with signature ``sig`` naming ``name``."""
    start = data.find(sig)
    while start >= 0:
        n = struct.unpack_from("<H", data, start + name_len)[0]
        if data[start + name_at : start + name_at + n] == name:
            struct.pack_into(fmt, data, start + at, value)
        start = data.find(sig, start + 4)


def gzip_zeros(size: int, prefix: bytes = b"") -> bytes:
    """A gzip file of ``prefix`` then ``size`` zero bytes (about size/1000 bytes)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(prefix)]
    block = bytes(1 << 20)
    for start in range(0, size, len(block)):
        out.append(z.compress(block[: min(len(block), size - start)]))
    out.append(z.flush())
    return b"".join(out)


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The peak bytes Python and NumPy allocated inside the block (tracemalloc), as ``[peak]``."""
    result = [0]
    tracemalloc.start()
    try:
        yield result
    finally:
        result[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
