"""The IDX file format of MNIST and Fashion-MNIST: read (gzip or raw) and write.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the values in C order, big-endian. Reading checks every part of that and the
exact file length, so a truncated or corrupt file is refused with an `IDXFormatError` that names
the file, never with a bare NumPy or gzip traceback.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .._files import atomic_open

#: IDX type byte -> big-endian dtype
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file that is not a valid IDX file (or not a valid gzip of one); the message names it."""


def read_bytes(path: str | os.PathLike) -> bytes:
    """The decompressed content of ``path``: gunzipped when it starts with the gzip magic
    number (whatever its name), as is otherwise."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise IDXFormatError(
            f"{path}: not a valid gzip file ({exc}); delete it and fetch it again"
        ) from exc


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array stored in IDX bytes ``data`` (native byte order); ``name`` is used in errors."""
    if len(data) < 4:
        raise IDXFormatError(f"{name}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise IDXFormatError(
            f"{name}: bad IDX magic number {data[:4].hex()} (expected 0000TTNN with type TT in "
            f"{', '.join(f'{t:02x}' for t in IDX_TYPES)})"
        )
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    if ndim == 0:
        raise IDXFormatError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{name}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IDXFormatError(
            f"{name}: {what}: dimensions {shape} of {dtype.name} need {expected} bytes, the "
            f"file has {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header)
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in the IDX file ``path`` (gzip-compressed or raw).

    Raises:
        IDXFormatError: bad gzip data, bad magic number, or a length that does not match the
            dimensions (truncated or trailing bytes).
    """
    return parse_idx(read_bytes(path), str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as IDX bytes."""
    array = np.asarray(array)
    codes = [
        c for c, t in IDX_TYPES.items() if t.newbyteorder(">") == array.dtype.newbyteorder(">")
    ]
    if not codes:
        raise TypeError(f"write_idx: dtype {array.dtype} has no IDX type code")
    code, dtype = codes[0], IDX_TYPES[codes[0]]
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx: arrays need 1 to 255 dimensions, received {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``compress`` (default: when the name
    ends in ``.gz``). The file appears atomically (temporary file + rename)."""
    path = Path(path)
    compress = path.suffix == ".gz" if compress is None else compress
    data = idx_bytes(array)
    if compress:
        data = gzip.compress(data, mtime=0)
    with atomic_open(path) as f:
        f.write(data)
    return path
