"""Sliding windows over the last two axes, built from standard operations only (docs/math.md §7-§8).

`windows` cuts an image into its kh·kw shifted, strided views (the "im2col" pieces); `fold` is
its adjoint: it adds per-offset pieces back into an image. Both use slicing, `concat` and
`stack` only: no `pad` (not in the standard) and no scatter-assignment (JAX arrays are immutable,
CuPy scatter with repeated indices is undefined).
"""

from __future__ import annotations

from typing import Any, Sequence


def pair(value: int | Sequence[int], what: str, who: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as (rows, cols): an int is used for both; raises ValueError naming the layer."""
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and v >= minimum for v in values):
        raise ValueError(
            f"{who}: {what} must be an int >= {minimum} or a pair of them, received {value!r}"
        )
    return int(values[0]), int(values[1])


def output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Number of window positions along one axis: ⌊(size + 2·padding − kernel) / stride⌋ + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def pad_edges(xp: Any, device: Any, x: Any, top: int, bottom: int, left: int, right: int) -> Any:
    """``x`` with zero rows/columns added around its last two axes (by concatenation)."""

    def zeros(shape: tuple[int, ...]) -> Any:
        return xp.zeros(shape, dtype=x.dtype, device=device)

    if left or right:
        head = tuple(x.shape[:-1])
        parts = (
            ([zeros((*head, left))] if left else [])
            + [x]
            + ([zeros((*head, right))] if right else [])
        )
        x = xp.concat(parts, axis=-1)
    if top or bottom:
        head, width = tuple(x.shape[:-2]), x.shape[-1]
        parts = (
            ([zeros((*head, top, width))] if top else [])
            + [x]
            + ([zeros((*head, bottom, width))] if bottom else [])
        )
        x = xp.concat(parts, axis=-2)
    return x


def windows(
    x: Any, kernel: tuple[int, int], stride: tuple[int, int], out: tuple[int, int]
) -> list[Any]:
    """The kh·kw pieces P[i·kw + j] = x[..., i + s_h·a, j + s_w·b] for a < out_h, b < out_w.

    Each piece has shape (..., out_h, out_w); piece (i, j) holds, for every output position, the
    input entry at window offset (i, j). Strided slices: views on NumPy, CuPy and PyTorch.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out
    return [
        x[..., i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]


def fold(
    xp: Any,
    device: Any,
    pieces: Sequence[Any],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    size: tuple[int, int],
) -> Any:
    """The adjoint of `windows`: Σᵢⱼ Pᵢⱼ placed at rows i + s_h·a and columns j + s_w·b.

    Returns an array of shape (..., H, W) = (..., *size); positions no window covers are 0.

    Without scatter, the sum is built by phases (docs/math.md §7): a row h = i + s·a with offset
    i = q·s + r lands at coarse row c = a + q of phase r = h mod s. Within a phase, the pieces
    are shifted by q on the coarse grid (zero-padding by concatenation) and added; the s_h·s_w
    phase images are then interleaved by stacking on a new last axis and reshaping. Stride 1 is
    one phase (a plain sum of shifted pieces); non-overlapping windows (kernel <= stride) are one
    piece per phase (a pure interleave).
    """
    (kh, kw), (sh, sw), (height, width) = kernel, stride, size
    oh, ow = pieces[0].shape[-2:]
    qh, qw = -(-kh // sh), -(-kw // sw)  # offsets per phase, rounded up
    ch, cw = oh + qh - 1, ow + qw - 1  # the coarse grid
    lead = tuple(pieces[0].shape[:-2])

    def phase(rh: int, rw: int) -> Any:
        total = None
        for i in range(rh, kh, sh):
            row = None
            for j in range(rw, kw, sw):
                shifted = pad_edges(xp, device, pieces[i * kw + j], 0, 0, j // sw, qw - 1 - j // sw)
                row = shifted if row is None else row + shifted
            if row is None:
                continue
            shifted = pad_edges(xp, device, row, i // sh, qh - 1 - i // sh, 0, 0)
            total = shifted if total is None else total + shifted
        if total is None:  # no window offset falls in this phase (kernel < stride)
            total = xp.zeros((*lead, ch, cw), dtype=pieces[0].dtype, device=device)
        return total

    def interleave(parts: list[Any], axis: int) -> Any:
        if len(parts) == 1:
            return parts[0]
        stacked = xp.stack(parts, axis=axis)  # the phase axis lands right after ``axis``
        shape = list(parts[0].shape)
        shape[axis] *= len(parts)
        return xp.reshape(stacked, tuple(shape))

    rows = [interleave([phase(rh, rw) for rw in range(sw)], -1) for rh in range(sh)]
    image = interleave(rows, -2)
    # NOTE: crop only when too large: a slice stop beyond the axis is outside the standard
    image = image[..., : min(height, image.shape[-2]), : min(width, image.shape[-1])]
    return pad_edges(xp, device, image, 0, height - image.shape[-2], 0, width - image.shape[-1])
