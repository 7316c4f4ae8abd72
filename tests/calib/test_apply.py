"""Per-exposure calibration (`ztfsds.calib.apply`) against the simulator's truth.

The calibration here is built from the camera truth (`make_camera`: bias structure, flat and defects,
gains, read noise, non-linearity, crosstalk), not measured from calibration frames, so that these tests
check the application alone. The measured figures are printed (``pytest -s``).
"""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from truthphot import check_pulls, clean_star_pulls

from ztfsds._ext import _calib, reference
from ztfsds.calib.apply import (
    CR_NOISE_MARGIN,
    CalibratedQuadrant,
    calibrate_ccd,
    calibrate_quadrant,
    calibrate_raw_file,
    linear_signal,
)
from ztfsds.calib.calibration import CCDCalibration, QuadrantCalibration
from ztfsds.camera import ADC_MAX, QIDS, QUADRANT_SHAPE
from ztfsds.config import CalibParams
from ztfsds.errors import (
    FITSFormatError,
    InputError,
    MissingExtensionError,
    MissingKeywordError,
    NonFiniteError,
    ProductNotFoundError,
    ShapeError,
    TruncatedFileError,
)
from ztfsds.products import MaskBits, ProductKey, ProductStore
from ztfsds.sim import simulate_night, truth_path
from ztfsds.sim.instrument import make_camera
from ztfsds.sim.optics import render_sources
from ztfsds.sim.raw import delinearize32, electrons_to_raw, raw_header, write_raw_ccd

SEED = 6            # a night of sharp seeing (FWHM ~1.6 px): the hardest case for the cosmic-ray test
SIZE = 512
DEFECTS = MaskBits.DEAD | MaskBits.NOISY | MaskBits.LOW_RESPONSIVITY | MaskBits.HIGH_RESPONSIVITY


def quadrant_calibration(cam, ccdid, qid, filtercode="zr"):
    """The calibration a perfect calibration library would measure, from the camera truth."""
    ch = cam.channel(ccdid, qid)
    flat = cam.response(ccdid, qid, filtercode)     # flat times the defect response, as a measured flat
    flat[flat <= 0] = 1.0                           # dead pixels: unusable, flat 1
    ceiling = ADC_MAX - ch.bias_level - ch.bias_offset
    full_well = float(delinearize32(np.array([ch.full_well / ch.gain], np.float32), ch.nonlin_a, ch.nonlin_b)[0])
    return QuadrantCalibration(
        ccdid=ccdid, qid=qid, filtercode=filtercode, bias=cam.bias_structure(ccdid, qid), flat=flat,
        bpm=cam.defects(ccdid, qid).astype(np.int16), gain=ch.gain, read_noise=ch.read_noise,
        nonlin_a=ch.nonlin_a, nonlin_b=ch.nonlin_b, saturation=min(ceiling, full_well),
        provenance={"CIDBIAS": "truth_bias.fits", "CIDHIFLT": "truth_flat.fits"})


