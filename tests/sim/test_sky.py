"""Tests of the simulated sky model (ztfsds.sim.sky)."""


import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from ztfsds.errors import ConfigError
from ztfsds.sim.sky import (
    J2016_JD,
    KINDS,
    asteroid_track,
    gaia_g_mag,
    gaia_like,
    galaxy_density,
    make_sky,
    COLOUR_TERMS,
    mags_at,
    positions_at,
    ps1_like,
    star_density,
)

CENTER = SkyCoord(55.06, 33.35, unit="deg")  # field 655, b = -17.5, ecliptic beta = 13.4
JD = 2459116.93  # the real sample image of field 655


def _sep_mas(ra1, dec1, ra2, dec2):
    return SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).to_value("mas")


def _stars(sky):
    return np.isin(sky["kind"], ["star", "variable"])


@pytest.fixture(scope="module")
def sky():
    """A 0.3-deg-radius sky at b = -17.5 (~0.28 deg^2, ~20,000 sources)."""
    return make_sky(CENTER, 0.3, seed=42)


@pytest.fixture(scope="module")
def wide_sky():
    """A 1.2-deg-radius sky to r = 22 with enough transients and asteroids to test them."""
    return make_sky(CENTER, 1.2, seed=7, faint_limit=22.0)


def test_columns_and_kinds(sky):
    expected = {
        "source_id", "kind", "ra", "dec", "pmra", "pmdec", "g", "r", "i", "sersic_n", "r_eff",
        "axis_ratio", "pa", "period", "amplitude", "t0", "t_peak", "rise", "decline", "host_id",
        "ra_rate", "dec_rate", "h_mag", "var_type", "var_seed",
    }
    assert expected <= set(sky.colnames)
    assert set(sky["kind"]) <= set(KINDS)
    assert sky["source_id"].dtype == np.int64 and sky["host_id"].dtype == np.int64
    assert len(np.unique(sky["source_id"])) == len(sky)
    assert str(sky["ra"].unit) == "deg" and str(sky["r_eff"].unit) == "arcsec"
    assert str(sky["ra_rate"].unit) == "arcsec / min" and str(sky["pmra"].unit) == "mas / yr"
    numeric = [c for c in sky.colnames if sky[c].dtype.kind == "f"]
    assert all(np.all(np.isfinite(sky[c])) for c in numeric)
    sep = _sep_mas(sky["ra"], sky["dec"], CENTER.ra.deg, CENTER.dec.deg) / 3.6e6
    assert sep.max() <= 0.3 + 1e-9
    point = sky["kind"] != "galaxy"
    assert np.all(sky["r_eff"][point] == 0) and np.all(sky["axis_ratio"][point] == 1)
    extragalactic = ~_stars(sky)
    assert np.all(sky["pmra"][extragalactic] == 0) and np.all(sky["pmdec"][extragalactic] == 0)


def test_deterministic(sky):
    again = make_sky(CENTER, 0.3, seed=42)
    assert len(again) == len(sky)
    for name in sky.colnames:
        assert np.array_equal(np.asarray(again[name]), np.asarray(sky[name])), name
    other = make_sky(CENTER, 0.3, seed=43)
    assert len(other) != len(sky) or not np.array_equal(np.asarray(other["ra"]), np.asarray(sky["ra"]))


def test_transients_flag_leaves_static_sky_unchanged(sky):
    quiet = make_sky(CENTER, 0.3, seed=42, transients=False)
    assert not np.any(np.isin(quiet["kind"], ["supernova", "nuclear"]))
    static = ~np.isin(sky["kind"], ["supernova", "nuclear", "asteroid"])
    keep = ~np.isin(quiet["kind"], ["asteroid"])
    assert np.array_equal(np.asarray(quiet["r"][keep]), np.asarray(sky["r"][static]))


def test_counts_scale_with_area():
    small = make_sky(CENTER, 0.1, seed=3, gal_b=17.5, faint_limit=21.0, transients=False)
    large = make_sky(CENTER, 0.2, seed=3, gal_b=17.5, faint_limit=21.0, transients=False)
    n_small, n_large = _stars(small).sum(), _stars(large).sum()
    ratio = n_large / n_small
    area_ratio = large.meta["area"] / small.meta["area"]
    assert abs(ratio / area_ratio - 1) < 5 * np.sqrt(1 / n_small + 1 / n_large)
    expected = star_density(17.5, 21.0) * large.meta["area"]
    assert abs(n_large - expected) < 5 * np.sqrt(expected)


