"""The astrometric solution: recovery of IPAC's real TPV solution, the simulator's truth, and failures.

The real-WCS tests take the WCS SCAMP fitted to a real ZTF quadrant (tests/data/real_sciimg_header.txt,
the primary header of ``ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits``), put stars on it, degrade the
prior (shift, rotation, scale, no distortion) and ask for the original WCS back. The simulator tests use
the truth of a simulated exposure: true star positions, the Gaia-like catalogue moved to the epoch, and the
prior the pipeline would build from the raw headers.
"""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ztfsds import camera
from ztfsds.astrom.solve import MIN_STARS, degree_for_matches, prior_wcs, solve_wcs
from ztfsds.config import AstromParams
from ztfsds.errors import AstrometryError, InputError, MissingKeywordError
from ztfsds.products import InfoBits, ProductKey, ProductStore
from ztfsds.sim import simulate_night, truth_path

J2016_JD = 2457389.0
FAILED = int(InfoBits.ASTROM_FAILED)
FEW = int(InfoBits.FEW_ASTROM_MATCHES)


def _sep_mas(ra1, dec1, ra2, dec2):
    return np.hypot(((ra1 - ra2 + 180) % 360 - 180) * np.cos(np.radians(dec1)), dec1 - dec2) * 3.6e6


def _wcs_difference(w1, w2, x, y):
    """Separations [mas] between two WCSs at 0-based pixels."""
    ra1, dec1 = w1.all_pix2world(x, y, 0)
    ra2, dec2 = w2.all_pix2world(x, y, 0)
    return _sep_mas(ra1, dec1, ra2, dec2)


def _grid(shape, n=40):
    nx, ny = shape
    gx, gy = np.meshgrid(np.linspace(-0.5, nx - 0.5, n), np.linspace(-0.5, ny - 0.5, n))
    return gx.ravel(), gy.ravel()


# --------------------------------------------------------------------------------------------------
# Real IPAC solution
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_header(test_data_dir):
    return fits.Header.fromtextfile(test_data_dir / "real_sciimg_header.txt")


@pytest.fixture(scope="module")
def real_wcs(real_header):
    w = WCS(real_header)
    assert w.pixel_shape == (3072, 3080)
    return w


def _real_scene(wcs, seed, *, n=3000, noise=0.03, drop=0.2, spurious=0.2, shape=(3072, 3080)):
    """Stars on ``wcs``: reference (all), detections (80 % of them + noise, plus 20 % spurious ones)."""
    rng = np.random.default_rng(seed)
    nx, ny = shape
    x, y = rng.uniform(-0.5, nx - 0.5, n), rng.uniform(-0.5, ny - 0.5, n)
    mag = 14.0 + 7.0 * rng.power(2.0, n)  # more faint stars than bright ones
    ra, dec = wcs.all_pix2world(x, y, 0)
    ref = Table({"ra": ra, "dec": dec, "ra_error": np.full(n, 0.5), "dec_error": np.full(n, 0.5),
                 "phot_g_mean_mag": mag})
    keep = rng.random(n) > drop
    nk = int(keep.sum())
    ns = int(spurious * nk)
    det = Table({
        "x": np.r_[x[keep] + rng.normal(0, noise, nk), rng.uniform(0, nx - 1, ns)],
        "y": np.r_[y[keep] + rng.normal(0, noise, nk), rng.uniform(0, ny - 1, ns)],
        # detections' brightness order differs from the catalogue's (colours): 0.3 mag scatter
        "flux": 10 ** (-0.4 * (np.r_[mag[keep] + rng.normal(0, 0.3, nk), 14.0 + 7.0 * rng.power(2.0, ns)] - 25)),
        "x_err": np.full(nk + ns, noise), "y_err": np.full(nk + ns, noise),
        "flags": np.zeros(nk + ns, dtype=np.int32),
    })
    return det[rng.permutation(len(det))], ref