def ccd_calibration(cam, ccdid=13, filtercode="zr"):
    return CCDCalibration(ccdid=ccdid, filtercode=filtercode, night="20200924",
                          quadrants={q: quadrant_calibration(cam, ccdid, q, filtercode) for q in QIDS},
                          crosstalk=cam.crosstalk(ccdid))


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Two simulated exposures of CCD 13 (4 quadrants of 512 x 512), calibrated from the raw files:
    a list of (raw path, calibrated quadrants, truth file)."""
    root = tmp_path_factory.mktemp("night")
    result = simulate_night(root, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=SEED,
                            nbias=1, nflat=1)
    ccdcal = ccd_calibration(make_camera(SEED, shape=(SIZE, SIZE), ccdids=[13]))
    return [(path, calibrate_raw_file(path, ccdcal), truth_path(ProductStore(root), ProductKey.parse(path.name)))
            for path in result.science]


@pytest.fixture(scope="module")
def small_camera():
    return make_camera(5, shape=(256, 256), ccdids=[13])


def _tracks(rng, shape, n):
    """Cosmic-ray deposits [e-] as the simulator makes them: tracks of 1-5 px, 1000-20000 e-."""
    ny, nx = shape
    dep = np.zeros(shape)
    x0, y0 = rng.uniform(0, nx, n), rng.uniform(0, ny, n)
    length = rng.choice(np.arange(1, 6), n, p=[0.35, 0.25, 0.18, 0.13, 0.09])
    theta = rng.uniform(0.0, np.pi, n)
    total = np.exp(rng.uniform(np.log(1000.0), np.log(20000.0), n))
    for i in range(n):
        w = rng.uniform(0.6, 1.4, length[i])
        w /= w.sum()
        for k in range(length[i]):
            x = int(np.floor(x0[i] + k * np.cos(theta[i])))
            y = int(np.floor(y0[i] + k * np.sin(theta[i])))
            if 0 <= x < nx and 0 <= y < ny:
                dep[y, x] += total[i] * w[k]
    return dep


@pytest.fixture(scope="module")
def cosmic_scene():
    """Stars of r < 18 (FWHM 1.5-3 px) and many cosmic rays on the four quadrants of a CCD."""
    shape = (SIZE, SIZE)
    cam = make_camera(7, shape=shape, ccdids=[13])
    rng = np.random.default_rng(42)
    electrons, stars, deposits, model = {}, {}, {}, {}
    for q in QIDS:
        n = 150
        x, y = rng.uniform(8, SIZE - 8, n), rng.uniform(8, SIZE - 8, n)
        # 1.2e4 e- is r = 18 at the nominal zero point (26.3 mag for 1 DN in 30 s, 5.8 e-/DN)
        flux = 10 ** rng.uniform(np.log10(1.2e4), 6.0, n)
        fwhm = rng.uniform(1.5, 3.0, n)
        e = np.full(shape, 900.0, np.float32)
        render_sources(shape, x, y, flux, fwhm=fwhm, out=e)
        response = cam.response(13, q, "zr")
        dep = _tracks(rng, shape, 120) * (response > 0)
        model[q] = e * response
        e += (dep / np.where(response > 0, response, 1.0)).astype(np.float32)
        electrons[q], stars[q], deposits[q] = e, Table({"x": x, "y": y, "flux": flux, "fwhm": fwhm}), dep
    quads, overscans, _ = electrons_to_raw(electrons, 13, cam, "zr", rng=np.random.default_rng(1), cosmic_rays=False)
    result = calibrate_ccd(quads, overscans, ccd_calibration(cam))
    return result, stars, deposits, model, cam


@pytest.fixture(scope="module")
def crosstalk_pair(small_camera):
    """The same readout (same noise) of a blank sky, and of the sky with a saturated and a bright star."""
    cam = small_camera
    shape = cam.shape
    sky = {q: np.full(shape, 800.0, np.float32) for q in QIDS}
    stars = {q: sky[q].copy() for q in QIDS}
    render_sources(shape, [100.3], [120.6], [3e7], fwhm=2.5, out=stars[2])     # saturated, bleeding
    render_sources(shape, [60.0], [200.0], [3e6], fwhm=2.5, out=stars[3])      # bright, unsaturated
    runs = {}
    for name, e in (("sky", sky), ("stars", stars)):
        runs[name] = electrons_to_raw(e, 13, cam, "zr", rng=np.random.default_rng(3), cosmic_rays=False)
    return runs, ccd_calibration(cam)


# --------------------------------------------------------------------------------------------------
# Kernels against their numpy references
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_linear_kernel_matches_reference(dtype):
    rng = np.random.default_rng(0)
    ny, nx = 37, 53
    raw = rng.integers(0, ADC_MAX + 1, (ny, nx)).astype(dtype)
    raw[3, :5] = ADC_MAX
    level = rng.normal(600.0, 5.0, ny).astype(np.float32)
    bias = rng.normal(0.0, 3.0, (ny, nx)).astype(np.float32)
    args = (np.float32(-8.66e-12), np.float32(2.69e-7), np.float32(0.98 * 64000.0), np.float32(64000.0),
            np.float32(ADC_MAX))
    lin = np.empty((ny, nx), np.float32)
    sat = np.empty((ny, nx), np.uint8)
    for y0, y1 in ((0, 10), (10, 11), (11, ny)):        # any split gives the same rows
        _calib.linear_rows(raw, level, bias, *args, y0, y1, lin, sat)
    ref_lin, ref_sat = reference.linear_pass(raw, level, bias, *args)
    np.testing.assert_allclose(lin, ref_lin, rtol=1e-6)
    np.testing.assert_array_equal(sat, ref_sat)
    assert set(np.unique(sat)) == {0, 1, 2}


def test_ghost_kernel_matches_reference():
    rng = np.random.default_rng(1)
    ny, nx = 20, 31
    ghost = np.zeros((ny, nx), np.float32)
    sources = []
    for flip_y, flip_x in ((False, True), (True, True), (True, False)):
        src = rng.normal(1000.0, 3000.0, (ny, nx)).astype(np.float32)
        sat = rng.integers(0, 3, (ny, nx)).astype(np.uint8)
        coef, clip = rng.uniform(1e-4, 1e-3), 5000.0
        _calib.ghost_rows(src, sat, True, np.float32(coef), np.float32(clip), flip_y, flip_x, 0, ny, ghost)
        sources.append((src, sat, coef, clip, flip_y, flip_x))
    np.testing.assert_allclose(ghost, reference.crosstalk_ghost(sources, (ny, nx)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("with_ghost", [False, True])
def test_finish_kernel_matches_reference(with_ghost):
    rng = np.random.default_rng(2)
    ny, nx = 29, 41
    lin = rng.normal(500.0, 2000.0, (ny, nx)).astype(np.float32)
    sat = np.zeros((ny, nx), np.uint8)
    sat[10:14, 7] = 2
    sat[20, 30] = 1
    lin[9, 7] = lin[14, 7] = 40000.0         # bleed-trail ends
    flat = rng.uniform(0.9, 1.1, (ny, nx)).astype(np.float32)
    flat[0, 0], flat[0, 1], flat[0, 2] = 0.0, np.nan, -1.0
    bpm = np.zeros((ny, nx), np.int16)
    bpm[5, 5] = int(MaskBits.DEAD)
    ghost = rng.uniform(0.0, 200.0, (ny, nx)).astype(np.float32) if with_ghost else None
    consts = (np.float32(1 / 5.8), np.float32(3.0), np.float32(25.0), np.float32(30000.0),
              int(MaskBits.SATURATED), int(MaskBits.GHOST), int(MaskBits.NAN))
    sci, var = np.empty((ny, nx), np.float32), np.empty((ny, nx), np.float32)
    mask = np.empty((ny, nx), np.int16)
    fmax = max(_calib.finish_rows(lin, sat, flat, bpm, ghost if with_ghost else np.zeros((1, 1), np.float32),
                                  with_ghost, *consts, y0, y1, sci, var, mask)
               for y0, y1 in ((0, 13), (13, ny)))
    ref = reference.finish_pass(lin, sat, flat, bpm, ghost, *consts)
    np.testing.assert_allclose(sci, ref[0], rtol=1e-6)
    np.testing.assert_allclose(var, ref[1], rtol=1e-6)
    np.testing.assert_array_equal(mask, ref[2])
    assert fmax == ref[3]
    assert (mask[9:15, 7] & int(MaskBits.SATURATED)).all()
    assert (mask[0, :3] & int(MaskBits.NAN)).all() and np.isnan(sci[0, :3]).all()


def test_cosmic_ray_kernel_matches_reference():
    """Random sky with stars, spikes, tracks, NaNs and masked pixels: kernel == reference, any split."""
    rng = np.random.default_rng(3)
    ny, nx = 96, 120
    e = np.full((ny, nx), 500.0, np.float32)
    render_sources((ny, nx), rng.uniform(0, nx, 40), rng.uniform(0, ny, 40), 10 ** rng.uniform(3, 6, 40),
                   fwhm=rng.uniform(1.3, 3.0, 40), out=e)
    e += _tracks(rng, (ny, nx), 60).astype(np.float32)
    sci = (e + rng.normal(0.0, 1.0, e.shape) * np.sqrt(e + 100.0)).astype(np.float32) / np.float32(5.8)
    var = (np.maximum(sci, 0) / 5.8 + 3.0).astype(np.float32)
    sci[0, 5] = sci[50, 60] = np.nan
    mask = np.zeros((ny, nx), np.int16)
    mask[rng.integers(0, ny, 30), rng.integers(0, nx, 30)] = int(MaskBits.SATURATED)
    mask[rng.integers(0, ny, 30), rng.integers(0, nx, 30)] = int(MaskBits.NOISY)
    skip_self = int(DEFECTS | MaskBits.SATURATED | MaskBits.NAN)
    skip_near = int(MaskBits.SATURATED | MaskBits.NAN)
    ref_hits, ref_flag = reference.cosmic_ray_mask(sci, var, mask, skip_self, skip_near, 5.0, 5.0,
                                                   CR_NOISE_MARGIN, 2.0)
    assert 20 < ref_hits.sum() < ref_flag.sum()
    for split in ((0, ny), (0, 1, 2, 47, ny - 1, ny)):
        hits = np.empty((ny, nx), np.uint8)
        row_hits = np.zeros(ny, np.intp)
        out = mask.copy()
        for y0, y1 in zip(split[:-1], split[1:]):
            _calib.cosmic_ray_rows(sci, var, mask, skip_self, skip_near, 5.0, 5.0, CR_NOISE_MARGIN, y0, y1,
                                   hits, row_hits)
        np.testing.assert_array_equal(hits.astype(bool), ref_hits)
        np.testing.assert_array_equal(row_hits, ref_hits.sum(axis=1))
        for y0, y1 in zip(split[:-1], split[1:]):
            _calib.cosmic_ray_grow_rows(sci, var, mask, hits, row_hits, skip_self, 2.0, 5.0, CR_NOISE_MARGIN,
                                        int(MaskBits.SPIKE), y0, y1, out)
        np.testing.assert_array_equal((out & int(MaskBits.SPIKE)) != 0, ref_flag)
        np.testing.assert_array_equal(out & ~np.int16(MaskBits.SPIKE), mask)


# --------------------------------------------------------------------------------------------------
# A simulated night against its truth
# --------------------------------------------------------------------------------------------------


def test_products_and_header(night):
    path, calibrated, _ = night[0]
    assert sorted(calibrated) == [1, 2, 3, 4]
    for qid, res in calibrated.items():
        assert isinstance(res, CalibratedQuadrant), res
        assert res.sciimg.dtype == np.float32 and res.varimg.dtype == np.float32 and res.mskimg.dtype == np.int16
        assert res.sciimg.shape == res.mskimg.shape == res.varimg.shape == (SIZE, SIZE)
        h = res.header
        assert h["CIDBIAS"] == "truth_bias.fits" and h["CIDHIFLT"] == "truth_flat.fits"
        assert h["CALHASH"] == CalibParams().param_hash() and h["INFOBITS"] == 0
        assert h["XTALKSRC"] == ",".join(str(q) for q in QIDS if q != qid)
        assert 5.0 < h["GAIN"] < 6.6 and 9.0 < h["READNOI"] < 11.5
        assert 55000.0 < h["SATURATE"] < 66000.0
        # the cards make a valid product header (NAXIS from the data)
        hdu = fits.PrimaryHDU(res.sciimg, h)
        assert hdu.header["NAXIS1"] == SIZE and hdu.header["NAXIS2"] == SIZE
        nan = (res.mskimg & int(MaskBits.NAN)) != 0
        assert np.isfinite(res.sciimg[~nan]).all() and np.isfinite(res.varimg[~nan]).all()
        assert (res.varimg[~nan] > 0).all()


def test_masks_match_truth(night):
    """>= 99 % of defects and saturated pixels flagged, < 0.1 % of clean pixels flagged."""
    report = []
    for qid, (_, calibrated, truth_file) in [(q, n) for n in night for q in QIDS]:
        truth = fits.getdata(truth_file, f"MASK{qid}")
        mask = calibrated[qid].mskimg
        for name, bits in (("defect", DEFECTS), ("saturated", MaskBits.SATURATED)):
            t = (truth & int(bits)) != 0
            if t.any():
                recall = float(((mask & int(bits)) != 0)[t].mean())
                report.append(f"q{qid} {name} {recall:.4f} of {t.sum()}")
                assert recall >= 0.99
        false = float((mask[truth == 0] != 0).mean())
        report.append(f"q{qid} false {false:.2e}")
        assert false < 1e-3
    print("\n" + "; ".join(report))


def test_star_fluxes_match_truth_within_noise(night):
    """Aperture fluxes (r = 10 px, true sky removed) of clean stars scatter about the truth as the noise.

    The crosstalk pedestal of the other amplifiers' sky is removed by the calibration; the summed
    variance image in the aperture matches the true noise.
    """
    ratios, pulls, var_ratios = [], [], []
    for qid, (_, calibrated, truth_file) in [(q, n) for n in night for q in QIDS]:
        with fits.open(truth_file) as hdul:
            hdr, truth, mask = hdul[f"Q{qid}"].header, Table(hdul[f"Q{qid}"].data), hdul[f"MASK{qid}"].data
        r, p, v = clean_star_pulls(calibrated[qid].sciimg, calibrated[qid].varimg, truth, hdr, mask)
        ratios.extend(r)
        pulls.extend(p)
        var_ratios.extend(v)
    check_pulls(ratios, pulls, var_ratios)


# --------------------------------------------------------------------------------------------------
# Cosmic rays, crosstalk, variance
# --------------------------------------------------------------------------------------------------


def test_cosmic_rays(cosmic_scene):
    """>= 95 % of the pixels with a > 10 sigma deposit flagged SPIKE; < 1 % of r < 18 star cores."""
    result, stars, deposits, model, cam = cosmic_scene
    hit, total, flagged_cores, cores, false_px, npix = 0, 0, 0, 0, 0, 0
    for qid in QIDS:
        mask = result[qid].mskimg
        spike = (mask & int(MaskBits.SPIKE)) != 0
        other = (mask & int(MaskBits.BAD & ~MaskBits.SPIKE)) != 0
        rn = cam.channel(13, qid).read_noise
        dep = deposits[qid]
        big = (dep > 10.0 * np.sqrt(model[qid] + rn**2)) & ~other
        hit += int(spike[big].sum())
        total += int(big.sum())
        near_cr = np.zeros_like(spike)
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                near_cr |= np.roll(dep > 0, (dy, dx), axis=(0, 1))
        false_px += int((spike & ~near_cr).sum())
        npix += spike.size
        for s in stars[qid]:
            x, y = int(round(s["x"])), int(round(s["y"]))
            if (dep[y - 3:y + 4, x - 3:x + 4] > 0).any() or other[y - 1:y + 2, x - 1:x + 2].any():
                continue
            cores += 1
            flagged_cores += bool(spike[y - 1:y + 2, x - 1:x + 2].any())
    recall = hit / total
    print(f"\ncosmic rays: {recall:.4f} of {total} pixels > 10 sigma flagged; {flagged_cores} of {cores} "
          f"star cores (r < 18, FWHM 1.5-3 px) flagged; {false_px / npix:.1e} of pixels flagged away "
          "from any deposit")
    assert recall >= 0.95
    assert flagged_cores / cores < 0.01
    assert false_px / npix < 1e-4


def test_crosstalk_ghosts_suppressed(crosstalk_pair):
    """A saturated star's and a bright star's ghosts shrink >= 20x after the calibration.

    The two readouts differ only by the stars, so in the other quadrants the difference of the
    calibrated images is the ghost (crosstalk not removed) or its residual (removed), plus the
    difference of the two ADC roundings (up to 1 DN).
    """
    runs, ccdcal = crosstalk_pair
    truth = runs["stars"][2]
    assert truth["saturated"][2].sum() > 20 and not truth["saturated"][3].any()
    out = {}
    for xt in (False, True):
        params = CalibParams(crosstalk=xt)
        sky = calibrate_ccd(*runs["sky"][:2], ccdcal, params=params)
        stars = calibrate_ccd(*runs["stars"][:2], ccdcal, params=params)
        out[xt] = {v: stars[v].sciimg - sky[v].sciimg for v in (1, 4)}     # the ghosts (and their residuals)
    # victim 1: mostly the saturated star of q2 (X = 7.7e-4); victim 4: the bright star of q3 (9.3e-4)
    for v in (1, 4):
        before, after = out[False][v], out[True][v]
        footprint = before > 0.25 * before.max()
        peak = float(before.max()) / float(np.abs(after).max())
        mean = float(before[footprint].mean()) / abs(float(after[footprint].mean()))
        print(f"\nvictim q{v}: ghost peak {before.max():.1f} DN -> residual {np.abs(after).max():.2f} DN "
              f"(x{peak:.0f}); footprint mean x{mean:.0f}")
        assert before.max() > 30.0
        assert peak >= 20.0 and mean >= 20.0


def test_crosstalk_quadrant_path_matches_ccd(crosstalk_pair):
    """calibrate_quadrant with the other amplifiers' linear_signal equals calibrate_ccd (no saturation)."""
    runs, ccdcal = crosstalk_pair
    quads, overscans, _ = runs["sky"]
    ccd = calibrate_ccd(quads, overscans, ccdcal)
    signals = {s: linear_signal(quads[s], overscans[s], ccdcal.quadrants[s]) for s in QIDS}
    for v in QIDS:
        sources = {s: (ccdcal.crosstalk[v - 1, s - 1], signals[s]) for s in QIDS if s != v}
        one = calibrate_quadrant(quads[v], overscans[v], ccdcal.quadrants[v], crosstalk_sources=sources)
        np.testing.assert_array_equal(one.sciimg, ccd[v].sciimg)
        np.testing.assert_array_equal(one.mskimg, ccd[v].mskimg)


