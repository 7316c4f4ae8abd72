"""The photometry stage end to end on a simulated night: raw -> calib -> astrom -> run_photom.

The products are compared with the simulator's truth: the zero point and colour term, the PSF-fit fluxes
of bright isolated stars (bias and pulls), the limiting magnitude against the measured 5-sigma
detection limit, SEEING against an independent FWHM measurement, and the forced-photometry service on
blank sky (mean zero) and on stars (their flux).
"""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ztfsds.astrom import run_astrom
from ztfsds.calib import build_library, run_calib
from ztfsds.catalogs import build_catalogs
from ztfsds.cli import main
from ztfsds.photom import forced_photometry_service, run_photom
from ztfsds.photom.forced import usable
from ztfsds.photom.runner import PHOTOM_INFOBITS
from ztfsds.products import InfoBits, ProductKey, ProductStore, read_header, read_image
from ztfsds.sim import simulate_night, truth_path
from ztfsds.sim.instrument import make_camera

SIZE = 768
NIGHT = "20200924"
SEED = 6
QIDS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("photomrun")
    result = simulate_night(root, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=SEED,
                            nbias=3, nflat=3)
    store = ProductStore(root)
    build_library(store, NIGHT)
    build_catalogs(store, [655])
    keys, statuses = [], []
    _RAW.clear()
    for raw in result.science:
        assert all(s.ok for s in run_calib(raw, store))
        for q in QIDS:
            key = ProductKey.parse(raw.name).quadrant(q, "sciimg")
            assert run_astrom(key, store).ok
            keys.append(key)
            _RAW[key] = ProductKey.parse(raw.name)
            statuses.append(run_photom(key, store))
    camera = make_camera(SEED, shape=(SIZE, SIZE), ccdids=[13])
    return result, store, keys, statuses, camera


#: The raw file of each quadrant product (the truth is per raw file).
_RAW = {}


def _truth(store, key):
    with fits.open(truth_path(store, _RAW[key])) as hdul:
        return Table(hdul[f"Q{key.qid}"].data), hdul[f"Q{key.qid}"].header, hdul[f"MASK{key.qid}"].data


def _scale(store, key, camera, thdr):
    """Image DN per incident electron at each pixel: response / (true gain x the flat it was divided by)."""
    hdr = read_header(store.path(key))
    flat, _ = read_image(store.path(ProductKey.parse(hdr["CIDHIFLT"])))
    response = camera.response(13, key.qid, "zr")
    return response / (thdr["GAIN"] * flat)


def _true_zp(truth, scale):
    stars = truth[truth["kind"] == "star"]
    zp_e = float(np.median(np.asarray(stars["mag"]) + 2.5 * np.log10(np.asarray(stars["flux_e"]))))
    good = np.isfinite(scale) & (scale > 0)
    return zp_e + 2.5 * math.log10(float(np.median(scale[good])))


def _isolated_bright(truth, tmask, shape, *, mag_range=(14.0, 18.5), radius=8.0):
    """Truth stars with no artefact within ``radius`` px, no neighbour of more than 2 % of their flux
    within ``radius`` and none brighter than half of them within ``3 radius`` (their light would be in
    the fit)."""
    ny, nx = shape
    x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
    flux = np.asarray(truth["flux_e"])
    sel = []
    for i in np.nonzero((truth["kind"] == "star") & (truth["mag"] > mag_range[0]) & (truth["mag"] < mag_range[1])
                        & (x > 15) & (x < nx - 16) & (y > 15) & (y < ny - 16))[0]:
        d = np.hypot(x - x[i], y - y[i])
        if np.any((d > 0) & (((d < radius) & (flux > 0.02 * flux[i])) | ((d < 3 * radius) & (flux > 0.5 * flux[i])))):
            continue
        iy, ix = int(round(y[i])), int(round(x[i]))
        r = int(radius)
        if tmask[max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1].any():
            continue
        sel.append(i)
    return np.array(sel, dtype=int)