def _degraded_prior(wcs, shift_arcmin, rot_deg, scale_error=0.0, direction=(0.6, 0.8)):
    """TAN only (no distortion), CRVAL shifted, CD rotated and rescaled."""
    p = WCS(naxis=2)
    p.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    p.wcs.crpix = wcs.wcs.crpix
    p.wcs.crval = camera.tangent_deproject(direction[0] * shift_arcmin / 60, direction[1] * shift_arcmin / 60,
                                           *wcs.wcs.crval)
    t = np.radians(rot_deg)
    p.wcs.cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ wcs.wcs.cd * (1 + scale_error)
    p.pixel_shape = wcs.pixel_shape
    p.wcs.set()
    return p


@pytest.mark.parametrize("shift, rot, scale_error", [(1.0, 0.3, 0.0), (2.0, 0.5, 0.001), (2.0, -0.5, -0.001)])
def test_recovers_real_tpv_solution(real_wcs, shift, rot, scale_error):
    det, ref = _real_scene(real_wcs, 1)
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, shift, rot, scale_error))
    assert res.ok, res.message
    assert res.infobits == 0, InfoBits.describe(res.infobits)
    # the detections' pixels (real and spurious) map where IPAC's solution maps them
    d = _wcs_difference(res.wcs, real_wcs, det["x"], det["y"])
    assert np.sqrt(np.mean(d**2)) < 50.0
    # and so does every pixel of the quadrant, corners included (cubic fit to SCAMP's quartic)
    g = _wcs_difference(res.wcs, real_wcs, *_grid(real_wcs.pixel_shape))
    assert np.sqrt(np.mean(g**2)) < 20.0 and g.max() < 60.0
    h = res.header
    assert h["CTYPE1"] == "RA---TPV" and h["CTYPE2"] == "DEC--TPV"
    assert (h["CRPIX1"], h["CRPIX2"]) == (1536.5, 1540.5)
    assert "PV1_3" not in h and "PV1_10" in h and "PV1_11" not in h and "PV2_12" not in h
    assert 2300 <= h["ASTROMN"] == res.nmatches <= 2400
    # 0.03 px of noise is 30 mas per axis; ASTRRMS in degrees
    assert 0.025 < h["ASTRRMS1"] * 3600 < 0.035 and 0.025 < h["ASTRRMS2"] * 3600 < 0.035
    assert 0.4 < h["ASTCHI2"] < 1.2 and h["ASTIRMS1"] == 0.0
    assert abs(h["ASTOFFS"] - 60 * shift) < 3.0 and abs(h["ASTROT"] - rot) < 0.02
    assert len(res.matches) >= res.nmatches and res.matches["used"].sum() == res.nmatches
    assert res.degree == 3 and res.transform.ok


def test_quartic_fit_reproduces_ipac_quartic(real_wcs):
    det, ref = _real_scene(real_wcs, 2)
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 2.0, 0.5), params=AstromParams(distortion_degree=4))
    assert res.ok and res.degree == 4 and "PV1_16" in res.header and "PV2_16" in res.header
    g = _wcs_difference(res.wcs, real_wcs, *_grid(real_wcs.pixel_shape))
    assert np.sqrt(np.mean(g**2)) < 8.0 and g.max() < 30.0


def test_sip_model(real_wcs):
    det, ref = _real_scene(real_wcs, 3)
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 1.5, -0.3), params=AstromParams(distortion="sip"))
    assert res.ok and res.header["CTYPE1"] == "RA---TAN-SIP" and res.wcs.sip is not None
    g = _wcs_difference(res.wcs, real_wcs, *_grid(real_wcs.pixel_shape))
    assert np.sqrt(np.mean(g**2)) < 20.0 and g.max() < 60.0