def test_variance_matches_empirical(small_camera):
    """On flat skies of 200 to 15000 e-, the mean varimg equals the pixel variance within 5 %."""
    cam = small_camera
    levels = {1: 200.0, 2: 1000.0, 3: 4000.0, 4: 15000.0}
    electrons = {q: np.full(cam.shape, levels[q], np.float32) for q in QIDS}
    quads, overscans, _ = electrons_to_raw(electrons, 13, cam, "zr", rng=np.random.default_rng(9), cosmic_rays=False)
    result = calibrate_ccd(quads, overscans, ccd_calibration(cam))
    report = []
    for q in QIDS:
        r = result[q]
        good = r.mskimg == 0
        ratio = float(np.var(r.sciimg[good]) / np.mean(r.varimg[good]))
        report.append(f"{levels[q]:.0f} e-: {ratio:.4f}")
        assert abs(ratio - 1.0) < 0.05
    print("\nempirical / varimg: " + ", ".join(report))


def test_workers_do_not_change_the_result(crosstalk_pair):
    runs, ccdcal = crosstalk_pair
    one = calibrate_ccd(*runs["stars"][:2], ccdcal, params=CalibParams(workers=1))
    three = calibrate_ccd(*runs["stars"][:2], ccdcal, params=CalibParams(workers=3))
    for q in QIDS:
        np.testing.assert_array_equal(one[q].sciimg, three[q].sciimg)
        np.testing.assert_array_equal(one[q].mskimg, three[q].mskimg)
        np.testing.assert_array_equal(one[q].varimg, three[q].varimg)


