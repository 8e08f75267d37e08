"""A counter-based random generator in the array API standard's int32 operations.

Draw number ``counter`` of the stream ``key`` is computed, not stored: the host turns
(key, counter) into two 32-bit words with SplitMix64 (Python integers, no arrays), and the device
turns entry i of the draw into 32 random bits with two rounds of the "lowbias32" integer hash
(C. Wellons, hash-prospector):

    u_i = h(h(i + k₁) ⊕ k₂),   h(x) = x ⊕ (x ≫ 16); x·0x7feb352d; x ⊕ (x ≫ 15); x·0x846ca68b; x ⊕ (x ≫ 16)

all modulo 2³². Every step is an integer operation of the standard (``arange``, ``+``, ``*``,
``^``, ``>>``, ``&``, ``<``) on int32 arrays, so every backend computes the same bits from the
same (key, counter): no generator object lives on the device, nothing crosses the bus per draw,
and a stream's whole state is the two integers (key, counter).

int32 rather than uint32 because PyTorch lacks shifts and additions on uint32. The hash needs
two things of int32 arithmetic that the standard leaves to the library and that NumPy, CuPy,
PyTorch, JAX and array-api-strict all do (tests/test_random.py checks it against a pure-Python
reference): multiplication and addition wrap around modulo 2³², and ``>>`` shifts the sign bit
in (so a logical shift is ``(x >> k) & (2**(32 - k) - 1)``).
"""

from __future__ import annotations

import math
from typing import Any

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
GOLDEN64 = 0x9E3779B97F4A7C15
#: lowbias32's multipliers, as the int32 values with the same bits
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B - 2**32


def mix64(x: int) -> int:
    """SplitMix64's finaliser (Stafford's variant 13) on a Python int, modulo 2⁶⁴."""
    x &= MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def draw_words(key: int, counter: int) -> tuple[int, int]:
    """The two 32-bit words (k₁, k₂) that key draw number ``counter`` of stream ``key``: the
    ``counter``-th output of a SplitMix64 sequence started at mix64(key)."""
    z = mix64(mix64(key) + (counter + 1) * GOLDEN64)
    return z & MASK32, z >> 32


def _signed(word: int) -> int:
    """A 32-bit word as the int32 value with the same bits (Python scalars must fit the dtype)."""
    return word - 2**32 if word >= 2**31 else word


def _shr(x: Any, k: int) -> Any:
    """Logical right shift of int32 bit patterns (a new array)."""
    t = x >> k
    t &= (1 << (32 - k)) - 1
    return t


def _mix32(x: Any) -> Any:
    """lowbias32 on int32 arrays. Augmented assignments work in place where arrays are mutable
    and rebind on JAX; ``x`` is always a fresh array of ours."""
    x ^= _shr(x, 16)
    x *= MUL1
    x ^= _shr(x, 15)
    x *= MUL2
    x ^= _shr(x, 16)
    return x


def bits(xp: Any, device: Any, key: int, counter: int, n: int) -> Any:
    """u₀ … u_{n−1} of draw ``counter`` of stream ``key``: an int32 array of shape (n,) whose
    bit patterns are the 32-bit hashes above."""
    k1, k2 = draw_words(key, counter)
    u = xp.arange(n, dtype=xp.int32, device=device)
    u += _signed(k1)
    u = _mix32(u)
    u ^= _signed(k2)
    return _mix32(u)


def bernoulli(
    xp: Any, device: Any, key: int, counter: int, shape: tuple[int, ...], keep: float, dtype: Any
) -> Any:
    """A {0, 1} array of ``shape`` and ``dtype``: entry i is 1 when the top 31 bits of u_i,
    read as an integer in [0, 2³¹), are below round(keep·2³¹), so P(1) = keep to within 2⁻³¹."""
    n = math.prod(shape)
    threshold = round(keep * 2**31)
    if threshold >= 2**31 or threshold <= 0:
        make = xp.ones if threshold > 0 else xp.zeros
        return make(shape, dtype=dtype, device=device)
    u = bits(xp, device, key, counter, n)
    return xp.reshape(xp.astype(_shr(u, 1) < threshold, dtype), shape)