def _match(cat, x, y, tol=0.7):
    cx, cy = np.asarray(cat["x"]), np.asarray(cat["y"])
    out = np.full(len(x), -1)
    for k, (a, b) in enumerate(zip(x, y)):
        d = np.hypot(cx - a, cy - b)
        j = int(np.argmin(d))
        if d[j] < tol:
            out[k] = j
    return out


def test_every_quadrant_photometered(night):
    _, store, keys, statuses, _ = night
    for key, status in zip(keys, statuses):
        assert status.ok, str(status)
        assert status.key == key.filename and status.stage == "photom"
        assert status.infobits & PHOTOM_INFOBITS == 0, str(status)
        hdr = read_header(store.path(key))
        for card in ("MAGZP", "MAGZPUNC", "MAGZPRMS", "CLRCOEFF", "CLRCOUNC", "ZPCLRCOV", "PCOLOR", "NMATCHES",
                     "ZPMED", "ZPAVG", "SEEING", "MAGLIM", "MAGLIMEM", "FIXAPERS", "APCOR1", "APCORUN6", "PHOHASH"):
            assert card in hdr, card
        assert hdr["FIXAPERS"] == "2,3,4,6,10,14"
        assert hdr["NMATCHES"] >= 30 and hdr["MAGZPRMS"] < 0.05
        # aperture corrections grow towards zero with the aperture, as the real header's
        apcor = [hdr[f"APCOR{i}"] for i in range(1, 7)]
        assert apcor[0] < apcor[1] < apcor[2] < apcor[3] < 0.02 and abs(apcor[5]) < 0.03
        assert read_header(store.path(key.with_suffix("mskimg")))["MAGZP"] == hdr["MAGZP"]
        psfcat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
        for col in ("sourceid", "ra", "dec", "flux", "sigflux", "mag", "sigmag", "snr", "chi", "sharp", "flags"):
            assert col in psfcat.colnames, col
        assert len(psfcat) > 100 and np.isfinite(psfcat["mag"][psfcat["flags"] == 0]).mean() > 0.95
        sexcat = Table.read(store.path(key.with_suffix("sexcat")), hdu="SOURCES")
        assert sexcat["flux_aper"].shape == (len(sexcat), 6) and "mag_aper" in sexcat.colnames
        assert store.exists(key.with_suffix("sciimgpsf"))


def test_zero_point_and_colour_term_against_truth(night):
    _, store, keys, _, camera = night
    dzp, dk = [], []
    for key in keys:
        truth, thdr, _ = _truth(store, key)
        hdr = read_header(store.path(key))
        dzp.append(hdr["MAGZP"] - _true_zp(truth, _scale(store, key, camera, thdr)))
        dk.append(hdr["CLRCOEFF"] - thdr["CLRCOEFF"])
    print(f"\nMAGZP - true: {np.round(dzp, 4).tolist()}; CLRCOEFF - true: {np.round(dk, 3).tolist()}")
    # the PSF model's normalisation errs by up to ~1 % on some quadrant-images (see the issue notes)
    assert abs(np.mean(dzp)) < 0.01 and np.max(np.abs(dzp)) < 0.02
    assert np.max(np.abs(dk)) < 0.03


def test_calibrated_magnitudes_against_truth(night):
    """What users read: the psfcat's calibrated magnitudes (MAGZP - 2.5 log10 flux) of isolated stars
    against their true magnitudes in the ZTF system, per quadrant-image (the zero point absorbs the PSF
    model's own normalisation). ``mag = m_PS1 - CLRCOEFF c`` and the truth is ``m_PS1 - k c``: they
    agree to ``(k - CLRCOEFF) c``, a few mmag."""
    _, store, keys, _, _ = night
    offsets = []
    for key in keys:
        truth, _, tmask = _truth(store, key)
        psfcat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
        idx = _isolated_bright(truth, tmask, tmask.shape, mag_range=(14.0, 19.0), radius=6.0)
        j = _match(psfcat, np.asarray(truth["x"])[idx], np.asarray(truth["y"])[idx])
        ok = (j >= 0)
        idx, j = idx[ok], j[ok]
        good = np.asarray(psfcat["flags"])[j] == 0
        idx, j = idx[good], j[good]
        d = np.asarray(psfcat["mag"])[j] - np.asarray(truth["mag"])[idx]
        offsets.append(float(np.median(d)))
    print(f"\ncalibrated - true magnitude (median per quadrant-image): {np.round(offsets, 4).tolist()}")
    assert np.max(np.abs(offsets)) < 0.01


