"""Tests of ztfsds.stats and its kernels (ztfsds._ext._stats) against the numpy reference and astropy."""

import dataclasses

import numpy as np
import pytest
from astropy.stats import mad_std, sigma_clip, sigma_clipped_stats
from numpy.testing import assert_allclose, assert_array_equal

from ztfsds._ext import _stats, reference
from ztfsds.errors import ConfigError
from ztfsds.stats import RowStats, StackResult, clipped_rows, clipped_stack, robust_sigma

OPTIONS = [
    {},
    {"combine": "median"},
    {"maxiters": None},
    {"maxiters": 0},
    {"maxiters": 1, "combine": "median"},
    {"sigma_lower": 1.5, "sigma_upper": 2.0, "maxiters": 10},
    {"sigma_lower": np.inf, "sigma_upper": 2.5},
    {"cenfunc": "mean"},
    {"stdfunc": "std"},
    {"cenfunc": "mean", "stdfunc": "std", "combine": "median"},
]


def option_id(options):
    return ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def make_cube(shape=(15, 64, 80), *, seed=1, nan_fraction=0.02, ray_fraction=0.02):
    """Gaussian frames with positive outliers (cosmic rays), negative ones, NaN and inf."""
    rng = np.random.default_rng(seed)
    cube = rng.normal(100.0, 5.0, shape).astype(np.float32)
    hits = rng.random(shape) < ray_fraction
    cube[hits] += rng.uniform(30.0, 500.0, hits.sum()).astype(np.float32)
    cube[rng.random(shape) < ray_fraction / 4] -= 80.0
    cube[rng.random(shape) < nan_fraction] = np.nan
    cube[rng.random(shape) < nan_fraction / 4] = np.inf
    return cube


def kernel_options(**kw):
    """The positional clip arguments of the kernels, as the wrapper builds them."""
    from ztfsds.stats import _clip_options

    opts = dict(sigma_lower=3.0, sigma_upper=3.0, maxiters=5, cenfunc="median", stdfunc="mad_std",
                combine="mean", workers=1)
    opts.update(kw)
    return _clip_options(**opts)[:-1]


@pytest.fixture(scope="module")
def cube():
    return make_cube()


