"""Sliding windows over the last two axes, built from standard operations only (docs/math.md §7-§8).

`windows` cuts an image into its kh·kw shifted, strided views (the "im2col" pieces); `fold` is
its adjoint: it adds per-offset pieces back into an image. Both use slicing, `concat` and
`stack` only: no `pad` (not in the standard) and no scatter-assignment (JAX arrays are immutable,
CuPy scatter with repeated indices is undefined).
"""

from __future__ import annotations

from typing import Any, Sequence

from .._checks import whole


def pair(value: int | Sequence[int], what: str, who: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as (rows, cols): an int is used for both; raises ValueError naming the layer
    for anything else (a float, a bool, a string, a sequence of another length). NumPy integers
    count as ints."""
    if whole(value) is not None:
        values: tuple[Any, ...] = (value, value)
    elif isinstance(value, (list, tuple)):
        values = tuple(value)
    else:
        values = ()
    ints = [whole(v) for v in values]
    if len(ints) != 2 or not all(v is not None and v >= minimum for v in ints):
        raise ValueError(
            f"{who}: {what} must be an int >= {minimum} or a pair of them, received {value!r}"
        )
    return ints[0], ints[1]  # type: ignore[return-value]


def output_size(
    size: int,
    kernel: int,
    stride: int,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Number of window positions along one axis: ⌊(size + 2·padding − span) / stride⌋ + 1, with
    span = dilation·(kernel − 1) + 1 the extent of a dilated window.

    ``ceil_mode`` (PyTorch's pooling rule): ⌈…⌉ instead of ⌊…⌋, so a last window that overhangs
    the padded input is kept, except where it would start in the right padding
    ((out − 1)·stride >= size + padding): then there is one window fewer."""
    span = dilation * (kernel - 1) + 1
    if not ceil_mode:
        return (size + 2 * padding - span) // stride + 1
    out = -(-(size + 2 * padding - span) // stride) + 1
    return out - 1 if (out - 1) * stride >= size + padding else out


def pad_edges(
    xp: Any,
    device: Any,
    x: Any,
    top: int,
    bottom: int,
    left: int,
    right: int,
    value: float = 0.0,
) -> Any:
    """``x`` with rows/columns of ``value`` (zeros by default) added around its last two axes
    (by concatenation)."""

    def fill(shape: tuple[int, ...]) -> Any:
        if value == 0.0:
            return xp.zeros(shape, dtype=x.dtype, device=device)
        return xp.full(shape, value, dtype=x.dtype, device=device)

    if left or right:
        head = tuple(x.shape[:-1])
        parts = (
            ([fill((*head, left))] if left else [])
            + [x]
            + ([fill((*head, right))] if right else [])
        )
        x = xp.concat(parts, axis=-1)
    if top or bottom:
        head, width = tuple(x.shape[:-2]), x.shape[-1]
        parts = (
            ([fill((*head, top, width))] if top else [])
            + [x]
            + ([fill((*head, bottom, width))] if bottom else [])
        )
        x = xp.concat(parts, axis=-2)
    return x


def windows(
    x: Any,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    out: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> list[Any]:
    """The kh·kw pieces P[i·kw + j] = x[..., d_h·i + s_h·a, d_w·j + s_w·b] for a < out_h,
    b < out_w.

    Each piece has shape (..., out_h, out_w); piece (i, j) holds, for every output position, the
    input entry at window offset (d_h·i, d_w·j) (dilation d spreads the kernel's taps d apart).
    Strided slices: views on NumPy, CuPy and PyTorch.
    """
    (kh, kw), (sh, sw), (oh, ow), (dh, dw) = kernel, stride, out, dilation
    return [
        x[..., dh * i : dh * i + sh * (oh - 1) + 1 : sh, dw * j : dw * j + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]


def place(
    xp: Any, device: Any, parts: Sequence[Any], offsets: Sequence[int], size: int, axis: int
) -> Any:
    """Σₖ partsₖ shifted along ``axis`` (-1 or -2) to start at ``offsets[k]``, in an axis of
    ``size``: out[t] = Σₖ partsₖ[t − offsetsₖ] over the k where that index exists, 0 where none
    does (offsets may be negative, and parts may run past ``size``: what falls outside is cut).

    Built segment by segment: [0, size) is cut wherever a part starts or ends, each segment is
    the sum of the slices of the parts that cover it (in the parts' order; zeros where none
    does), and the segments are concatenated. Each part is read once and no shifted copy of
    it is made."""
    length = [part.shape[axis] for part in parts]
    cuts = sorted(
        {0, size}
        | {min(max(o, 0), size) for o in offsets}
        | {min(max(o + n, 0), size) for o, n in zip(offsets, length)}
    )

    def cut(part: Any, start: int, stop: int) -> Any:
        return part[..., start:stop, :] if axis == -2 else part[..., start:stop]

    segments = []
    for start, stop in zip(cuts[:-1], cuts[1:]):
        views = [
            cut(part, start - o, stop - o)
            for part, o, n in zip(parts, offsets, length)
            if o <= start and stop <= o + n
        ]
        if not views:
            shape = list(parts[0].shape)
            shape[axis] = stop - start
            segments.append(xp.zeros(tuple(shape), dtype=parts[0].dtype, device=device))
            continue
        total = views[0] if len(views) == 1 else views[0] + views[1]
        for view in views[2:]:
            total += view  # NOTE: ours since the line above (JAX rebinds the name)
        segments.append(total)
    return segments[0] if len(segments) == 1 else xp.concat(segments, axis=axis)


def fold(
    xp: Any,
    device: Any,
    pieces: Sequence[Any],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    size: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    crop: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Any:
    """The adjoint of `windows`: Σᵢⱼ Pᵢⱼ placed at rows d_h·i + s_h·a and columns d_w·j + s_w·b
    of an image of shape (..., H, W) = (..., *size), less ``crop`` = (top, bottom, left, right)
    rows and columns at its edges (the padding of the image the windows were cut from).

    Returns (..., H − top − bottom, W − left − right); positions no window covers are 0.

    Without scatter, the sum is built by phases (docs/math.md §7): a row h = o + s·a read at
    offset o = d·i = q·s + r lands at coarse row c = a + q of phase r = h mod s. Within a phase,
    the pieces are shifted by q on the coarse grid and added (`place`: first the pieces of
    each column offset j down the rows, whole rows at a time, then those sums across the
    columns); the s_h·s_w phase images are then interleaved by stacking on a new last axis and
    reshaping. Stride 1 is one phase (a plain sum of shifted pieces, the crop taken by `place`
    itself); non-overlapping windows (kernel <= stride, no dilation) are one piece per phase (a
    pure interleave).
    """
    (kh, kw), (sh, sw), (height, width), (dh, dw) = kernel, stride, size, dilation
    top, bottom, left, right = crop
    oh, ow = pieces[0].shape[-2:]
    qh, qw = dh * (kh - 1) // sh + 1, dw * (kw - 1) // sw + 1  # shifts per phase
    # the grid of a phase: coarse (cropped after the interleave) or, at stride 1, the result
    row_shift, rows_out = (top, height - top - bottom) if sh == 1 else (0, oh + qh - 1)
    col_shift, cols_out = (left, width - left - right) if sw == 1 else (0, ow + qw - 1)
    lead = tuple(pieces[0].shape[:-2])

    def phase(rh: int, rw: int) -> Any:
        rows = [i for i in range(kh) if dh * i % sh == rh]
        cols = [j for j in range(kw) if dw * j % sw == rw]
        if not (rows and cols):  # no window offset falls in this phase
            return xp.zeros((*lead, rows_out, cols_out), dtype=pieces[0].dtype, device=device)
        shifts = [dh * i // sh - row_shift for i in rows]
        columns = [
            place(xp, device, [pieces[i * kw + j] for i in rows], shifts, rows_out, -2)
            for j in cols
        ]
        return place(xp, device, columns, [dw * j // sw - col_shift for j in cols], cols_out, -1)

    def interleave(parts: list[Any], axis: int) -> Any:
        if len(parts) == 1:
            return parts[0]
        stacked = xp.stack(parts, axis=axis)  # the phase axis lands right after ``axis``
        shape = list(parts[0].shape)
        shape[axis] *= len(parts)
        return xp.reshape(stacked, tuple(shape))

    image = interleave(
        [interleave([phase(rh, rw) for rw in range(sw)], -1) for rh in range(sh)], -2
    )
    # the strided axes: the coarse grid interleaved may end short of the image or past it
    # NOTE: crop only when too large: a slice stop beyond the axis is outside the standard
    if sh > 1:
        image = image[..., : min(height, image.shape[-2]), :]
        image = pad_edges(xp, device, image, 0, height - image.shape[-2], 0, 0)
        image = image[..., top : height - bottom, :] if top or bottom else image
    if sw > 1:
        image = image[..., : min(width, image.shape[-1])]
        image = pad_edges(xp, device, image, 0, 0, 0, width - image.shape[-1])
        image = image[..., left : width - right] if left or right else image
    return image
