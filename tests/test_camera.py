"""The camera model against the facts of the real system.

Real numbers used here come from the real IPAC science quadrant
``ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits`` (field 655, CCD 13, quadrant 3, rcid 50):
its header (CRVAL, CD matrix, GAIN, READNOI, AMP_ID, AMP_NAME) and sky positions of its pixels computed
with its full TPV WCS.
"""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.time import Time

from ztfsds import camera
from ztfsds.errors import ZTFSDSError

# Real quadrant c13 q3 of field 655 (2020-09-24): pixel -> (RA, Dec) from its TPV WCS.
REAL_PIXELS = {
    (1.0, 1.0): (58.54692764, 36.16606841),
    (3072.0, 1.0): (57.47727025, 36.18984636),
    (3072.0, 3080.0): (57.45378537, 35.32415041),
    (1.0, 3080.0): (58.51181020, 35.30056055),
    (1536.5, 1540.5): (57.99734267, 35.74624211),
}
REAL_CD = np.array([[-2.811703032876e-04, -7.697098117566e-06], [7.721274603541e-06, -2.811698359281e-04]])
FIELD_655 = (55.06078, 33.35)


def fits_pix2sky(w, x, y):
    """SkyCoord of FITS (1-based) pixel coordinates (APE 14 pixel_to_world is 0-based)."""
    ra, dec = w.wcs_pix2world(np.asarray(x, float), np.asarray(y, float), 1)
    return SkyCoord(ra, dec, unit="deg")


# ---- identifiers ----------------------------------------------------------------------------------


def test_geometry_constants():
    assert camera.N_READOUT_CHANNELS == 64 == camera.N_CCDS * camera.QUADRANTS_PER_CCD
    assert camera.QUADRANT_SHAPE == (3080, 3072)
    assert (camera.QUADRANT_NAXIS1, camera.QUADRANT_NAXIS2) == (3072, 3080)
    assert camera.QUADRANT_CENTER == (1536.5, 1540.5)
    assert (camera.CCD_NAXIS1, camera.CCD_NAXIS2) == (6144, 6160)
    assert camera.OVERSCAN_SHAPE == (3080, 30)
    assert camera.RAW_QUADRANT_HDUS == (1, 2, 3, 4) and camera.RAW_OVERSCAN_HDUS == (5, 6, 7, 8)
    assert camera.ADC_MAX == 65535
    assert camera.PIXEL_SIZE == 15 * u.um
    assert camera.PIXEL_SCALE.to_value(u.arcsec / u.pix) == pytest.approx(1.012)


def test_rcid_round_trip_all_64():
    seen = set()
    for ccdid in range(1, 17):
        for qid in range(1, 5):
            r = camera.rcid(ccdid, qid)
            assert isinstance(r, int)
            assert camera.ccd_quadrant(r) == (ccdid, qid)
            seen.add(r)
    assert seen == set(range(64))


def test_rcid_real_header():
    # real sciimg header: CCDID = 13, QID = 3, RCID = 50
    assert camera.rcid(13, 3) == 50
    assert camera.ccd_quadrant(50) == (13, 3)


def test_rcid_vectorised():
    ccd, q = np.meshgrid(np.arange(1, 17), np.arange(1, 5), indexing="ij")
    r = camera.rcid(ccd, q)
    assert r.shape == (16, 4)
    np.testing.assert_array_equal(r.ravel(), np.arange(64))
    c2, q2 = camera.ccd_quadrant(r)
    np.testing.assert_array_equal(c2, ccd)
    np.testing.assert_array_equal(q2, q)
    assert camera.rcid(13.0, 3) == 50  # integral floats are accepted


