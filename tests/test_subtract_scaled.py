"""`ailib.backends.subtract_scaled`, every optimizer's W ← W − lr·D: NumPy's one-pass BLAS axpy
for arrays of at least `_blas.MIN_SIZE` elements (in place, each element within the last bit of
``p - lr * d``), NumPy's two passes for smaller ones and for memory BLAS cannot take, and the
other backends' ``p -= lr * d``."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import ailib
from ailib import zoo
from ailib.backends import _blas, subtract_scaled

from .helpers import host


def _once_or_twice(p, lr, d, got=None):
    """Per element: the exactly rounded p − lr·d, and NumPy's p − fl(lr·d). The first is
    computed in a wider type (rounded twice: it may miss by one ulp, rarely) and, where it
    differs from both ``got`` and NumPy's, again with exact fractions."""
    lr = p.dtype.type(lr)
    wide = np.float64 if p.dtype == np.float32 else np.longdouble
    once = (p.astype(wide) - wide(lr) * d.astype(wide)).astype(p.dtype)
    twice = p - lr * d
    if got is not None:
        for i in np.flatnonzero((got != once) & (got != twice)):
            exact = Fraction(float(p.flat[i])) - Fraction(float(lr)) * Fraction(float(d.flat[i]))
            once.flat[i] = _nearest(exact, p.dtype)
    return once, twice


def _nearest(x, dtype):
    """The float of ``dtype`` nearest the fraction ``x`` (ties to even)."""
    lo = dtype.type(float(x))  # float(Fraction) is correctly rounded to float64
    if dtype == np.float64:
        return lo
    candidates = [np.nextafter(lo, dtype.type(-np.inf)), lo, np.nextafter(lo, dtype.type(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - x), int(c.view(np.int32)) & 1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1,), (37,), (64, 33), (3, 5, 7), (256, 129), (40000,)])
def test_numpy_update_is_in_place_and_within_the_last_bit(dtype, shape, rng):
    p = rng.standard_normal(shape).astype(dtype)
    d = rng.standard_normal(shape).astype(dtype)
    original = p.copy()
    before = p.__array_interface__["data"][0]
    got = subtract_scaled(p, 0.0123, d)
    once, twice = _once_or_twice(original, 0.0123, d, got)
    assert got is p and p.__array_interface__["data"][0] == before
    assert np.all((got == once) | (got == twice))
    if _blas.available() and p.size >= _blas.MIN_SIZE:
        differs = once != twice  # where the fused loop shows: most of these are rounded once
        assert np.count_nonzero(got[differs] == once[differs]) > np.count_nonzero(differs) // 2
    elif p.size < _blas.MIN_SIZE:
        np.testing.assert_array_equal(got, twice)  # small: NumPy's two passes, one call less