def test_prior_from_the_real_header(real_header, real_wcs):
    """IPAC's own pointing keywords give a prior 2.1' off; the solver starts from it."""
    prior = prior_wcs(real_header)
    assert prior.pixel_shape == (3072, 3080)
    off = SkyCoord(*prior.wcs.crval, unit="deg").separation(SkyCoord(*real_wcs.wcs.crval, unit="deg")).arcsec
    assert 100 < off < 150
    det, ref = _real_scene(real_wcs, 4)
    res = solve_wcs(det, ref, prior)
    assert res.ok and np.sqrt(np.mean(_wcs_difference(res.wcs, real_wcs, det["x"], det["y"]) ** 2)) < 50.0


def test_header_round_trip_and_update(real_header, real_wcs):
    det, ref = _real_scene(real_wcs, 5)
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 1.0, 0.2))
    x, y = _grid((3072, 3080), 15)
    # the cards written through a FITS file give the same WCS, both directions
    text = fits.Header(res.header).tostring()
    back = WCS(fits.Header.fromstring(text))
    assert _wcs_difference(back, res.wcs, x, y).max() < 1e-6
    ra, dec = res.wcs.all_pix2world(x, y, 0)
    xx, yy = back.all_world2pix(ra, dec, 0)
    assert max(np.abs(xx - x).max(), np.abs(yy - y).max()) < 1e-6
    # replacing IPAC's solution in its own header: old PV terms gone, INFOBITS or-ed
    header = real_header.copy()
    header["INFOBITS"] = 1
    res.update_header(header)
    assert "PV1_16" not in header and header["ASTROMN"] == res.nmatches and header["INFOBITS"] == 1
    assert list(header.keys()).count("CTYPE1") == 1
    assert _wcs_difference(WCS(header), res.wcs, x, y).max() < 1e-6


def test_flagged_detections_are_not_used(real_wcs):
    det, ref = _real_scene(real_wcs, 6)
    det["flags"][::3] = 256
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 1.0, 0.2))
    assert res.ok and np.all(np.asarray(det["flags"])[res.matches["det_row"]] == 0)


def test_small_subarray_of_the_real_quadrant(real_wcs):
    """256 x 256 px, ~40 stars with 30 % missing and 30 % spurious, prior off by 2' and 0.5 deg."""
    sub = real_wcs.deepcopy()
    sub.wcs.crpix = sub.wcs.crpix - [1408, 1412]
    sub.pixel_shape = (256, 256)
    sub.wcs.set()
    ok = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        # the reference covers the image and the search margin around it
        big = 256 + 2 * 200
        n = int(60 * (big / 256) ** 2)
        x, y = rng.uniform(-200, 456, n), rng.uniform(-200, 456, n)
        mag = 19.5 + np.log10(rng.random(n)) / 0.3
        ra, dec = sub.all_pix2world(x, y, 0)
        ref = Table({"ra": ra, "dec": dec, "phot_g_mean_mag": mag})
        on = np.flatnonzero((x > 0) & (x < 255) & (y > 0) & (y < 255) & (mag < 19) & (rng.random(n) > 0.3))
        nsp = int(0.3 * len(on) / 0.7)
        det = Table({"x": np.r_[x[on] + rng.normal(0, 0.1, len(on)), rng.uniform(0, 255, nsp)],
                     "y": np.r_[y[on] + rng.normal(0, 0.1, len(on)), rng.uniform(0, 255, nsp)],
                     "flux": 10 ** (-0.4 * np.r_[mag[on] + rng.normal(0, 0.5, len(on)), rng.uniform(15, 19, nsp)])})
        assert 20 <= len(on) <= 60
        res = solve_wcs(det, ref, _degraded_prior(sub, 2.0, 0.5 * (-1) ** seed))
        if res.ok:
            ok += 1
            g = _wcs_difference(res.wcs, sub, *_grid((256, 256), 10))
            assert g.max() < 300.0  # a linear/quadratic fit to ~25 stars of 0.1 px: noise, not a wrong match
        else:
            assert res.wcs is None and res.infobits & FAILED
    assert ok >= 4