@pytest.mark.parametrize(
    "call, bad",
    [
        (lambda: camera.rcid(17, 1), "17"),
        (lambda: camera.rcid(0, 1), "0"),
        (lambda: camera.rcid(1, 5), "5"),
        (lambda: camera.rcid(np.array([1, 2, 18]), 1), "18"),
        (lambda: camera.rcid(1.5, 1), "1.5"),
        (lambda: camera.rcid("3", 1), "'3'"),
        (lambda: camera.ccd_quadrant(64), "64"),
        (lambda: camera.ccd_quadrant(-1), "-1"),
        (lambda: camera.readout_channel(1, 7), "7"),
        (lambda: camera.filter_by_fid(4), "4"),
    ],
)
def test_bad_ids_raise_valueerror_naming_value(call, bad):
    with pytest.raises(ValueError, match=bad) as info:
        call()
    assert isinstance(info.value, ZTFSDSError)


def test_amplifier_mapping():
    # real header: qid 3 has AMP_ID 2, AMP_NAME 'F'
    assert camera.amp_id(3) == 2
    assert camera.amp_name(3) == "F"
    assert [camera.amp_name(q) for q in (1, 2, 3, 4)] == ["H", "G", "F", "E"]
    # IPAC tables: f, e, h, g <-> AMP_ID 2, 3, 0, 1
    for name, aid in zip("fehg", (2, 3, 0, 1)):
        assert camera.AMP_NAMES[aid] == name.upper()
        assert camera.qid_from_amp(name) == aid + 1
        assert camera.qid_from_amp(aid) == aid + 1
    with pytest.raises(ValueError):
        camera.qid_from_amp("x")


# ---- filters --------------------------------------------------------------------------------------


def test_filters():
    assert set(camera.FILTERS) == {"zg", "zr", "zi"}
    g, r, i = (camera.FILTERS[c] for c in ("zg", "zr", "zi"))
    assert (g.fid, r.fid, i.fid) == (1, 2, 3)
    assert (g.name, r.header_filter) == ("ZTF_g", "ZTF_r")  # real header FILTER = 'ZTF_r'
    assert (g.sky_brightness, r.sky_brightness, i.sky_brightness) == (22.01, 21.15, 19.89)
    assert (g.zero_point, r.zero_point, i.zero_point) == (26.325, 26.275, 25.660)
    assert (g.calibration_color, r.calibration_color, i.calibration_color) == ("g-r", "g-r", "r-i")
    for f in (g, r, i):
        assert f.wavelength_min < f.wavelength_mean < f.wavelength_max
        assert f.wavelength.unit == u.AA and f.bandwidth > 0 * u.AA
    assert g.wavelength_max < r.wavelength_min < r.wavelength_max < i.wavelength_max
    assert r.wavelength_mean == pytest.approx(6422.0)


@pytest.mark.parametrize("key", ["zr", "ZR", "ZTF_r", "r", 2, np.int64(2), "ztf_r "])
def test_get_filter_lookups(key):
    assert camera.get_filter(key) is camera.FILTERS["zr"]


def test_get_filter_unknown():
    with pytest.raises(ValueError, match="zq"):
        camera.get_filter("zq")
    assert camera.get_filter(camera.FILTERS["zi"]) is camera.filter_by_fid(3)


# ---- readout channels -----------------------------------------------------------------------------


def test_readout_channel_c13_q3():
    ch = camera.readout_channel(13, 3)
    assert (ch.rcid, ch.ccdid, ch.qid, ch.amp_id, ch.amp_name) == (50, 13, 3, 2, "F")
    assert (ch.raw_hdu, ch.overscan_hdu) == (3, 7)
    assert ch.gain == 6.0 and ch.read_noise == 9.0  # real header GAIN, READNOI
    assert 60000 <= ch.saturation <= camera.ADC_MAX
    with pytest.raises(Exception):
        ch.gain = 5.0  # frozen


def test_readout_channels_table():
    t = camera.readout_channels()
    assert len(t) == 64
    np.testing.assert_array_equal(t["rcid"], np.arange(64))
    np.testing.assert_array_equal(t["rcid"], camera.rcid(t["ccdid"], t["qid"]))
    np.testing.assert_array_equal(t["amp_id"], t["qid"] - 1)
    assert t["gain"].unit == u.electron / u.adu
    assert np.all(t["gain"] == 6.0) and np.all(t["read_noise"] == 9.0)
    t["gain"][0] = -1  # a copy: the cached table is untouched
    assert camera.readout_channels()["gain"][0] == 6.0