def test_psf_fluxes_against_truth(night):
    """PSF-fit fluxes of isolated stars: bias < 0.5 % for bright stars; pulls of unit width at S/N 20-200
    (beyond, the PSF model's own errors add to the photon noise: reported, not asserted)."""
    _, store, keys, _, camera = night
    ratios, pulls, snr = [], [], []
    for key in keys:
        truth, thdr, tmask = _truth(store, key)
        scale = _scale(store, key, camera, thdr)
        psfcat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
        idx = _isolated_bright(truth, tmask, scale.shape, mag_range=(13.5, 20.5), radius=6.0)
        j = _match(psfcat, np.asarray(truth["x"])[idx], np.asarray(truth["y"])[idx])
        ok = j >= 0
        idx, j = idx[ok], j[ok]
        j_ok = np.asarray(psfcat["flags"])[j] == 0
        idx, j = idx[j_ok], j[j_ok]
        iy = np.rint(np.asarray(truth["y"])[idx]).astype(int)
        ix = np.rint(np.asarray(truth["x"])[idx]).astype(int)
        true_dn = np.asarray(truth["flux_e"])[idx] * scale[iy, ix]
        flux = np.asarray(psfcat["flux"])[j]
        err = np.asarray(psfcat["sigflux"])[j]
        ratios.extend(flux / true_dn)
        pulls.extend((flux - true_dn) / err)
        snr.extend(true_dn / err)
    ratios, pulls, snr = np.array(ratios), np.array(pulls), np.array(snr)
    print()
    for lo, hi in ((20, 50), (50, 100), (100, 200), (200, 500), (500, 1e5)):
        s = (snr >= lo) & (snr < hi)
        p = pulls[s]
        if s.sum() < 3:
            continue
        print(f"S/N {lo:4.0f}-{hi:<6.0f} {s.sum():4d} stars: flux/true {np.median(ratios[s]):.4f}, pulls mean "
              f"{p.mean():+.2f} std {p.std():.2f} robust {1.4826 * np.median(np.abs(p - np.median(p))):.2f}")
    bright = snr >= 100
    assert bright.sum() >= 100
    assert abs(np.median(ratios[bright]) - 1.0) < 0.005
    mid = (snr >= 20) & (snr < 200)
    assert mid.sum() >= 300
    robust = 1.4826 * np.median(np.abs(pulls[mid] - np.median(pulls[mid])))
    assert 0.9 <= robust <= 1.1 and 0.9 <= np.std(pulls[mid]) <= 1.15
    assert abs(np.median(pulls[mid])) < 0.15


def test_maglim_against_measured_detection_limit(night):
    """MAGLIM (from the PSF catalog's reported uncertainties) against the 5-sigma limit measured on the
    image: the true zero point and five times the scatter of forced PSF fluxes at random positions away
    from detectable stars (true sky subtracted; the faint sources below the detection limit are part of
    the noise a faint point source sees, as on a real image)."""
    from ztfsds.photom import PSFModel, forced_photometry

    _, store, keys, _, camera = night
    diffs = []
    for key in keys:
        truth, thdr, tmask = _truth(store, key)
        hdr = read_header(store.path(key))
        sci, _ = read_image(store.path(key))
        scale = _scale(store, key, camera, thdr)
        with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
            psf = PSFModel.from_hdulist(hdul)
        x, y = _random_sky(truth, tmask, 600, np.random.default_rng(key.qid))
        res = forced_photometry(sci - _true_sky(thdr, scale), psf, x, y, bkg_rms=float(hdr["SKYSIG"]))
        sigma = 1.4826 * np.median(np.abs(res["flux"] - np.median(res["flux"])))
        m5 = _true_zp(truth, scale) - 2.5 * math.log10(5.0 * sigma)
        diffs.append(hdr["MAGLIM"] - m5)
    print(f"\nMAGLIM - measured 5-sigma limit: {np.round(diffs, 3).tolist()}")
    assert abs(np.mean(diffs)) < 0.1 and np.max(np.abs(diffs)) < 0.15


