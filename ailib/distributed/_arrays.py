"""What data-parallel training does with arrays, written with array-API operations only:
each rank's share of a global batch, and lists of arrays (gradients, parameters) packed into one
flat buffer per dtype so that a step costs one collective, not one per array.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import array_api_compat
import numpy as np  # host values only (the layout check); the arrays go through their namespace

from ._comm import Communicator


def shard(n_global: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a global batch of ``n_global`` rows that ``rank`` of ``size``
    takes. The first ``n_global % size`` ranks take one row more, so shares differ by at most
    one and cover the batch exactly once; a rank may get no rows (``start == stop``) when the
    batch has fewer rows than there are ranks.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need 0 <= rank < size, got rank={rank}, size={size}")
    if n_global < 0:
        raise ValueError(f"n_global must be >= 0, got {n_global}")
    base, extra = divmod(n_global, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass(frozen=True)
class Layout:
    """Where each array of a packed list lives: ``slots[i] = (buffer, start, stop, shape)``."""

    slots: tuple[tuple[int, int, int, tuple[int, ...]], ...]
    dtypes: tuple[Any, ...]


def pack(arrays: Sequence[Any]) -> tuple[list[Any], Layout]:
    """One flat buffer per dtype holding ``arrays`` (reshape to 1-D, then concat), in order of
    first appearance, and the `Layout` that `unpack` needs. All arrays share a namespace and a
    device. The buffers are new arrays: changing them does not change ``arrays``."""
    if not arrays:
        return [], Layout((), ())
    xp = array_api_compat.array_namespace(*arrays)
    groups: dict[Any, list[Any]] = {}
    filled: dict[Any, int] = {}
    slots = []
    for a in arrays:
        start = filled.get(a.dtype, 0)
        groups.setdefault(a.dtype, []).append(a)
        filled[a.dtype] = start + _size(a)
        slots.append((list(groups).index(a.dtype), start, start + _size(a), tuple(a.shape)))
    buffers = [xp.concat([xp.reshape(m, (-1,)) for m in members]) for members in groups.values()]
    return buffers, Layout(tuple(slots), tuple(groups))


def unpack(buffers: Sequence[Any], layout: Layout) -> list[Any]:
    """The arrays that `pack` packed, read back from ``buffers`` (slices, reshaped): on NumPy,
    CuPy and torch they are views of the buffers."""
    if len(buffers) != len(layout.dtypes):
        raise ValueError(f"layout has {len(layout.dtypes)} buffers, got {len(buffers)}")
    xp = array_api_compat.array_namespace(*buffers) if buffers else None
    return [xp.reshape(buffers[b][start:stop], shape) for b, start, stop, shape in layout.slots]


def allreduce_arrays(comm: Communicator, arrays: Sequence[Any]) -> list[Any]:
    """Σ over ranks of each array, with one packed allreduce per dtype. Returns new arrays
    (views of the packed buffers where the library has views); ``arrays`` are left alone.
    With one process it returns ``arrays`` themselves (nothing to sum, nothing to copy)."""
    if comm.size == 1:
        return list(arrays)
    buffers, layout = pack(arrays)
    return unpack([comm.allreduce_(b) for b in buffers], layout)


def average_gradients(
    comm: Communicator, grads: Sequence[Any], n_local: int, n_global: int
) -> list[Any]:
    """The gradient of the mean loss over the global batch, from each rank's mean gradient.

    Rank r computed ``grads`` = g_r = (1/n_r) Σ_{i in its share} ∇E_i over its n_r =
    ``n_local`` rows; this returns (1/N) Σ_r n_r g_r = (1/N) Σ_i ∇E_i over all N = ``n_global``
    rows, the gradient one process would compute on the whole batch. Each rank scales its packed
    buffer by n_r / N before one allreduce, so uneven shares stay exact (no mean of means). A
    rank with no rows (n_r = 0) contributes zeros, whatever its ``grads`` hold (NaN from a mean
    over nothing, say). Returns new arrays; ``grads`` are left alone. With one process
    (n_r = N) it returns ``grads`` themselves: no copy, no allreduce.
    """
    if not 0 <= n_local <= n_global or n_global == 0:
        raise ValueError(
            f"need 0 <= n_local <= n_global and n_global > 0, got {n_local}, {n_global}"
        )
    if comm.size == 1:
        if n_local != n_global:
            raise ValueError(
                f"one process holds the whole batch, but n_local={n_local} != {n_global}"
            )
        return list(grads)
    buffers, layout = pack(grads)
    share = n_local / n_global
    scaled = [_zeros_like(b) if n_local == 0 else b * share for b in buffers]
    return unpack([comm.allreduce_(b) for b in scaled], layout)


def broadcast_arrays(comm: Communicator, arrays: Sequence[Any], root: int = 0) -> list[Any]:
    """Rank ``root``'s values of ``arrays`` on every rank (one packed broadcast per dtype): how
    rank 0's initial weights reach the others. Every rank passes arrays of the same shapes and
    dtypes (its own model's); if they differ, every rank raises ValueError (checked with two
    small collectives before the broadcast). Returns new arrays (with one process, ``arrays``
    themselves)."""
    if comm.size == 1:
        return list(arrays)
    buffers, layout = pack(arrays)
    _check_same_layout(comm, layout, root)
    return unpack([comm.broadcast_(b, root) for b in buffers], layout)


def _zeros_like(a: Any) -> Any:
    return array_api_compat.array_namespace(a).zeros_like(a)


def _size(a: Any) -> int:
    n = 1
    for d in a.shape:
        n *= d
    return n


def _check_same_layout(comm: Communicator, layout: Layout, root: int) -> None:
    if comm.size == 1:
        return
    described = repr((layout.slots, [str(d) for d in layout.dtypes])).encode()
    count = sum(stop - start for _, start, stop, _ in layout.slots)
    mine = np.asarray([len(layout.slots), count, zlib.crc32(described)], dtype=np.float64)
    theirs = comm.broadcast_(mine.copy(), root)
    same = np.array_equal(mine, theirs)
    flags = comm.allreduce_values([int(r == comm.rank and not same) for r in range(comm.size)])
    ranks = [r for r, flag in enumerate(flags) if flag]  # the same list on every rank
    if ranks:
        this = "" if same else f"; rank {comm.rank}: {int(mine[0])} arrays, {int(mine[1])} values"
        raise ValueError(
            f"broadcast_arrays: {len(ranks)} of {comm.size} ranks hold arrays that differ from "
            f"rank {root}'s in number, shape or dtype (rank {', '.join(map(str, ranks))}; rank "
            f"{root}: {int(theirs[0])} arrays, {int(theirs[1])} values{this}); every rank must "
            "build the same model"
        )