def test_counts_scale_with_latitude():
    low = make_sky(CENTER, 0.25, seed=5, gal_b=17.0, faint_limit=21.0, transients=False)
    high = make_sky(CENTER, 0.25, seed=5, gal_b=60.0, faint_limit=21.0, transients=False)
    ratio = _stars(low).sum() / _stars(high).sum()
    assert 3.5 < ratio < 7.0
    assert 3.0 < star_density(10.0) / star_density(40.0) < 7.0


def test_quadrant_star_count_calibration():
    # 13,000-17,000 stars brighter than r = 21 in a 0.75 deg^2 quadrant at |b| ~ 17.5 (set by the
    # sep source count of the real field-655 quadrant, tests/sim/test_realism.py)
    assert 13000 < star_density(-17.5, 21.0) * 0.75 < 17000
    assert 1000 < galaxy_density(21.0) < 3000


def test_star_count_slope(sky):
    r = np.asarray(sky["r"][_stars(sky)])
    edges = np.arange(16.0, 20.01, 0.5)
    counts, _ = np.histogram(r, edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    slope = np.polyfit(centres, np.log10(counts), 1, w=np.sqrt(counts))[0]
    assert 0.22 < slope < 0.34
    assert r.min() < 13.0  # bright (saturating) stars come from the same law


def test_stellar_colours_on_locus(sky):
    st = sky[_stars(sky)]
    gr, ri = np.asarray(st["g"] - st["r"]), np.asarray(st["r"] - st["i"])
    assert gr.min() >= 0.15 - 1e-9 and gr.max() <= 1.6 + 1e-9
    blue = gr < 1.2
    resid = ri[blue] - (-0.05 + 0.4 * gr[blue])
    assert abs(np.median(resid)) < 0.01 and np.std(resid) < 0.05
    assert np.all(ri[gr > 1.4] > 0.9)  # M dwarfs: the steep branch
    assert 0.1 < np.mean(gr > 1.0) < 0.4


def test_proper_motions(sky):
    st = sky[_stars(sky)]
    pm = np.hypot(st["pmra"], st["pmdec"])
    faint = (st["r"] > 20) & (pm < 100)
    bright = (st["r"] < 14) & (pm < 100)
    assert 1.5 < np.median(pm[faint]) < 5.0
    assert np.median(pm[bright]) > 2 * np.median(pm[faint])


def test_galaxy_shapes(sky):
    gal = sky[sky["kind"] == "galaxy"]
    assert len(gal) > 1000
    assert gal["sersic_n"].min() >= 0.5 and gal["sersic_n"].max() <= 4.0
    assert gal["r_eff"].min() >= 0.5 and gal["r_eff"].max() <= 5.0
    assert gal["axis_ratio"].min() >= 0.3 and gal["axis_ratio"].max() <= 1.0
    assert gal["pa"].min() >= 0.0 and gal["pa"].max() < 180.0
    assert np.median(gal["r_eff"][gal["r"] < 19]) > 2 * np.median(gal["r_eff"][gal["r"] > 22])
    gr = gal["g"] - gal["r"]
    assert gr.min() >= 0.35 - 1e-9 and gr.max() <= 1.05 + 1e-9
    assert np.all(gal["pmra"] == 0)


def test_supernovae_near_hosts(wide_sky):
    sn = wide_sky[wide_sky["kind"] == "supernova"]
    assert len(sn) >= 5
    assert np.all(sn["host_id"] > 0)
    hosts = wide_sky[np.searchsorted(wide_sky["source_id"], sn["host_id"])]
    assert np.all(hosts["kind"] == "galaxy") and np.array_equal(hosts["source_id"], sn["host_id"])
    sep_arcsec = _sep_mas(sn["ra"], sn["dec"], hosts["ra"], hosts["dec"]) / 1e3
    assert np.all(sep_arcsec < 3 * hosts["r_eff"])
    assert np.all((sn["r"] >= 17.0) & (sn["r"] <= 20.5))
    assert np.all((sn["t_peak"] >= 2459100.0) & (sn["t_peak"] <= 2459140.0))
    nuc = wide_sky[wide_sky["kind"] == "nuclear"]
    assert len(nuc) >= 1
    nuc_hosts = wide_sky[np.searchsorted(wide_sky["source_id"], nuc["host_id"])]
    assert np.allclose(nuc["ra"], nuc_hosts["ra"]) and np.allclose(nuc["dec"], nuc_hosts["dec"])


def test_transient_window_argument():
    sky = make_sky(CENTER, 1.0, seed=11, faint_limit=20.0, transient_window=(2460000.0, 2460010.0))
    tr = sky[np.isin(sky["kind"], ["supernova", "nuclear"])]
    assert len(tr) > 0
    assert np.all((tr["t_peak"] >= 2460000.0) & (tr["t_peak"] <= 2460010.0))
    ast = sky[sky["kind"] == "asteroid"]
    assert np.all(ast["t0"] == 2460005.0)


def test_asteroids(wide_sky):
    ast = wide_sky[wide_sky["kind"] == "asteroid"]
    rate = np.hypot(ast["ra_rate"], ast["dec_rate"])
    slow = rate < 30
    # ~10 per deg^2 at ecliptic latitude 13.4 deg (4.5 deg^2 here)
    assert 15 < slow.sum() < 90
    assert np.all((rate[slow] >= 0.1) & (rate[slow] <= 1.0))
    assert (~slow).sum() >= 1
    assert np.all((ast["r"][~slow] >= 14) & (ast["r"][~slow] <= 20))
    far = make_sky(SkyCoord(200.0, 80.0, unit="deg"), 1.2, seed=7, faint_limit=22.0, transients=False)
    far_slow = (far["kind"] == "asteroid") & (np.hypot(far["ra_rate"], far["dec_rate"]) < 30)
    assert far_slow.sum() < slow.sum()


def test_positions_at_proper_motion(sky):
    st = sky[_stars(sky)]
    k = int(np.argmax(np.hypot(st["pmra"], st["pmdec"])))
    star = st[k:k + 1]
    ra, dec = positions_at(star, J2016_JD + 10 * 365.25)
    moved = _sep_mas(ra, dec, star["ra"], star["dec"])[0]
    assert moved == pytest.approx(10 * np.hypot(star["pmra"][0], star["pmdec"][0]), rel=1e-3)
    ra0, dec0 = positions_at(star, J2016_JD)
    assert ra0[0] == pytest.approx(star["ra"][0], abs=1e-12)
    # galaxies never move
    gal = sky[sky["kind"] == "galaxy"][:5]
    ra, dec = positions_at(gal, J2016_JD + 3650)
    assert np.allclose(ra, gal["ra"], rtol=0, atol=1e-12)


def test_positions_at_asteroid(wide_sky):
    ast = wide_sky[wide_sky["kind"] == "asteroid"][:3]
    dt = 0.1  # day
    ra, dec = positions_at(ast, ast["t0"] + dt)
    moved_arcsec = _sep_mas(ra, dec, ast["ra"], ast["dec"]) / 1e3
    expected = np.hypot(ast["ra_rate"], ast["dec_rate"]) * dt * 1440
    assert np.allclose(moved_arcsec, expected, rtol=2e-3)


def test_asteroid_track(wide_sky):
    ast = wide_sky[wide_sky["kind"] == "asteroid"]
    ra0, dec0, ra1, dec1 = asteroid_track(ast, ast["t0"][0], 30.0)
    length = _sep_mas(ra0, dec0, ra1, dec1) / 1e3
    assert np.allclose(length, np.hypot(ast["ra_rate"], ast["dec_rate"]) * 0.5, rtol=2e-3)
    assert np.allclose(ra0, ast["ra"]) and np.allclose(dec0, ast["dec"])
    fast = np.hypot(ast["ra_rate"], ast["dec_rate"]) >= 30
    assert np.all(length[fast] >= 15.0)  # streaks of >= 15 pixels in 30 s
    row = asteroid_track(ast[0], ast["t0"][0], 30.0)
    assert all(np.allclose(a[0], b) for a, b in zip(row, (ra0[0], dec0[0], ra1[0], dec1[0])))


def _static(t, code):
    """The ZTF-system magnitude of the table's static PS1-like g, r, i (the colour term applied)."""
    k, blue, red = COLOUR_TERMS[code]
    return np.asarray(t[code[1:]]) - k * (np.asarray(t[blue]) - np.asarray(t[red]))


def test_mags_at_constant_sources(sky):
    const = np.isin(sky["kind"], ["star", "galaxy", "asteroid"])
    for code, band in (("zg", "g"), ("zr", "r"), ("zi", "i")):
        m = mags_at(sky, code, JD)
        k, blue, red = COLOUR_TERMS[code]
        colour = np.asarray(sky[blue][const]) - np.asarray(sky[red][const])
        assert np.allclose(m[const], np.asarray(sky[band][const]) - k * colour, rtol=0, atol=1e-12)
    assert COLOUR_TERMS["zr"][0] > 0 > COLOUR_TERMS["zg"][0]
    with pytest.raises(ConfigError):
        mags_at(sky, "zz", JD)


def test_mags_at_periodic_variable(sky):
    var = sky[np.isin(sky["var_type"], ["sine", "sawtooth"])]
    assert len(var) > 0
    period = np.asarray(var["period"])
    m0 = mags_at(var, "zr", JD)
    m1 = mags_at(var, "zr", JD + period)
    assert np.allclose(m0, m1, atol=1e-6)
    times = JD + np.linspace(0, 1, 201)[:, None] * period[None, :]
    curves = np.array([mags_at(var, "zr", t) for t in times])
    ptp = curves.max(axis=0) - curves.min(axis=0)
    assert np.allclose(ptp, var["amplitude"], rtol=0.02)
    assert np.allclose(curves.mean(axis=0), _static(var, "zr"), atol=0.02 * var["amplitude"].max())


def test_mags_at_damped_random_walk(sky):
    drw = sky[sky["var_type"] == "drw"]
    assert len(drw) > 0
    row = drw[:1]
    times = JD + np.linspace(0, 5000, 4001)
    curve = np.array([mags_at(row, "zr", t)[0] for t in times])
    again = np.array([mags_at(row, "zr", t)[0] for t in times[::-1]])[::-1]
    assert np.array_equal(curve, again)  # a pure function of time
    rms = np.std(curve - row["r"][0])
    assert 0.5 * row["amplitude"][0] < rms < 1.6 * row["amplitude"][0]
    lag = int(row["period"][0] / (times[1] - times[0]))
    d = curve - curve.mean()
    if lag >= 1:
        corr = np.mean(d[:-lag] * d[lag:]) / np.var(d)
        assert 0.1 < corr < 0.7  # exp(-1) = 0.37 at a lag of tau
    # per-source jd arrays give the same answer as scalar calls
    per_source = mags_at(drw, "zg", np.full(len(drw), JD + 1.5))
    assert np.array_equal(per_source, mags_at(drw, "zg", JD + 1.5))


def test_mags_at_supernova(wide_sky):
    sn = wide_sky[wide_sky["kind"] == "supernova"]
    tp = np.asarray(sn["t_peak"])
    peak = mags_at(sn, "zr", tp)
    assert np.allclose(peak, _static(sn, "zr"))
    after = mags_at(sn, "zr", tp + 30)
    before = mags_at(sn, "zr", tp - 30)
    assert np.all(peak < after)
    assert np.all(np.isnan(before) | (peak < before))
    assert np.all(np.isnan(mags_at(sn, "zr", tp - sn["rise"] - 1)))
    assert np.all(np.isnan(mags_at(sn, "zg", tp + 2000)))
    # ~0.03 mag/day decline in r
    rate = (after - peak) / 30
    assert np.all((rate > 0.015) & (rate < 0.06))
    assert np.all(mags_at(sn, "zg", tp + 30) - _static(sn, "zg") > after - _static(sn, "zr"))  # g fades faster


def test_gaia_like(sky):
    gaia = gaia_like(sky, seed=1)
    truth = sky[np.searchsorted(sky["source_id"], gaia["source_id"])]
    assert np.all(np.isin(truth["kind"], ["star", "variable"]))
    g_true = gaia_g_mag(sky["g"], sky["r"], sky["i"])
    complete = _stars(sky) & (g_true < 21.0)
    assert set(gaia["source_id"]) == set(sky["source_id"][complete])
    assert np.all(gaia["ref_epoch"] == 2016.0)
    cosd = np.cos(np.radians(truth["dec"]))
    dra = (gaia["ra"] - truth["ra"]) * cosd * 3.6e6
    ddec = (gaia["dec"] - truth["dec"]) * 3.6e6
    assert 0.9 < np.std(dra / gaia["ra_error"]) < 1.1
    assert 0.9 < np.std(ddec / gaia["dec_error"]) < 1.1
    faint = (gaia["phot_g_mean_mag"] > 20.2) & (gaia["phot_g_mean_mag"] < 20.8)
    assert 0.8 < np.sqrt(np.mean(dra[faint] ** 2)) < 2.5
    bright = gaia["phot_g_mean_mag"] < 13
    assert np.all((gaia["ra_error"][bright] > 0.01) & (gaia["ra_error"][bright] < 0.03))
    dpm = (gaia["pmra"] - truth["pmra"]) / gaia["pmra_error"]
    assert 0.9 < np.std(dpm) < 1.1
    other = gaia_like(sky, seed=2)
    assert not np.array_equal(np.asarray(other["ra"]), np.asarray(gaia["ra"]))


def test_gaia_like_epoch(sky):
    gaia = gaia_like(sky, seed=1, epoch_jd=J2016_JD + 365.25 * 4)
    assert np.allclose(gaia["ref_epoch"], 2020.0)
    truth = sky[np.searchsorted(sky["source_id"], gaia["source_id"])]
    ra, dec = positions_at(truth, J2016_JD + 365.25 * 4)
    assert np.median(_sep_mas(gaia["ra"], gaia["dec"], ra, dec)) < 1.0


def test_ps1_like(sky):
    ps1 = ps1_like(sky, seed=1)
    assert ps1["objid"].dtype == np.int64 and len(np.unique(ps1["objid"])) == len(ps1)
    truth = sky[np.searchsorted(sky["source_id"], ps1["source_id"])]
    assert set(truth["kind"]) == {"star", "variable", "galaxy"}
    assert np.all(truth["r"] < 22.0)
    assert ((sky["r"] < 22.0) & np.isin(sky["kind"], ["star", "variable", "galaxy"])).sum() == len(ps1)
    e = ps1["e_rmag"]
    assert np.all(e[truth["r"] < 16] < 0.007) and np.all(e >= 0.005)
    near_limit = truth["r"] > 21.8
    assert np.all((e[near_limit] > 0.07) & (e[near_limit] < 0.11))
    for band in "gri":
        pull = (ps1[f"{band}mag"] - truth[band]) / ps1[f"e_{band}mag"]
        assert 0.9 < np.std(pull) < 1.1
    point = truth["kind"] != "galaxy"
    bright = truth["r"] < 19
    assert np.median(ps1["sgscore"][point & bright]) > 0.95
    assert np.median(ps1["sgscore"][~point & bright]) < 0.05
    assert np.mean(ps1["sgscore"][point & bright] > 0.5) > 0.99
    faint = truth["r"] > 21.5
    assert 0.6 < np.mean(ps1["sgscore"][point & faint] > 0.5) < 0.99
    assert np.all((ps1["sgscore"] >= 0) & (ps1["sgscore"] <= 1))


def test_positions_accept_plain_mappings():
    t = Table({"kind": ["asteroid"], "ra": [359.9999], "dec": [0.0], "pmra": [0.0], "pmdec": [0.0],
               "t0": [0.0], "ra_rate": [60.0], "dec_rate": [0.0]})
    ra, dec = positions_at(t, 1.0 / 1440)  # one minute: 1 arcmin east, across RA = 0
    assert ra[0] == pytest.approx((359.9999 + 1 / 60) % 360, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [{"radius": 0.0}, {"radius": -1.0}, {"density_scale": -1.0}, {"faint_limit": 40.0},
     {"transient_window": (2.0, 1.0)}],
)
def test_bad_arguments(kwargs):
    args = {"radius": 0.1, **kwargs}
    radius = args.pop("radius")
    with pytest.raises(ConfigError):
        make_sky(CENTER, radius, seed=1, **args)


def test_density_scale():
    base = make_sky(CENTER, 0.15, seed=9, faint_limit=21.0, transients=False)
    double = make_sky(CENTER, 0.15, seed=9, faint_limit=21.0, transients=False, density_scale=2.0)
    ratio = _stars(double).sum() / _stars(base).sum()
    assert 1.8 < ratio < 2.2
    assert (double["kind"] == "galaxy").sum() == (base["kind"] == "galaxy").sum()


def test_full_quadrant_sky_counts():
    # (its speed is a benchmark, not a test)
    center = SkyCoord(55.06, 33.35, unit="deg")
    sky = make_sky(center, 0.62, seed=1)
    assert abs(sky.meta["gal_b"] + 17.5) < 0.1
    n21 = (_stars(sky) & (sky["r"] < 21)).sum() / sky.meta["area"] * 0.75
    assert 13000 < n21 < 17000