def test_seeing_against_independent_fwhm(night):
    from photutils.psf import fit_fwhm

    _, store, keys, _, _ = night
    for key in keys[:2]:
        hdr = read_header(store.path(key))
        sci, _ = read_image(store.path(key))
        psfcat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
        sel = ((psfcat["flags"] == 0) & (psfcat["snr"] > 50) & (psfcat["snr"] < 500) & (psfcat["x"] > 10)
               & (psfcat["x"] < SIZE - 11) & (psfcat["y"] > 10) & (psfcat["y"] < SIZE - 11)
               & (psfcat["group_size"] == 1))
        data = sci - np.float32(hdr["MEDSKY"])
        fw = fit_fwhm(data, xypos=np.column_stack([psfcat["x"][sel], psfcat["y"][sel]]), fit_shape=7)
        print(f"\nSEEING {hdr['SEEING']:.3f} px; photutils fit_fwhm median {np.median(fw):.3f} px ({sel.sum()} stars)")
        assert hdr["SEEING"] == pytest.approx(float(np.median(fw)), rel=0.05)


def _true_sky(thdr, scale):
    """The true sky of a quadrant in image DN (truth header: centre level and gradients)."""
    ny, nx = scale.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    u_, v_ = (xx - (nx - 1) / 2) / nx, (yy - (ny - 1) / 2) / ny
    return thdr["SKYE"] * (1.0 + thdr["SKYGRADX"] * u_ + thdr["SKYGRADY"] * v_) * scale


def _random_sky(truth, tmask, n, rng):
    """Random positions at least 10 px from any star brighter than r = 21 (and 30 px from r < 16),
    away from artefacts."""
    tx, ty, tm = np.asarray(truth["x"]), np.asarray(truth["y"]), np.asarray(truth["mag"])
    out = []
    while len(out) < n:
        x, y = rng.uniform(20, SIZE - 21, 2)
        d = np.hypot(tx - x, ty - y)
        if np.any((d < 10) & (tm < 21)) or np.any((d < 30) & (tm < 16)):
            continue
        if tmask[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7].any():
            continue
        out.append((x, y))
    return np.array(out).T


def _empty_sky(truth, tmask, n, rng, radius=10.0):
    """Positions with no simulated source (of any brightness) within ``radius`` px and no artefact."""
    tx, ty = np.asarray(truth["x"]), np.asarray(truth["y"])
    bright = np.asarray(truth["mag"]) < 17.0
    out = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        x, y = rng.uniform(20, SIZE - 21, 2)
        d = np.hypot(tx - x, ty - y)
        if np.any(d < radius) or np.any(bright & (d < 40)):
            continue
        if tmask[int(y) - 8:int(y) + 9, int(x) - 8:int(x) + 9].any():
            continue
        out.append((x, y))
    assert len(out) == n
    return np.array(out).T