def assert_matches_reference(res, ref):
    data, std, nused = ref
    assert_array_equal(res.nused, nused)        # exactly the same survivors
    assert_allclose(res.data, data, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert_allclose(res.std, std, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_stack_matches_reference(cube, options):
    res = clipped_stack(cube, **options)
    assert isinstance(res, StackResult)
    assert res.data.dtype == np.float32 and res.std.dtype == np.float32 and res.nused.dtype == np.int16
    assert res.data.shape == res.std.shape == res.nused.shape == cube.shape[1:]
    assert_matches_reference(res, reference.clipped_stack(cube, **options))


@pytest.mark.parametrize("options", OPTIONS[:6], ids=option_id)
def test_stack_network_and_quickselect_paths_agree(cube, options):
    """The sorting-network path and the quickselect path find the same survivors."""
    outs = []
    for use_network in (True, False):
        out = (np.empty(cube.shape[1:], np.float32), np.empty(cube.shape[1:], np.float32),
               np.empty(cube.shape[1:], np.int16))
        _stats.stack_rows(cube, 0, cube.shape[1], np.empty(0), *kernel_options(**options), *out,
                          use_network)
        outs.append(out)
    (d1, s1, n1), (d2, s2, n2) = outs
    assert_array_equal(n1, n2)
    assert_allclose(d1, d2, rtol=1e-6, equal_nan=True)
    assert_allclose(s1, s2, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_deep_stack_uses_quickselect_and_matches_reference():
    nframe = _stats.NETWORK_MAX_FRAMES + 3
    cube = make_cube((nframe, 3, 4), seed=7)
    assert_matches_reference(clipped_stack(cube, combine="median"),
                             reference.clipped_stack(cube, combine="median"))


@pytest.mark.parametrize("nframe", [1, 2, 3, 4, 5, 20, 33, 64])
def test_stack_depths(nframe):
    cube = make_cube((nframe, 8, 300), seed=nframe)    # 300 columns: a full and a partial pixel block
    for options in ({}, {"combine": "median"}, {"stdfunc": "std", "maxiters": None}):
        assert_matches_reference(clipped_stack(cube, **options), reference.clipped_stack(cube, **options))


def test_sorting_network_sorts():
    rng = np.random.default_rng(3)
    for n in range(1, 70):
        pairs = _stats.sorting_network(n)
        assert pairs.ndim == 2 and pairs.shape[1] == 2
        assert np.all(pairs[:, 0] < pairs[:, 1]) and np.all(pairs < n)
        x = rng.integers(0, 5, (n, 50)).astype(float)       # many ties
        for i, j in pairs:
            x[i], x[j] = np.minimum(x[i], x[j]), np.maximum(x[i], x[j])
        assert np.all(np.diff(x, axis=0) >= 0)


def test_all_nan_pixel():
    cube = make_cube((6, 4, 5), nan_fraction=0.0, ray_fraction=0.0)
    cube[:, 1, 2] = np.nan
    cube[:3, 3, 3] = np.inf
    cube[3:, 3, 3] = np.nan
    for combine in ("mean", "median"):
        res = clipped_stack(cube, combine=combine)
        assert res.nused[1, 2] == 0 and res.nused[3, 3] == 0
        assert np.isnan(res.data[1, 2]) and np.isnan(res.std[1, 2]) and np.isnan(res.data[3, 3])
        assert_array_equal(res.nused, reference.clipped_stack(cube, combine=combine)[2])


def test_single_frame():
    frame = make_cube((1, 5, 7), nan_fraction=0.1, ray_fraction=0.0, seed=4)
    res = clipped_stack(frame)
    finite = np.isfinite(frame[0])
    assert_array_equal(res.nused, finite.astype(np.int16))
    assert_array_equal(res.data[finite], frame[0][finite])
    assert np.all(res.std[finite] == 0)
    assert np.all(np.isnan(res.data[~finite]))


def test_two_frames():
    cube = np.array([[[1.0, 5.0, np.nan]], [[3.0, 5.0, 2.0]]], dtype=np.float32)
    res = clipped_stack(cube)
    # two values are always within 3 MAD-sigma of their mean: nothing is rejected
    assert_array_equal(res.nused, [[2, 2, 1]])
    assert_array_equal(res.data, [[2.0, 5.0, 2.0]])
    assert_allclose(res.std, [[1.0, 0.0, 0.0]])


def test_constant_values_reject_nothing():
    cube = np.full((9, 3, 4), 7.25, dtype=np.float32)
    for options in ({}, {"stdfunc": "std"}, {"combine": "median", "maxiters": None}):
        res = clipped_stack(cube, **options)
        assert np.all(res.nused == 9)
        assert np.all(res.data == 7.25)
        assert np.all(res.std == 0)


def test_zero_mad_rejects_every_other_value():
    """With MAD = 0 the clipping interval is one value wide, as in astropy."""
    cube = np.array([10.0] * 6 + [10.5, 20.0], dtype=np.float32).reshape(8, 1, 1)
    res = clipped_stack(cube)
    ref = sigma_clip(cube.astype(np.float64), axis=0, sigma=3, maxiters=5, stdfunc="mad_std")
    assert res.nused[0, 0] == 6 == (~ref.mask).sum()
    assert res.data[0, 0] == 10.0


def test_cosmic_rays_are_removed():
    rng = np.random.default_rng(11)
    nframe, ny, nx = 15, 64, 80
    clean = rng.normal(1000.0, 5.0, (nframe, ny, nx)).astype(np.float32)
    cube = clean.copy()
    ys, xs = rng.integers(0, ny, 200), rng.integers(0, nx, 200)
    frames = rng.integers(0, 3, 200)            # hits in a few frames only
    cube[frames, ys, xs] += 50 * 5.0            # 50 sigma
    hit = np.zeros(cube.shape, bool)
    hit[frames, ys, xs] = True
    res = clipped_stack(cube)
    # every cosmic ray is rejected, and few good values with it (3 MAD-sigma on 15 values rejects ~3%
    # of Gaussian values, as astropy does)
    assert np.all(res.nused <= nframe - hit.sum(axis=0))
    assert res.nused.mean() > nframe - 0.6
    plain_error = np.abs(cube.mean(axis=0) - 1000.0)
    clip_error = np.abs(res.data - 1000.0)
    assert plain_error[hit.any(axis=0)].min() > 10.0
    assert clip_error.max() < 6.0                # about 4 sigma of a 15-frame mean
    # the scatter of the survivors: a little under 5 (population std of a few clipped values)
    assert 4.2 < np.median(res.std) < 5.0


def test_weighted_mean(cube):
    weights = np.linspace(0.5, 2.0, cube.shape[0])
    res = clipped_stack(cube, weights=weights)
    assert_matches_reference(res, reference.clipped_stack(cube, weights=weights))
    # uniform weights give the plain mean
    uniform = clipped_stack(cube, weights=np.full(cube.shape[0], 3.0))
    assert_allclose(uniform.data, clipped_stack(cube).data, rtol=1e-6, equal_nan=True)


def test_weights_select_frames():
    cube = make_cube((5, 6, 7), nan_fraction=0.0, ray_fraction=0.0, seed=5)
    weights = np.zeros(5)
    weights[2] = 1.0
    res = clipped_stack(cube, weights=weights, maxiters=0)
    assert_array_equal(res.data, cube[2])
    # a pixel whose only weighted frame is rejected has no weighted mean
    cube[2, 0, 0] = 1e6
    assert np.isnan(clipped_stack(cube, weights=weights).data[0, 0])


def test_workers_give_identical_results(cube):
    for options in ({}, {"combine": "median"}, {"weights": np.arange(1.0, 16.0)}):
        one = clipped_stack(cube, **options)
        two = clipped_stack(cube, workers=2, **options)
        for name in ("data", "std", "nused"):
            assert_array_equal(getattr(one, name), getattr(two, name))
    strip = cube[0]
    assert_array_equal(clipped_rows(strip).data, clipped_rows(strip, workers=3).data)


@pytest.mark.parametrize("cenfunc, stdfunc", [("median", "mad_std"), ("mean", "std"),
                                               ("median", "std")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_agrees_with_astropy_sigma_clip(cenfunc, stdfunc, dtype):
    rng = np.random.default_rng(2)
    cube = rng.normal(0.0, 1.0, (25, 20, 30)).astype(np.float32).astype(dtype)
    cube[rng.random(cube.shape) < 0.03] += 20.0
    kw = dict(cenfunc=cenfunc, stdfunc=stdfunc, maxiters=5)
    clipped = sigma_clip(cube, axis=0, sigma_lower=2.5, sigma_upper=3.0, **kw)
    res = clipped_stack(cube, sigma_lower=2.5, sigma_upper=3.0, **kw)
    # astropy keeps a value rejected in an early round if the last interval holds it; so do we
    assert_array_equal(res.nused, (~clipped.mask).sum(axis=0))
    assert_allclose(res.data, clipped.mean(axis=0).filled(np.nan), rtol=1e-5, atol=1e-6)
    assert_allclose(res.std, clipped.std(axis=0).filled(np.nan), rtol=1e-5, atol=1e-6)
    med = clipped_stack(cube, combine="median", sigma_lower=2.5, **kw).data
    assert_allclose(med, np.ma.median(clipped, axis=0).filled(np.nan), rtol=1e-5, atol=1e-6)


def test_rows_agree_with_astropy_sigma_clipped_stats():
    rng = np.random.default_rng(8)
    strip = rng.normal(1000.0, 5.0, (12, 30)).astype(np.float32).astype(np.float64)
    strip[rng.random(strip.shape) < 0.05] += 300.0
    res_mean = clipped_rows(strip, combine="mean")
    res_median = clipped_rows(strip)
    for r, row in enumerate(strip):
        mean, median, std = sigma_clipped_stats(row, sigma=3.0, maxiters=5, stdfunc="mad_std")
        assert_allclose([res_mean.data[r], res_median.data[r], res_mean.std[r]], [mean, median, std],
                        rtol=1e-6)


@pytest.mark.parametrize("options", OPTIONS[:6], ids=option_id)
def test_rows_match_reference(options):
    rng = np.random.default_rng(9)
    array = make_cube((1, 97, 40), seed=9)[0]
    array[rng.random(array.shape) < 0.05] = 5000.0
    array[13] = np.nan
    options = {"combine": "median", **options}
    res = clipped_rows(array, columns=(3, 33), **options)
    assert isinstance(res, RowStats)
    assert res.data.dtype == np.float32 and res.nused.dtype == np.int32 and res.data.shape == (97,)
    assert_matches_reference(res, reference.clipped_rows(array, columns=(3, 33), **options))
    assert res.nused[13] == 0 and np.isnan(res.data[13])
    # the quickselect path of the kernel gives the same survivors
    out = (np.empty(97, np.float32), np.empty(97, np.float32), np.empty(97, np.int32))
    _stats.clip_rows(array, 0, 97, 3, 33, *kernel_options(**options), *out, False)
    assert_array_equal(out[2], res.nused)
    assert_allclose(out[0], res.data, rtol=1e-6, equal_nan=True)


def test_rows_columns_and_wide_rows():
    array = make_cube((1, 10, _stats.NETWORK_MAX_FRAMES + 6), seed=12)[0]
    res = clipped_rows(array)                       # wider than the network: quickselect
    assert_matches_reference(res, reference.clipped_rows(array, combine="median"))
    sliced = clipped_rows(np.ascontiguousarray(array[:, -30:]))
    assert_array_equal(clipped_rows(array, columns=(-30, None)).data, sliced.data)


def test_input_conversion():
    cube = make_cube((5, 10, 12), seed=6, nan_fraction=0.0, ray_fraction=0.0)
    expected = clipped_stack(cube).data
    assert_array_equal(clipped_stack(cube.astype(np.float64)).data, expected)
    assert_array_equal(clipped_stack(list(cube)).data, expected)
    wide = np.zeros((5, 10, 24), np.float32)
    wide[:, :, ::2] = cube
    assert_array_equal(clipped_stack(wide[:, :, ::2]).data, expected)   # not contiguous
    ints = np.round(cube).astype(np.int16)
    assert_array_equal(clipped_stack(ints).data, clipped_stack(ints.astype(np.float32)).data)
    masked = np.ma.masked_array(cube, mask=np.zeros(cube.shape, bool))
    masked.mask[0, 0, 0] = True
    res = clipped_stack(masked)
    assert res.nused[0, 0] == 4 and res.nused[1, 1] == 5


def test_results_are_frozen(cube):
    res = clipped_stack(cube[:3])
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.data = None


@pytest.mark.parametrize("kwargs, error, match", [
    ({"cube": np.zeros((4, 5))}, ValueError, "3-D"),
    ({"cube": np.zeros((0, 4, 5))}, ValueError, "at least one frame"),
    ({"cube": np.zeros((3, 4, 5), complex)}, ValueError, "real numbers"),
    ({"sigma_lower": 0.0}, ConfigError, "sigma_lower"),
    ({"sigma_upper": -1.0}, ConfigError, "sigma_upper"),
    ({"sigma_upper": np.nan}, ConfigError, "sigma_upper"),
    ({"maxiters": -1}, ConfigError, "maxiters"),
    ({"maxiters": 2.5}, ConfigError, "maxiters"),
    ({"cenfunc": "mode"}, ConfigError, "cenfunc"),
    ({"stdfunc": "mad"}, ConfigError, "stdfunc"),
    ({"combine": "sum"}, ConfigError, "combine"),
    ({"workers": 0}, ConfigError, "workers"),
    ({"weights": [1.0, 2.0]}, ValueError, r"shape \(3,\)"),
    ({"weights": [1.0, -2.0, 1.0]}, ValueError, ">= 0"),
    ({"weights": [1.0, 1.0, 1.0], "combine": "median"}, ConfigError, "combine='mean' only"),
])
def test_stack_validation(kwargs, error, match):
    kwargs = {"cube": np.zeros((3, 4, 5), np.float32), **kwargs}
    with pytest.raises(error, match=match):
        clipped_stack(**kwargs)
    assert issubclass(ConfigError, ValueError)


def test_rows_validation():
    with pytest.raises(ValueError, match="2-D"):
        clipped_rows(np.zeros(5))
    with pytest.raises(ValueError, match="select no column"):
        clipped_rows(np.zeros((4, 5)), columns=(3, 3))
    with pytest.raises(ValueError, match="pair of integers"):
        clipped_rows(np.zeros((4, 5)), columns=(1, 2, 3))
    with pytest.raises(ConfigError, match="sigma_lower"):
        clipped_rows(np.zeros((4, 5)), sigma_lower=0)


def test_robust_sigma():
    rng = np.random.default_rng(10)
    x = rng.normal(0.0, 2.0, 1001)
    x[:20] = 1e4
    x[20:30] = np.nan
    assert_allclose(robust_sigma(x), mad_std(x, ignore_nan=True), rtol=1e-12)
    assert_allclose(robust_sigma(x), 2.0, rtol=0.1)
    assert isinstance(robust_sigma(x), float)
    two = np.stack([x, 2 * x], axis=1)
    assert_allclose(robust_sigma(two, axis=0), [robust_sigma(x), robust_sigma(2 * x)], rtol=1e-12)
    assert np.isnan(robust_sigma([np.nan, np.inf]))
    assert_array_equal(np.isnan(robust_sigma(np.full((3, 2), np.nan), axis=1)), [True] * 3)