# ---- non-linearity --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "date, epoch",
    [
        ("2018-03-20", "201803"),
        ("2017-12-01", "201803"),
        ("2019-09-30T23:59:59", "201803"),
        ("2019-10-01", "201910"),
        (dt.date(2020, 4, 27), "201910"),
        (dt.datetime(2020, 4, 28, 0, 0, 1), "202004"),
        (Time(2459116.9317708, format="jd"), "202004"),  # the real sciimg OBSJD
    ],
)
def test_nonlinearity_epoch(date, epoch):
    assert camera.nonlinearity_epoch(date) == epoch


def test_nonlinearity_switch_mjd_constants():
    assert Time("2019-10-01", scale="utc").mjd == camera._NL_SWITCH_MJD[0][0]
    assert Time(camera.NONLINEARITY_EPOCHS["202004"], scale="utc").mjd == camera._NL_SWITCH_MJD[1][0]


def test_nonlinearity_coefficients_c13_q3():
    # the rows "13 f 2 ..." of the three IPAC tables
    assert camera.nonlinearity_coefficients(13, 3, "2018-06-01") == (-1.31e-11, 7.55e-07)
    assert camera.nonlinearity_coefficients(13, 3, "2020-01-01") == (-1.53e-11, 8.15e-07)
    assert camera.nonlinearity_coefficients(13, 3, "2020-09-24") == (-8.66e-12, 2.69e-07)
    with pytest.raises(ValueError):
        camera.nonlinearity_coefficients(13, 3, 2459116.9)
    with pytest.raises(ValueError):
        camera.nonlinearity_coefficients(13, 3, "not a date")


def test_nonlinearity_tables_complete():
    for epoch in camera.NONLINEARITY_EPOCHS:
        t = camera.nonlinearity_table(epoch)
        assert len(t) == 64
        np.testing.assert_array_equal(t["rcid"], np.arange(64))
        assert all(camera.AMP_NAMES[a] == n for a, n in zip(t["amp_id"], t["amp_name"]))
        assert np.all(t["a"] < 0) and np.all(t["b"] > 0)
        # the correction is monotonic over the whole ADC range
        x = np.arange(0.0, 65536.0, 16.0)
        y = camera.linearize(x[None, :], np.asarray(t["a"])[:, None], np.asarray(t["b"])[:, None])
        assert np.all(np.diff(y, axis=1) > 0)
    assert camera.nonlinearity_table("2020-09-24").meta["epoch"] == "202004"


def test_nonlinearity_at_30kdn():
    x = 30000.0
    # ZTF_REFERENCE.md section 1: about -0.85 % (2019) and +0.12 % (2020) for the typical coefficients
    assert camera.linearize(x, -1.4e-11, 7e-7) / x - 1 == pytest.approx(-0.0085, abs=0.0005)
    assert camera.linearize(x, -8e-12, 2e-7) / x - 1 == pytest.approx(0.0012, abs=0.0002)
    # the tables themselves: median over the 64 amplifiers
    t19, t20 = camera.nonlinearity_table("201910"), camera.nonlinearity_table("202004")
    c19 = camera.linearize(x, np.asarray(t19["a"]), np.asarray(t19["b"])) / x - 1
    c20 = camera.linearize(x, np.asarray(t20["a"]), np.asarray(t20["b"])) / x - 1
    assert -0.014 < np.median(c19) < -0.008
    assert -0.002 < np.median(c20) < 0.003


def test_linearize_dtypes():
    a, b = camera.nonlinearity_coefficients(1, 1, "2020-09-24")
    img = np.full((4, 4), 30000.0, dtype=np.float32)
    assert camera.linearize(img, a, b).dtype == np.float32
    assert camera.delinearize(img, a, b).dtype == np.float32
    assert camera.linearize(np.arange(3), a, b).dtype == np.float64
    assert camera.linearize(0.0, a, b) == 0.0