def test_forced_photometry_on_empty_sky_is_zero(night):
    """Forced PSF photometry where nothing is (the true sky subtracted): mean zero, unit pulls."""
    from ztfsds.photom import PSFModel, forced_photometry

    _, store, keys, _, camera = night
    pulls = []
    for key in keys:
        truth, thdr, tmask = _truth(store, key)
        sci, hdr = read_image(store.path(key))
        var, _ = read_image(store.path(key.with_suffix("varimg")))
        msk, _ = read_image(store.path(key.with_suffix("mskimg")))
        with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
            psf = PSFModel.from_hdulist(hdul)
        x, y = _empty_sky(truth, tmask, 60, np.random.default_rng(10 + key.qid))
        res = forced_photometry(sci - _true_sky(thdr, _scale(store, key, camera, thdr)), psf, x, y,
                                varimg=var, mskimg=msk)
        pulls.extend(np.asarray(res["flux"] / res["flux_err"]))
    pulls = np.array(pulls)
    print(f"\n{len(pulls)} empty-sky positions: pulls mean {pulls.mean():+.3f} (+- {1 / math.sqrt(len(pulls)):.3f}) "
          f"std {pulls.std():.3f}")
    assert abs(pulls.mean()) < 3.0 / math.sqrt(len(pulls))
    assert 0.9 < pulls.std() < 1.1


def test_forced_photometry_service_on_sky_and_stars(night):
    """The service on science images (background from the image's own map): blank-sky epochs scatter
    about zero within a fraction of their uncertainty; every epoch of each position is returned."""
    _, store, keys, _, _ = night
    key = keys[2]
    truth, _, tmask = _truth(store, key)
    x, y = _empty_sky(truth, tmask, 100, np.random.default_rng(2), radius=6.0)
    ra, dec = WCS(read_header(store.path(key))).all_pix2world(x, y, 0)
    table = forced_photometry_service(store, ra, dec, image="sci")
    ok = usable(table)
    assert set(table["procstatus"][ok]) == {"57"}      # no catalog source within 5": a remark
    pulls = np.asarray(table["forcediffimflux"])[ok] / np.asarray(table["forcediffimfluxunc"])[ok]
    print(f"\n{ok.sum()} blank-sky epochs (image background): pulls mean {pulls.mean():+.2f} std {pulls.std():.2f}")
    assert ok.sum() >= 190      # two epochs of each position
    assert set(np.asarray(table["jd"]).round(5)) == {round(float(read_header(store.path(k))["OBSJD"]), 5)
                                                   for k in keys if k.qid == key.qid}
    assert abs(np.median(pulls)) < 0.5 and 0.85 < pulls.std() < 1.2


def test_forced_photometry_on_stars_gives_their_flux(night):
    _, store, keys, _, _ = night
    key = keys[1]
    psfcat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
    sel = (psfcat["flags"] == 0) & (psfcat["snr"] > 30) & (psfcat["group_size"] == 1)
    cat = psfcat[sel][:100]
    table = forced_photometry_service(store, np.asarray(cat["ra"]), np.asarray(cat["dec"]), image="sci")
    jd = read_header(store.path(key))["OBSJD"]
    same = np.isclose(np.asarray(table["jd"]), jd) & (np.asarray(table["procstatus"]) == "0")
    ratio = np.asarray(table["forcediffimflux"])[same] / np.asarray(cat["flux"])[np.asarray(table["posid"])[same]]
    print(f"\nforced / PSF-catalog flux on {same.sum()} stars: median {np.median(ratio):.4f}")
    assert same.sum() >= 80
    assert abs(np.median(ratio) - 1.0) < 0.01
    for col in ("zpdiff", "sciinpseeing", "scibckgnd", "ncalmatches", "diffmaglim", "exptime", "pid"):
        assert np.all(np.asarray(table[col])[same] > 0), (col, np.asarray(table[col])[same][:5])
    d = np.asarray(table["dnearestrefsrc"])[same]
    # the star itself, in each epoch's own catalog
    assert np.median(d) < 0.1 and np.all(d < 1.5), d[~(d < 0.5)]


def test_rerun_is_idempotent(night):
    _, store, keys, _, _ = night
    key = keys[0]
    before = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
    hdr0 = read_header(store.path(key))
    status = run_photom(key, store)
    assert status.ok
    after = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
    hdr1 = read_header(store.path(key))
    assert np.array_equal(np.asarray(before["flux"]), np.asarray(after["flux"]))
    for card in ("MAGZP", "MAGLIM", "SEEING", "INFOBITS", "APCOR1"):
        assert hdr0[card] == hdr1[card]
    assert not list(store.path(key).parent.glob("*.tmp*"))


