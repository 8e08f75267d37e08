"""The IDX file format of MNIST and Fashion-MNIST: read (gzip or raw) and write.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the values in C order, big-endian. Reading checks every part of that and the
exact length, so a truncated or corrupt file is refused with an `IDXFormatError` that names the
file, never with a bare NumPy or gzip traceback. The header is checked before the data is
decompressed, and the data is streamed into one array of the declared size, so a small .gz that
inflates to gigabytes costs no more memory than its header declares.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._files import atomic_open, open_regular

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


#: the most decompressed data `read_idx` accepts when no shape is expected (Fashion-MNIST's
#: largest file holds 47 MB)
MAX_BYTES = 1 << 30
#: deflate's largest possible expansion (zlib's technical notes: 1032:1)
MAX_DEFLATE_RATIO = 1032
CHUNK = 1 << 20
#: the most dimensions read (NumPy 1 holds arrays of at most 32; MNIST's files have 1 or 3)
MAX_NDIM = 32


class IDXFormatError(ValueError):
    """A file that is not a valid IDX file (or not a valid gzip of one); the message names it."""


def read_idx(
    path: str | os.PathLike,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: np.dtype | str | None = None,
    max_bytes: int | None = MAX_BYTES,
    digest: Any = None,
) -> np.ndarray:
    """The array in the IDX file ``path`` (gzip-compressed or raw, whatever its name).

    The header (magic number, dimensions) is checked from the first bytes, before the rest is
    decompressed; the data is then read into one array of the declared size, so memory stays
    bounded by what the header declares whatever the file inflates to.

    Args:
        shape, dtype: when given, the array the file must hold (checked from the header).
        max_bytes: the most data a header may declare (None: no limit); a gzip file may also
            declare no more than deflate can produce from its size.
        digest: a `hashlib` object, updated with the whole decompressed content.

    Raises:
        IDXFormatError: bad gzip data, bad magic number, another shape or dtype than expected,
            or a length that does not match the dimensions (truncated or trailing bytes).
    """
    path = Path(path)
    with open_regular(path) as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        size = os.fstat(raw.fileno()).st_size
        if not compressed:
            return _read_stream(raw, str(path), shape, dtype, max_bytes, digest, exact=size)
        limit = size * MAX_DEFLATE_RATIO + 1024
        max_bytes = limit if max_bytes is None else min(max_bytes, limit)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, str(path), shape, dtype, max_bytes, digest)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise IDXFormatError(
                f"{path}: not a valid gzip file ({exc}); delete it and fetch it again"
            ) from exc


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array stored in IDX bytes ``data`` (native byte order); ``name`` is used in errors."""
    return _read_stream(io.BytesIO(data), name, None, None, None, None, exact=len(data))


def _read_stream(
    f: BinaryIO,
    name: str,
    shape: tuple[int, ...] | None,
    dtype: np.dtype | str | None,
    max_bytes: int | None,
    digest: Any,
    exact: int | None = None,
) -> np.ndarray:
    """Read one IDX array from ``f``; ``exact`` is the stream's length when known."""
    head = _read_exact(f, 4, digest)
    if len(head) < 4:
        raise IDXFormatError(f"{name}: {len(head)} bytes is too short for an IDX header")
    if head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES:
        raise IDXFormatError(
            f"{name}: bad IDX magic number {head.hex()} (expected 0000TTNN with type TT in "
            f"{', '.join(f'{t:02x}' for t in IDX_TYPES)})"
        )
    stored, ndim = IDX_TYPES[head[2]], head[3]
    if ndim == 0 or ndim > MAX_NDIM:
        raise IDXFormatError(
            f"{name}: IDX header declares {ndim} dimensions, expected 1 to {MAX_NDIM}"
        )
    dims = _read_exact(f, 4 * ndim, digest)
    header = 4 + 4 * ndim
    if len(dims) < 4 * ndim:
        raise IDXFormatError(f"{name}: truncated IDX header ({4 + len(dims)} of {header} bytes)")
    found = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    native = stored.newbyteorder("=")
    if (shape is not None and found != tuple(shape)) or (
        dtype is not None and native != np.dtype(dtype)
    ):
        raise IDXFormatError(
            f"{name}: holds {native.name} {found}, expected "
            f"{np.dtype(dtype or native).name} {tuple(shape or found)}"
        )
    nbytes = math.prod(found) * stored.itemsize
    if exact is not None and exact != header + nbytes:
        what = "truncated" if exact < header + nbytes else "has trailing bytes"
        raise IDXFormatError(
            f"{name}: {what}: dimensions {found} of {stored.name} need {header + nbytes} "
            f"bytes, the file has {exact}"
        )
    if max_bytes is not None and nbytes > max_bytes:
        raise IDXFormatError(
            f"{name}: the header declares {nbytes} bytes of data ({stored.name} {found}), more "
            f"than {max_bytes} (the limit, or what the compressed file can hold)"
        )
    values = np.empty(nbytes, dtype=np.uint8)
    view, done = memoryview(values), 0
    while done < nbytes:
        n = f.readinto(view[done : done + CHUNK])
        if not n:
            raise IDXFormatError(
                f"{name}: truncated: dimensions {found} of {stored.name} need "
                f"{header + nbytes} bytes, the file has {header + done}"
            )
        if digest is not None:
            digest.update(view[done : done + n])
        done += n
    if f.read(1):  # for gzip, also reaches the end: the CRC and length are checked
        raise IDXFormatError(
            f"{name}: has trailing bytes: dimensions {found} of {stored.name} need "
            f"{header + nbytes} bytes, the file holds more"
        )
    return values.view(stored).reshape(found).astype(native, copy=False)


def _read_exact(f: BinaryIO, n: int, digest: Any) -> bytes:
    """Up to ``n`` bytes of ``f`` (fewer only at its end)."""
    parts, left = [], n
    while left:
        part = f.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    data = b"".join(parts)
    if digest is not None:
        digest.update(data)
    return data


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as IDX bytes."""
    array = np.asarray(array)
    codes = [
        c for c, t in IDX_TYPES.items() if t.newbyteorder(">") == array.dtype.newbyteorder(">")
    ]
    if not codes:
        raise TypeError(f"write_idx: dtype {array.dtype} has no IDX type code")
    code, dtype = codes[0], IDX_TYPES[codes[0]]
    if array.ndim == 0 or array.ndim > MAX_NDIM:  # what read_idx reads back
        raise ValueError(
            f"write_idx: arrays need 1 to {MAX_NDIM} dimensions, received {array.ndim}"
        )
    if max(array.shape) >= 1 << 32:
        raise ValueError(
            f"write_idx: IDX stores each dimension as a uint32 (below 2**32), received shape "
            f"{array.shape}"
        )
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