def test_delinearize_round_trip():
    x = np.concatenate([np.linspace(0.0, 65535.0, 4097), [1e-3, 1.0, 65535.0]])
    for epoch in camera.NONLINEARITY_EPOCHS:
        t = camera.nonlinearity_table(epoch)
        a, b = np.asarray(t["a"])[:, None], np.asarray(t["b"])[:, None]
        back = camera.delinearize(camera.linearize(x[None, :], a, b), a, b)
        np.testing.assert_allclose(back, np.broadcast_to(x, back.shape), rtol=1e-6, atol=1e-9)
        y = np.linspace(0.0, 70000.0, 701)
        again = camera.linearize(camera.delinearize(y, a, b), a, b)
        np.testing.assert_allclose(again, np.broadcast_to(y, (64, 701)), rtol=1e-6)
    # A = 0: exact inverse of y = x / (B x + 1)
    assert camera.delinearize(1000.0, 0.0, 1e-6) == pytest.approx(1000.0 / (1 - 1e-3), rel=1e-12)


# ---- focal plane ----------------------------------------------------------------------------------


def test_quadrant_corners_rcid50():
    c = camera.quadrant_corners(13, 3)
    assert c.shape == (4, 2) and c.unit == u.deg
    c = c.to_value(u.deg)
    # NE, NW, SW, SE
    expected = [[2.782814, 2.866333], [1.919645, 2.867948], [1.919878, 2.004674], [2.783151, 2.003161]]
    np.testing.assert_allclose(c, expected)


def test_quadrant_arrangement_in_each_ccd():
    t = camera.focal_plane_layout()
    assert len(t) == 64
    for ccdid in range(1, 17):
        rows = t[t["ccdid"] == ccdid]
        ew, ns = np.asarray(rows["ew_center"]), np.asarray(rows["ns_center"])
        # q1 NE, q2 NW, q3 SW, q4 SE (consistent with ztfimg's CCD assembly of science quadrants)
        assert ew[0] > ew[1] and ew[3] > ew[2] and ns[0] > ns[3] and ns[1] > ns[2]
    # CCD 1 in the south-east, 4 south-west, 13 north-east, 16 north-west
    centers = {c: camera.ccd_corners(c).to_value(u.deg).mean(axis=0) for c in (1, 4, 13, 16)}
    assert centers[1][0] > 0 > centers[1][1] and centers[4][0] < 0 and centers[4][1] < 0
    assert centers[13][0] > 0 and centers[13][1] > 0 and centers[16][0] < 0 < centers[16][1]


def test_ccd_corners_are_outer_quadrant_corners():
    for ccdid in range(1, 17):
        cc = camera.ccd_corners(ccdid).to_value(u.deg)
        q = np.array([camera.quadrant_corners(ccdid, qid).to_value(u.deg) for qid in range(1, 5)])
        assert cc[:, 0].min() == q[..., 0].min() and cc[:, 1].max() == q[..., 1].max()
        assert 1.72 < cc[0, 0] - cc[1, 0] < 1.73  # 2 x 0.8633 deg
        assert 1.72 < cc[0, 1] - cc[3, 1] < 1.73


def test_gaps_area_extent():
    ew_gap, ns_gap = camera.ccd_gaps()
    assert ew_gap.to_value(u.deg) == pytest.approx(0.13, abs=0.01)
    assert ns_gap.to_value(u.deg) == pytest.approx(0.18, abs=0.01)
    assert camera.active_area().to_value(u.deg**2) == pytest.approx(47.7, abs=0.05)
    t = camera.focal_plane_layout()
    ew, ns = np.asarray(t["ew"]), np.asarray(t["ns"])
    assert ew.max() - ew.min() == pytest.approx(7.29, abs=0.01)
    assert ns.max() - ns.min() == pytest.approx(7.46, abs=0.01)
    # the candidate radius of locate() covers every corner
    assert np.hypot(ew, ns).max() < camera._FIELD_SEARCH_RADIUS.to_value(u.deg)