def test_without_sexcat_is_a_clear_failure(night, tmp_path):
    _, store, keys, _, _ = night
    other = ProductStore(tmp_path)
    for suffix in ("sciimg", "mskimg"):
        src = store.path(keys[0].with_suffix(suffix))
        dst = other.path(keys[0].with_suffix(suffix))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    status = run_photom(keys[0], other)
    assert not status.ok and "sexcat" in status.message
    assert status.infobits & int(InfoBits.PSF_FAILED)


def test_too_few_stars_sets_psf_bit(night, tmp_path):
    """A quadrant whose sources are all removed: no PSF (bit 20), no calibration (bit 8), the aperture
    catalog is still written."""
    _, store, keys, _, _ = night
    other = ProductStore(tmp_path)
    key = keys[0]
    for suffix in ("sciimg", "mskimg", "varimg"):
        dst = other.path(key.with_suffix(suffix))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(store.path(key.with_suffix(suffix)).read_bytes())
    sexcat = Table.read(store.path(key.with_suffix("sexcat")), hdu="SOURCES")
    with fits.open(store.path(key.with_suffix("sexcat"))) as hdul:
        primary = hdul[0].header.copy()
    few = sexcat[sexcat["snr"] < 8][:15]
    hdu = fits.table_to_hdu(few)
    hdu.name = "SOURCES"
    fits.HDUList([fits.PrimaryHDU(header=primary), hdu]).writeto(other.path(key.with_suffix("sexcat")))
    status = run_photom(key, other)
    assert not status.ok
    assert status.infobits & int(InfoBits.PSF_FAILED) and status.infobits & int(InfoBits.PHOTCAL_FAILED)
    assert status.infobits & int(InfoBits.FEW_SEX_SOURCES)
    assert read_header(other.path(key))["INFOBITS"] & int(InfoBits.PSF_FAILED)
    assert Table.read(other.path(key.with_suffix("sexcat")), hdu="SOURCES")["flux_aper"].shape == (15, 6)


def test_forced_phot_command(night, tmp_path, capsys):
    _, store, keys, _, _ = night
    psfcat = Table.read(store.path(keys[0].with_suffix("psfcat")), hdu="PSFCAT")
    star = psfcat[(psfcat["flags"] == 0) & (psfcat["snr"] > 30)][0]
    pos = tmp_path / "pos.csv"
    pos.write_text(f"ra,dec\n{star['ra']},{star['dec']}\n{star['ra'] + 0.001},{star['dec']}\n")
    code = main(["forced-phot", "--positions", str(pos), "--image", "sci", "--data", str(store.root),
                 "--out", str(tmp_path / "fp")])
    assert code == 0
    files = sorted((tmp_path / "fp").glob("forcedphotometry_*_lc.txt"))
    assert len(files) == 2
    from ztfsds.photom import read_forced_photometry

    table = read_forced_photometry(files[0])
    assert len(table) == 2 and np.all(table["forcediffimsnr"] > 20)
    code = main(["forced-phot", "--ra", str(star["ra"]), "--dec", str(star["dec"]), "--image", "sci",
                 "--data", str(store.root)])
    assert code == 0 and "forcediffimflux" in capsys.readouterr().out
    # no difference images yet: no epochs (procstatus 63), exit 1
    code = main(["forced-phot", "--ra", str(star["ra"]), "--dec", str(star["dec"]), "--data", str(store.root)])
    assert code == 1 and "63" in capsys.readouterr().err