def test_blas_is_used_from_min_size_on(rng):
    if not _blas.available():
        pytest.skip("no BLAS axpy found in NumPy's libraries here")
    for size, fused in ((_blas.MIN_SIZE - 1, False), (_blas.MIN_SIZE, True)):
        p = rng.standard_normal(size).astype(np.float32)
        d = rng.standard_normal(size).astype(np.float32)
        once, twice = _once_or_twice(p, 0.0123, d)
        got = subtract_scaled(p, 0.0123, d)
        differs = np.count_nonzero(once != twice)  # elements whose two roundings differ
        assert differs > 100
        matches_once = np.count_nonzero((got == once) & (once != twice))
        assert bool(matches_once > differs // 2) is fused


def test_lr_as_a_zero_d_array_gives_the_same(rng):
    p = rng.standard_normal((40, 9)).astype(np.float32)
    d = rng.standard_normal((40, 9)).astype(np.float32)
    a, b = p.copy(), p.copy()
    subtract_scaled(a, 0.05, d)
    subtract_scaled(b, np.asarray(0.05, dtype=np.float32), d)
    np.testing.assert_array_equal(a, b)


def test_memory_blas_cannot_take_is_computed_by_numpy(rng):
    base = rng.standard_normal((30, 20)).astype(np.float32)
    d = rng.standard_normal((20, 30)).astype(np.float32)
    p = base.T  # not C-contiguous
    expected = p - np.float32(0.5) * d
    subtract_scaled(p, 0.5, d)
    np.testing.assert_array_equal(p, expected)
    q = rng.standard_normal(50).astype(np.float32)
    expected = q - np.float32(0.25) * q
    subtract_scaled(q, 0.25, q)  # the step is the parameter itself: overlapping memory
    np.testing.assert_array_equal(q, expected)
    frozen = rng.standard_normal(8).astype(np.float32)
    g = rng.standard_normal(8).astype(np.float32)
    g.flags.writeable = False  # read-only gradient: still an input BLAS may read
    expected = frozen - np.float32(0.1) * g
    subtract_scaled(frozen, 0.1, g)
    np.testing.assert_array_equal(frozen, expected)


def test_other_backends_compute_p_minus_lr_d(backend, rng):
    p = rng.standard_normal((6, 5)).astype(np.float32)
    d = rng.standard_normal((6, 5)).astype(np.float32)
    once, twice = _once_or_twice(p, 0.3, d)  # first: NumPy's asarray keeps p's memory
    got = subtract_scaled(backend.asarray(p), 0.3, backend.asarray(d))
    assert np.all((host(got) == once) | (host(got) == twice))


def test_sgd_agrees_with_pytorch_sgd_to_the_last_bit(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((256, 130)).astype(np.float32)  # >= MIN_SIZE: BLAS's fused loop
    g = rng.standard_normal((256, 130)).astype(np.float32)
    layer = ailib.layers.Dense(130, 256)
    layer.params["W"] = w.copy()
    layer.grads["W"] = g.copy()
    opt = ailib.optimizers.SGD(lr=0.07)
    opt.step([layer])
    param = torch.nn.Parameter(torch.from_numpy(w.copy()))
    param.grad = torch.from_numpy(g.copy())
    torch.optim.SGD([param], lr=0.07).step()
    ours, theirs = layer.params["W"], param.detach().numpy()
    np.testing.assert_array_max_ulp(ours, theirs, maxulp=1)
    if _blas.available():  # closer to PyTorch's (fused) update than NumPy's two passes are
        twice = w - np.float32(0.07) * g
        assert np.count_nonzero(ours == theirs) > np.count_nonzero(twice == theirs)


def test_a_compiled_numpy_step_records_it_as_one_operation(rng):
    model = ailib.Sequential(zoo.mlp(12, (8,), 3), seed=0)
    x = rng.standard_normal((40, 12)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    opt = ailib.optimizers.SGD(0.1, momentum=0.9)
    model.fit(x, y, optimizer=opt, batch_size=10, verbose=False)
    model.fit(x, y, optimizer=opt, batch_size=10, verbose=False)
    from ailib import compiling

    steps = compiling._STEPS[model]
    source = steps[0][2].compiled.source()
    assert source.count("subtract_scaled") == 4  # W and b of two Dense layers
    assert "subtract(" not in source.replace("subtract_scaled", "")


def test_the_rounding_does_not_depend_on_the_steps_layout(rng):
    p = rng.standard_normal((330, 170)).astype(np.float32)  # >= MIN_SIZE: BLAS's path
    d = rng.standard_normal((330, 170)).astype(np.float32)
    a, b, c = p.copy(), p.copy(), p.copy()
    subtract_scaled(a, 0.03, d)
    subtract_scaled(b, 0.03, np.asfortranarray(d))
    subtract_scaled(c, 0.03, d[:, ::-1].copy()[:, ::-1])  # a reversed view of a copy
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_an_update_site_of_a_replay_computes_what_subtract_scaled_computes(rng):
    """`_blas.UpdateSite` decides once per pair of arrays what `subtract_scaled` decides per
    call: through BLAS, through NumPy's two passes, or (memory BLAS cannot take) as
    `subtract_scaled` itself; over several calls and a new pair, the same bits."""
    n = _blas.MIN_SIZE
    data = rng.standard_normal(3 * n)
    cases = {  # (p, d) as views of one fresh array: made twice, for the site and for the check
        "blas": lambda a: (a[:n], a[n : 2 * n]),
        "small": lambda a: (a[:100], a[100:200]),
        "strided d": lambda a: (a[:n], a[n : 3 * n : 2]),
        "shared": lambda a: (a[:n], a[5 : n + 5]),  # overlapping memory: d copied first
    }
    for name, make in cases.items():
        for dtype in (np.float32, np.float64):
            mine, theirs = data.astype(dtype), data.astype(dtype)
            (p, d), (q, e) = make(mine), make(theirs)
            site = _blas.UpdateSite()
            for lr in (0.1, np.asarray(0.25, dtype=dtype), 0.5):
                assert site(p, lr, d) is p
                subtract_scaled(q, lr, e)
                np.testing.assert_array_equal(mine, theirs, err_msg=f"{name} {dtype}")
    # a new pair at the same site is decided afresh
    site = _blas.UpdateSite()
    big, small = (np.ones(n, np.float32), np.ones(n, np.float32)), (np.ones(4), np.ones(4))
    for p, d in (big, small, big):
        want = subtract_scaled(p.copy(), 0.5, d)
        np.testing.assert_array_equal(site(p, 0.5, d), want)