def test_layout_matches_real_quadrant():
    """The real c13 q3 corners, projected about the field centre, fall on rcid 50 (EW east-positive)."""
    ra0, dec0 = FIELD_655
    ra, dec = np.array(list(REAL_PIXELS.values())).T
    ew, ns = camera.tangent_project(ra, dec, ra0, dec0)
    colb, rowb, cells = camera._quadrant_cells()
    assert cells[np.searchsorted(rowb, ns[-1]), np.searchsorted(colb, ew[-1])] == 50
    layout = camera.quadrant_corners(13, 3).to_value(u.deg)
    # pixel-order corners agree up to the 0.035 deg pointing offset of this exposure
    np.testing.assert_allclose(np.c_[ew[:4], ns[:4]], layout, atol=0.045)


# ---- nominal WCS ----------------------------------------------------------------------------------


def test_nominal_wcs_structure():
    w = camera.nominal_wcs(655, 13, 3)
    assert list(w.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    np.testing.assert_allclose(w.wcs.crpix, [1536.5, 1540.5])
    assert w.pixel_shape == (3072, 3080)
    np.testing.assert_allclose(w.wcs.cd, REAL_CD, atol=3e-7)  # scale, orientation, 1.6 deg convergence
    scale = np.sqrt(abs(np.linalg.det(w.wcs.cd))) * 3600
    assert scale == pytest.approx(1.012, rel=1e-9)
    # +x is west (RA decreases), +y is south (Dec decreases); pixel (1, 1) is the NE corner
    c00, cx, cy = fits_pix2sky(w, [1536.5, 1636.5, 1536.5], [1540.5, 1540.5, 1640.5])
    assert cx.ra < c00.ra and abs((cx.dec - c00.dec).to_value(u.arcsec)) < 5
    assert cy.dec < c00.dec


def test_nominal_wcs_against_real_quadrant():
    w = camera.nominal_wcs(655, 13, 3)
    real_c = SkyCoord(*REAL_PIXELS[(1536.5, 1540.5)], unit="deg")
    nom_c = fits_pix2sky(w, 1536.5, 1540.5)
    # this exposure is 0.035 deg (2.1') east of the nominal layout: pointing offset, not modelled
    assert real_c.separation(nom_c) < 2.5 * u.arcmin
    for (x, y), radec in REAL_PIXELS.items():
        real = SkyCoord(*radec, unit="deg")
        nom = fits_pix2sky(w, x, y)
        assert real.separation(nom) < 2.5 * u.arcmin
        # with the pointing offset removed, the geometry agrees to a few arcsec over the quadrant
        dr = real_c.spherical_offsets_to(real)
        dn = nom_c.spherical_offsets_to(nom)
        assert abs(dr[0] - dn[0]) < 3 * u.arcsec and abs(dr[1] - dn[1]) < 3 * u.arcsec


def test_nominal_wcs_from_skycoord_and_rotation():
    center = SkyCoord(*FIELD_655, unit="deg")
    w1, w2 = camera.nominal_wcs(655, 13, 3), camera.nominal_wcs(center, 13, 3)
    np.testing.assert_allclose(w1.wcs.crval, w2.wcs.crval)
    w360 = camera.nominal_wcs(655, 13, 3, rotation=360 * u.deg)
    np.testing.assert_allclose(w360.wcs.crval, w1.wcs.crval, atol=1e-9)
    np.testing.assert_allclose(w360.wcs.cd, w1.wcs.cd, atol=1e-14)
    # a 0.1 deg focal-plane rotation turns the pixel axes by 0.1 deg and moves the quadrant centre
    wr = camera.nominal_wcs(655, 13, 3, rotation=0.1 * u.deg)
    ang = lambda cd: np.degrees(np.arctan2(cd[1, 0], -cd[0, 0]))  # noqa: E731
    # (plus 0.003 deg because the convergence of meridians changes as the quadrant moves)
    assert ang(wr.wcs.cd) - ang(w1.wcs.cd) == pytest.approx(0.1, abs=0.005)
    moved = fits_pix2sky(w1, 1536.5, 1540.5).separation(fits_pix2sky(wr, 1536.5, 1540.5))
    assert moved.to_value(u.deg) == pytest.approx(np.radians(0.1) * np.hypot(2.35, 2.44), rel=0.05)
    with pytest.raises(ValueError):
        camera.nominal_wcs(655, 13, 3, rotation=0.1)
    with pytest.raises(ValueError, match="882"):
        camera.nominal_wcs(882, 13, 3)


def test_quadrant_footprint():
    fp = camera.quadrant_footprint(655, 13, 3)
    assert fp.shape == (4,)
    w = camera.nominal_wcs(655, 13, 3)
    corners = fits_pix2sky(w, [0.5, 3072.5, 3072.5, 0.5], [0.5, 0.5, 3080.5, 3080.5])
    assert np.all(fp.separation(corners) < 1 * u.mas)
    # the layout polygon lies within ~15" of the nominal corners
    ew, ns = camera.quadrant_corners(13, 3).to_value(u.deg).T
    layout = SkyCoord(*camera.tangent_deproject(ew, ns, *FIELD_655), unit="deg")
    assert np.all(fp.separation(layout) < 20 * u.arcsec)
    real = SkyCoord(np.array(list(REAL_PIXELS.values()))[:4] * u.deg)
    assert np.all(fp.separation(real) < 2.5 * u.arcmin)
    assert fp[0].dec > fp[3].dec and fp[0].ra > fp[1].ra  # NE first


# ---- locate ---------------------------------------------------------------------------------------


def test_locate_real_quadrant_centre():
    t = camera.locate(57.997, 35.746)
    assert len(t) == 1
    row = t[0]
    assert (row["field"], row["ccdid"], row["qid"], row["rcid"], row["index"]) == (655, 13, 3, 50, 0)
    # 2.1' of pointing offset = 125 px in x between the real and the nominal centre
    assert abs(row["x"] - 1536.5) < 200 and abs(row["y"] - 1540.5) < 30
    t2 = camera.locate(SkyCoord(57.997 * u.deg, 35.746 * u.deg))
    assert t2["x"][0] == pytest.approx(row["x"]) and t2["rcid"][0] == 50
    t3 = camera.locate(57.997 * u.deg, 35.746 * u.deg, grid=None)
    assert set(zip(t3["field"], t3["rcid"])) >= {(655, 50)}


def test_locate_round_trip_pixels():
    rng = np.random.default_rng(42)
    n = 300
    rc = rng.integers(0, 64, n)
    x = rng.uniform(5, 3068, n)
    y = rng.uniform(5, 3076, n)
    ra, dec = np.empty(n), np.empty(n)
    for k in range(n):
        c, q = camera.ccd_quadrant(int(rc[k]))
        s = fits_pix2sky(camera.nominal_wcs(655, c, q), x[k], y[k])
        ra[k], dec[k] = s.ra.deg, s.dec.deg
    t = camera.locate(ra, dec, fields=[655])
    assert len(t) == n
    np.testing.assert_array_equal(t["index"], np.arange(n))
    np.testing.assert_array_equal(t["rcid"], rc)
    np.testing.assert_allclose(t["x"], x, atol=1e-6)
    np.testing.assert_allclose(t["y"], y, atol=1e-6)


def test_locate_matches_brute_force():
    rng = np.random.default_rng(7)
    n = 20000
    ew = rng.uniform(-3.9, 3.9, n)
    ns = rng.uniform(-3.9, 3.9, n)
    ra, dec = camera.tangent_deproject(ew, ns, *FIELD_655)
    t = camera.locate(ra, dec, fields=655)
    assert len(np.unique(t["index"])) == len(t)  # one quadrant per field
    inside = np.zeros((n, 64), dtype=bool)
    for r in range(64):
        c, q = camera.ccd_quadrant(r)
        x, y = camera.nominal_wcs(655, c, q).world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        inside[:, r] = (x >= -0.5) & (x <= 3071.5) & (y >= -0.5) & (y <= 3079.5)  # 0-based pixels
    got = np.full(n, -1)
    got[np.asarray(t["index"])] = t["rcid"]
    np.testing.assert_array_equal(got >= 0, inside.any(axis=1))
    assert np.all(inside[np.asarray(t["index"]), np.asarray(t["rcid"])])
    # overlaps of neighbouring nominal arrays are thin slivers; gaps and the outside give no rows
    assert np.mean(inside.sum(axis=1) > 1) < 0.01
    assert 0.55 < np.mean(got >= 0) < 0.85


def test_locate_gap_and_empty():
    ra, dec = camera.tangent_deproject(np.array([0.0, 2.8]), np.array([2.0 - 0.09, 0.0]), *FIELD_655)
    # EW 0 is in the gap between CCD columns 2 and 3; NS 0 is in the middle row gap
    assert len(camera.locate(ra, dec, fields=655)) == 0
    t = camera.locate([], [])
    assert len(t) == 0 and t.colnames == ["index", "ra", "dec", "field", "ccdid", "qid", "rcid", "x", "y"]


def test_locate_bad_input():
    with pytest.raises(ValueError):
        camera.locate(10.0, 95.0)
    with pytest.raises(ValueError):
        camera.locate(10.0)
    with pytest.raises(ValueError, match="5"):
        camera.locate(10.0, 10.0, grid=5)


# ---- field grid -----------------------------------------------------------------------------------


def test_field_grid_counts():
    t = camera.field_grid()
    assert len(t) == 881 + 895 + 877 + 893
    expect = {1: (1, 881, 881), 2: (1001, 1895, 895), 3: (2001, 2877, 877), 4: (3001, 3893, 893)}
    for grid, (lo, hi, n) in expect.items():
        f = camera.fields_in_grid(grid)
        assert (f.min(), f.max(), len(f)) == (lo, hi, n)
        assert np.all(t["grid"][(t["field"] >= lo) & (t["field"] <= hi)] == grid)
    assert t.colnames == ["field", "ra", "dec", "ebv", "gal_l", "gal_b", "ecl_l", "ecl_b", "grid"]
    assert np.all(np.diff(t["field"]) > 0)


def test_field_655():
    t = camera.field_grid()
    row = t[t["field"] == 655][0]
    assert (row["ra"], row["dec"], row["grid"]) == (55.06078, 33.35, 1)
    # The source file says b = -16.92: it treated the J2000 centre as FK4 B1950. ICRS gives -17.46.
    assert row["gal_b"] == pytest.approx(-17.46, abs=0.01)
    assert row["gal_l"] == pytest.approx(158.963, abs=0.01)
    assert row["ecl_b"] == pytest.approx(13.415)
    c = camera.field_center(655)
    assert c.isscalar and c.ra.deg == 55.06078 and c.dec.deg == 33.35
    assert c.galactic.b.deg == pytest.approx(row["gal_b"])


def test_field_center_vector_and_unknown():
    c = camera.field_center([655, 880, 1895])
    assert c.shape == (3,)
    assert c[1].dec.deg == 87.4
    for bad in (0, 882, 1896, 4000, 655.5):
        with pytest.raises(ValueError, match="unknown ZTF field") as info:
            camera.field_center(bad)
        assert isinstance(info.value, ZTFSDSError)


def test_field_grid_is_a_copy():
    t = camera.field_grid()
    t["ra"][0] = -1.0
    assert camera.field_grid()["ra"][0] == 0.0


# ---- packaging ------------------------------------------------------------------------------------


def test_no_shared_paths_and_lazy_import():
    src = Path(camera.__file__).read_text()
    assert "/work/shared" not in src
    code = (
        "import ztfsds.camera as c;"
        "assert c._field_grid_table.cache_info().currsize == 0;"
        "assert c._quadrant_corner_array.cache_info().currsize == 0;"
        "assert c.field_center(655).dec.deg == 33.35"
    )
    root = Path(camera.__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, cwd=root)