@pytest.mark.slow
def test_full_size_quadrant(tmp_path):
    """A real-size quadrant through calib, astrometry and photometry: the zero point against the truth,
    and the photometry stage's peak memory (tracemalloc sees numpy's buffers) well under 2 GB."""
    import time
    import tracemalloc

    result = simulate_night(tmp_path, fields=[655], ccds=[13], nexp=1, filters=["zr"], size=None, seed=6,
                            nbias=3, nflat=3)
    store = ProductStore(tmp_path)
    build_library(store, NIGHT)
    build_catalogs(store, [655], ccds=[13])
    raw = result.science[0]
    assert all(s.ok for s in run_calib(raw, store))
    key = ProductKey.parse(raw.name).quadrant(2, "sciimg")
    assert run_astrom(key, store).ok
    tracemalloc.start()
    t0 = time.perf_counter()
    status = run_photom(key, store)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert status.ok, str(status)
    hdr = read_header(store.path(key))
    with fits.open(truth_path(store, ProductKey.parse(raw.name))) as hdul:
        truth, thdr = Table(hdul["Q2"].data), hdul["Q2"].header
    camera = make_camera(6, shape=(3080, 3072), ccdids=[13])
    flat, _ = read_image(store.path(ProductKey.parse(hdr["CIDHIFLT"])))
    dzp = hdr["MAGZP"] - _true_zp(truth, camera.response(13, 2, "zr") / (thdr["GAIN"] * flat))
    psfcat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
    print(f"\nfull quadrant: {len(psfcat)} PSF-fit sources, MAGZP - true {dzp:+.4f}, MAGLIM {hdr['MAGLIM']}, "
          f"SEEING {hdr['SEEING']} px, {elapsed:.1f} s, peak traced memory {peak / 2**20:.0f} MiB; {status}")
    assert abs(dzp) < 0.02
    assert len(psfcat) > 5000 and 20.0 < hdr["MAGLIM"] < 22.5
    assert peak < 1.5 * 2**30


@pytest.mark.slow
def test_real_quadrant_maglim_and_seeing():
    """The real IPAC quadrant: our PSF catalog's 5-sigma limit (at the header's zero point) within
    0.2 mag of its MAGLIM, and our SEEING within 5 % of its SEEING."""
    import os
    from pathlib import Path

    from ztfsds.astrom import extract
    from ztfsds.astrom.extraction import background
    from ztfsds.config import PhotomParams
    from ztfsds.photom import build_psf, limiting_magnitude, psf_photometry

    root = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
    stem = "ztf_20200924431759_000655_zr_c13_o_q3"
    if not (root / f"{stem}_sciimg.fits").exists():
        pytest.skip(f"real quadrant not found in {root}")
    sci = fits.getdata(root / f"{stem}_sciimg.fits").astype(np.float32)
    hdr = fits.getheader(root / f"{stem}_sciimg.fits")
    msk = fits.getdata(root / f"{stem}_mskimg.fits").astype(np.int16)
    sci = np.where(np.isfinite(sci), sci, 0.0).astype(np.float32)
    p = PhotomParams()
    src = extract(sci, msk, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
    bkg = background(sci, msk)
    psf = build_psf(sci, msk, src, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
    fit = psf_photometry(sci, psf, src["x"], src["y"], src["flux"], mskimg=msk, background=bkg.level,
                         bkg_rms=bkg.rms, gain=hdr["GAIN"], saturate=hdr["SATURATE"], psf_error=p.psf_error)
    ok = np.asarray(fit["flags"]) == 0
    maglim = limiting_magnitude(np.asarray(fit["flux"])[ok], np.asarray(fit["flux_err"])[ok], hdr["MAGZP"])
    seeing = psf.fwhm((sci.shape[1] - 1) / 2, (sci.shape[0] - 1) / 2)
    print(f"\nreal quadrant: MAGLIM ours {maglim:.2f} vs {hdr['MAGLIM']}; SEEING ours {seeing:.3f} vs {hdr['SEEING']}")
    assert abs(maglim - hdr["MAGLIM"]) < 0.2
    assert seeing == pytest.approx(hdr["SEEING"], rel=0.05)