def test_corner_cutout_far_from_crpix(real_wcs):
    """A 512 x 512 cut-out of the quadrant's corner: CRPIX (the quadrant centre) is 1800 px away."""
    cut = real_wcs.deepcopy()
    cut.wcs.crpix = cut.wcs.crpix - [2560, 2568]
    cut.pixel_shape = (512, 512)
    cut.wcs.set()
    det, ref = _real_scene(cut, 14, n=400, shape=(512, 512))
    res = solve_wcs(det, ref, _degraded_prior(cut, 2.0, 0.5))
    assert res.ok, res.message
    assert (res.header["CRPIX1"], res.header["CRPIX2"]) == (256.5, 256.5)
    g = _wcs_difference(res.wcs, cut, *_grid((512, 512)))
    assert g.max() < 30.0


# --------------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------------


def test_too_few_stars(real_wcs):
    det, ref = _real_scene(real_wcs, 7)
    res = solve_wcs(det[: MIN_STARS - 1], ref, _degraded_prior(real_wcs, 1.0, 0.3))
    assert not res.ok and res.wcs is None
    assert res.infobits & FAILED and res.infobits & FEW
    assert "too few" in res.message and res.header["ASTROMN"] == 0 and "CTYPE1" not in res.header
    assert len(res.matches) == 0 and np.isnan(res.rms_arcsec)
    with pytest.raises(AstrometryError, match="too few") as err:
        res.raise_if_failed("some_sciimg.fits")
    assert err.value.infobits == res.infobits
    header = fits.Header({"INFOBITS": 0, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 1.0})
    res.update_header(header)  # a failed solution leaves no (prior) WCS behind
    assert "CTYPE1" not in header and "CRVAL1" not in header and header["INFOBITS"] == res.infobits


def test_no_reference_stars(real_wcs):
    det, ref = _real_scene(real_wcs, 8)
    ref["ra"] = (ref["ra"] + 5.0) % 360.0
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 1.0, 0.3))
    assert not res.ok and res.infobits & FAILED and "reference stars" in res.message


def test_prior_outside_the_search_fails(real_wcs):
    det, ref = _real_scene(real_wcs, 9)
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 10.0, 0.3))
    assert not res.ok and res.wcs is None and res.infobits & FAILED
    assert "no asterism match" in res.message
    # the same prior is solved when the search is widened to cover it
    wide = AstromParams(prior_offset=700.0)
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 10.0, 0.3), params=wide)
    assert res.ok and np.sqrt(np.mean(_wcs_difference(res.wcs, real_wcs, det["x"], det["y"]) ** 2)) < 50.0