def test_crosstalk_off(crosstalk_pair):
    runs, ccdcal = crosstalk_pair
    res = calibrate_ccd(*runs["stars"][:2], ccdcal, params=CalibParams(crosstalk=False))
    assert all(r.header["XTALKSRC"] == "" for r in res.values())
    assert not any(((r.mskimg & int(MaskBits.GHOST)) != 0).any() for r in res.values())


# --------------------------------------------------------------------------------------------------
# Errors name the file; a bad quadrant fails alone
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    cam = make_camera(2, shape=(64, 64), ccdids=[13])
    sky = {q: np.full(cam.shape, 1000.0, np.float32) for q in QIDS}
    quads, overscans, _ = electrons_to_raw(sky, 13, cam, "zr", rng=np.random.default_rng(0))
    return quads, overscans, ccd_calibration(cam)


def test_bad_inputs_raise_errors_naming_the_file(tiny):
    quads, overscans, ccdcal = tiny
    qcal = ccdcal.quadrants[1]
    with pytest.raises(ShapeError, match=r"raw\.fits: HDU 1 has shape \(63, 64\), expected \(64, 64\)"):
        calibrate_quadrant(quads[1][:-1], overscans[1], qcal, filename="raw.fits")
    bad = quads[1].astype(np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(NonFiniteError, match=r"raw\.fits: HDU 1 \(quadrant 1\) has 1 NaN"):
        calibrate_quadrant(bad, overscans[1], qcal, filename="raw.fits")
    with pytest.raises(MissingExtensionError, match=r"raw\.fits: no overscan for quadrant 1"):
        calibrate_quadrant(quads[1], None, qcal, filename="raw.fits")
    with pytest.raises(ShapeError, match=r"raw\.fits: HDU 5 has shape \(10, 30\)"):
        calibrate_quadrant(quads[1], overscans[1][:10], qcal, filename="raw.fits")
    with pytest.raises(InputError, match="raw.fits"):
        calibrate_quadrant(quads[1], overscans[1][:, :10], qcal, filename="raw.fits")   # too few columns
    with pytest.raises(ShapeError, match="crosstalk source q2"):
        calibrate_quadrant(quads[1], overscans[1], qcal, crosstalk_sources={2: (1e-4, np.zeros((3, 3)))},
                           filename="raw.fits")
    with pytest.raises(MissingExtensionError, match="no overscan for quadrant 3"):
        calibrate_ccd(quads, {q: overscans[q] for q in (1, 2, 4)}, ccdcal, filename="raw.fits")
    with pytest.raises(InputError, match="no calibration for quadrant 4"):
        three = {q: ccdcal.quadrants[q] for q in (1, 2, 3)}
        calibrate_ccd(quads, overscans, CCDCalibration(13, "zr", "20200924", three, ccdcal.crosstalk))


def _write(path, quads, overscans, **header):
    """A raw CCD file; ``header`` changes primary cards (None deletes one)."""
    path = write_raw_ccd(path, quads, overscans, raw_header(ccdid=13, obsjd=2459116.9, field=655, filtercode="zr"))
    for key, value in header.items():
        if value is None:
            fits.delval(path, key)
        else:
            fits.setval(path, key, value=value)
    return path


def test_raw_file_isolates_failures(tmp_path, tiny):
    quads, overscans, ccdcal = tiny
    path = _write(tmp_path / "ztf_20200924400000_000655_zr_c13_o.fits", quads, overscans)
    good = calibrate_raw_file(path, ccdcal)
    assert all(isinstance(r, CalibratedQuadrant) for r in good.values())
    np.testing.assert_array_equal(good[2].sciimg, calibrate_ccd(quads, overscans, ccdcal)[2].sciimg)

    # truncated inside the last HDU (q4's overscan): q4 fails, the others are calibrated without its crosstalk
    data = path.read_bytes()
    cut = tmp_path / "cut_c13_o.fits"
    cut.write_bytes(data[:len(data) - 3000])
    res = calibrate_raw_file(cut, ccdcal)
    assert isinstance(res[4], TruncatedFileError) and "cut_c13_o.fits" in str(res[4])
    for q in (1, 2, 3):
        assert isinstance(res[q], CalibratedQuadrant)
        assert res[q].header["XTALKSRC"] == ",".join(str(s) for s in (1, 2, 3) if s != q)

    # a quadrant HDU of the wrong shape fails alone
    wrong = dict(quads)
    wrong[3] = quads[3][:-2]
    res = calibrate_raw_file(_write(tmp_path / "shape.fits", wrong, {**overscans, 3: overscans[3][:-2]}), ccdcal)
    assert isinstance(res[3], ShapeError) and "shape.fits" in str(res[3])
    assert isinstance(res[1], CalibratedQuadrant)

    # an HDU missing altogether
    with fits.open(path) as hdul:
        fits.HDUList([h.copy() for h in hdul[:8]]).writeto(tmp_path / "seven.fits")
    res = calibrate_raw_file(tmp_path / "seven.fits", ccdcal)
    assert isinstance(res[4], MissingExtensionError) and "no HDU 8" in str(res[4])
    assert isinstance(res[1], CalibratedQuadrant)


def test_raw_file_errors(tmp_path, tiny):
    quads, overscans, ccdcal = tiny
    with pytest.raises(ProductNotFoundError, match="nothere.fits"):
        calibrate_raw_file(tmp_path / "nothere.fits", ccdcal)
    (tmp_path / "text.fits").write_text("not a FITS file at all" * 200)
    with pytest.raises(FITSFormatError, match="text.fits"):
        calibrate_raw_file(tmp_path / "text.fits", ccdcal)
    with pytest.raises(MissingKeywordError, match="CCD_ID"):
        calibrate_raw_file(_write(tmp_path / "noid.fits", quads, overscans, CCD_ID=None), ccdcal)
    with pytest.raises(InputError, match="raw file of CCD 12 but the calibration is for CCD 13"):
        calibrate_raw_file(_write(tmp_path / "ccd12.fits", quads, overscans, CCD_ID=12), ccdcal)
    with pytest.raises(InputError, match="taken in zg but the calibration is for zr"):
        calibrate_raw_file(_write(tmp_path / "zg.fits", quads, overscans, FILTER="ZTF_g"), ccdcal)


# --------------------------------------------------------------------------------------------------
# Full size
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fullsize_ccd():
    """A full-size CCD (4 x 3080 x 3072) with stars, a saturated star and cosmic rays."""
    cam = make_camera(3, ccdids=[13])
    rng = np.random.default_rng(4)
    electrons = {}
    for q in QIDS:
        e = np.full(QUADRANT_SHAPE, 900.0, np.float32)
        n = 2000
        render_sources(QUADRANT_SHAPE, rng.uniform(0, 3072, n), rng.uniform(0, 3080, n), 10 ** rng.uniform(3.5, 6.5, n),
                       fwhm=2.0, out=e)
        electrons[q] = e
    quads, overscans, truth = electrons_to_raw(electrons, 13, cam, "zr", rng=np.random.default_rng(0))
    result = calibrate_ccd(quads, overscans, ccd_calibration(cam), params=CalibParams(workers=2))
    for q in QIDS:
        r = result[q]
        assert r.sciimg.shape == r.varimg.shape == r.mskimg.shape == QUADRANT_SHAPE
        assert r.sciimg.dtype == np.float32 and r.mskimg.dtype == np.int16
        sat = (r.mskimg & int(MaskBits.SATURATED)) != 0
        assert sat[truth["saturated"][q]].all()
        assert ((r.mskimg & int(DEFECTS)) != 0)[cam.defects(13, q) != 0].all()
        assert r.header["NSPIKE"] > 50 and r.header["XTALKSRC"]
        cr = truth["cosmic_ray_mask"][q] & ~sat & (cam.defects(13, q) == 0)
        assert ((r.mskimg & int(MaskBits.SPIKE)) != 0)[cr].mean() > 0.8
        nan = (r.mskimg & int(MaskBits.NAN)) != 0
        assert np.isfinite(r.sciimg[~nan]).all()