def test_clouds(real_wcs):
    """Only the brightest 5 % of the detections survive: still solved, with few-match bits if any."""
    det, ref = _real_scene(real_wcs, 10)
    bright = det[np.argsort(-np.asarray(det["flux"]))[: len(det) // 20]]
    res = solve_wcs(bright, ref, _degraded_prior(real_wcs, 2.0, 0.5, 0.001))
    assert res.ok, res.message
    assert np.sqrt(np.mean(_wcs_difference(res.wcs, real_wcs, det["x"], det["y"]) ** 2)) < 50.0
    # and 1 % of them: fails cleanly or solves correctly, never raises
    few = det[np.argsort(-np.asarray(det["flux"]))[: len(det) // 100]]
    res = solve_wcs(few, ref, _degraded_prior(real_wcs, 2.0, 0.5, 0.001))
    if res.ok:
        assert res.infobits & FEW
        assert np.sqrt(np.mean(_wcs_difference(res.wcs, real_wcs, det["x"], det["y"]) ** 2)) < 200.0
    else:
        assert res.infobits & FAILED


def test_unrelated_catalogue_fails(real_wcs):
    """Detections of one place against stars of another within the search: no match, no WCS."""
    det, _ = _real_scene(real_wcs, 11)
    _, ref = _real_scene(real_wcs, 12)
    res = solve_wcs(det, ref, _degraded_prior(real_wcs, 1.0, 0.3))
    assert not res.ok and res.wcs is None and res.infobits & FAILED


def test_bad_inputs_raise(real_wcs):
    det, ref = _real_scene(real_wcs, 13)
    with pytest.raises(InputError, match="flux"):
        solve_wcs(det["x", "y"], ref, real_wcs)
    with pytest.raises(InputError, match="phot_g_mean_mag"):
        solve_wcs(det, ref, real_wcs, mag_column="phot_g_mean_mag_typo")


def test_degree_rule():
    assert [degree_for_matches(n, 4) for n in (5, 15, 29, 30, 50, 74, 75)] == [1, 1, 1, 2, 3, 3, 4]
    assert degree_for_matches(10_000, 2) == 2


# --------------------------------------------------------------------------------------------------
# Prior from headers
# --------------------------------------------------------------------------------------------------


def test_prior_wcs_keywords():
    base = {"CCD_ID": 13, "QID": 3}
    full = camera.nominal_wcs(655, 13, 3)
    c = camera.field_center(655)
    for extra in ({"TELRAD": c.ra.deg, "TELDECD": c.dec.deg}, {"TELRA": "+03:40:14.59", "TELDEC": "+33:21:00.0"},
                  {"RAD": c.ra.deg, "DECD": c.dec.deg}, {"OBJRA": "+03h40m14.59s", "OBJDEC": "+33d21m00s"},
                  {"FIELDID": 655}):
        w = prior_wcs(fits.Header({**base, **extra}))
        assert np.allclose(w.wcs.crval, full.wcs.crval, atol=2e-5), extra
    w = prior_wcs(fits.Header({"CCDID": 13, "RCID": 50, "FIELDID": 655, "LTV1": -1408.0, "LTV2": -1412.0,
                               "NAXIS": 2, "NAXIS1": 256, "NAXIS2": 256}))
    assert w.wcs.crpix.tolist() == [128.5, 128.5] and w.pixel_shape == (256, 256)
    # a sub-array's pixel sees what the full quadrant's pixel - LTV sees
    assert _wcs_difference(w, full, np.array([0.0, 255.0]), np.array([0.0, 100.0])).max() > 1e3
    ra, dec = w.all_pix2world([0.0, 255.0], [0.0, 100.0], 0)
    ra2, dec2 = full.all_pix2world([1408.0, 1663.0], [1412.0, 1512.0], 0)
    assert _sep_mas(ra, dec, ra2, dec2).max() < 1e-6
    with pytest.raises(MissingKeywordError):
        prior_wcs(fits.Header({"CCD_ID": 13, "QID": 3}))
    with pytest.raises(MissingKeywordError):
        prior_wcs(fits.Header({"FIELDID": 655, "QID": 3}))


# --------------------------------------------------------------------------------------------------
# Simulator truth
# --------------------------------------------------------------------------------------------------


def _simulated(root, size, qid=3):
    """Detections, Gaia-like reference at the epoch, the pipeline's prior header and the truth."""
    r = simulate_night(root, fields=[655], ccds=[13], nexp=1, filters=["zr"], size=size, seed=1, nbias=1, nflat=1)
    store = ProductStore(root)
    raw = r.science[0]
    with fits.open(raw) as hdul:
        header = hdul[0].header.copy()
        header.update(hdul[qid].header)  # the quadrant HDU: QID, LTV1/LTV2, NAXISn
    tpath = truth_path(store, ProductKey.parse(raw.name))
    truth = Table.read(tpath, hdu=f"Q{qid}")
    theader = fits.getheader(tpath, f"Q{qid}")
    gaia = Table.read(root / "sim" / "catalogs" / "000655_c13_gaia.fits")
    years = (header["OBSJD"] - J2016_JD) / 365.25
    ref = Table({"ra": gaia["ra"] + gaia["pmra"] * years / 3.6e6 / np.cos(np.radians(gaia["dec"])),
                 "dec": gaia["dec"] + gaia["pmdec"] * years / 3.6e6,
                 "ra_error": np.hypot(gaia["ra_error"], gaia["pmra_error"] * years),
                 "dec_error": np.hypot(gaia["dec_error"], gaia["pmdec_error"] * years),
                 "phot_g_mean_mag": gaia["phot_g_mean_mag"]})
    t = truth[truth["on_image"] & ~truth["streak"]]
    snr = t["flux_e"] / np.sqrt(t["flux_e"] + 2.27 * t["fwhm"] ** 2 * (theader["SKYE"] + theader["READNOI"] ** 2))
    t = t[snr > 5]
    snr = snr[snr > 5]
    star = (t["kind"] == "star") | (t["kind"] == "variable")
    # centroid noise of an extraction: 0.6 FWHM / SNR (galaxies, 3x that, have no Gaia counterpart)
    sigma = 0.6 * t["fwhm"] / snr * np.where(star, 1.0, 3.0)
    rng = np.random.default_rng(size)
    det = Table({"x": t["x"] + rng.normal(0, sigma), "y": t["y"] + rng.normal(0, sigma), "flux": t["flux_e"],
                 "x_err": sigma, "y_err": sigma, "flags": np.where(t["flux_e"] > 3e6, 256, 0)})
    return det, ref, header, t[star & (snr > 20)], WCS(theader)


@pytest.fixture(scope="module")
def sim512(tmp_path_factory):
    return _simulated(tmp_path_factory.mktemp("astrom_sim"), 512)


def _truth_rms_mas(res, stars):
    ra, dec = res.wcs.all_pix2world(stars["x"], stars["y"], 0)
    dra = (ra - stars["ra"]) * np.cos(np.radians(stars["dec"])) * 3.6e6
    ddec = (dec - stars["dec"]) * 3.6e6
    return np.sqrt(np.mean(dra**2)), np.sqrt(np.mean(ddec**2))


def test_simulated_subarray(sim512):
    det, ref, header, stars, true_wcs = sim512
    prior = prior_wcs(header)
    assert prior.pixel_shape == (512, 512) and prior.wcs.crpix.tolist() == [256.5, 256.5]
    res = solve_wcs(det, ref, prior)
    assert res.ok, res.message
    assert len(stars) > 100
    assert max(_truth_rms_mas(res, stars)) < 40.0
    g = _wcs_difference(res.wcs, true_wcs, *_grid((512, 512)))
    assert g.max() < 60.0


@pytest.mark.parametrize("shift, rot", [(100.0, 0.4), (-120.0, -0.5)])
def test_simulated_subarray_bad_pointing(sim512, shift, rot):
    """The telescope's pointing keywords off by up to 134" and the prior turned by 0.5 deg."""
    det, ref, header, stars, _ = sim512
    h = header.copy()
    h["TELRAD"] = h["TELRAD"] + shift / 3600 / np.cos(np.radians(h["TELDECD"]))
    h["TELDECD"] = h["TELDECD"] - 0.5 * shift / 3600
    prior = prior_wcs(h)
    t = np.radians(rot)  # about the quadrant's centre (a focal-plane rotation would also move it)
    prior.wcs.cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ prior.wcs.cd
    prior.wcs.set()
    res = solve_wcs(det, ref, prior)
    assert res.ok, res.message
    assert max(_truth_rms_mas(res, stars)) < 40.0


@pytest.mark.slow
def test_simulated_full_quadrant(tmp_path):
    det, ref, header, stars, true_wcs = _simulated(tmp_path, None)
    res = solve_wcs(det, ref, prior_wcs(header))
    assert res.ok and res.infobits == 0, res.message
    assert max(_truth_rms_mas(res, stars)) < 40.0
    g = _wcs_difference(res.wcs, true_wcs, *_grid((3072, 3080)))
    assert g.max() < 40.0
