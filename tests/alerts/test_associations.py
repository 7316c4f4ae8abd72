"""PS1 / Gaia neighbours, known asteroids, reference sources and object ids, on a simulated sky."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table, hstack

from ztfsds.alerts import (
    asteroids_from_sky,
    assign_object_ids,
    candidate_records,
    gaia_neighbours,
    match_objects,
    ps1_neighbours,
    reference_neighbours,
    solar_system,
)
from ztfsds.alerts.associations import asteroid_positions
from ztfsds.sim.sky import gaia_like, make_sky, positions_at, ps1_like

JD0 = 2459010.5


@pytest.fixture(scope="module")
def sky():
    return make_sky(SkyCoord(180 * u.deg, 2 * u.deg), 0.5, seed=3, transient_window=(JD0 - 15, JD0 + 15),
                    asteroid_epoch=JD0)


def _brute(ra, dec, cra, cdec):
    c = SkyCoord(ra * u.deg, dec * u.deg)
    return c.separation(SkyCoord(cra * u.deg, cdec * u.deg)).arcsec


def test_ps1_neighbours_match_brute_force(sky):
    cat = ps1_like(sky, seed=1)
    rng = np.random.default_rng(5)
    ra = 180 + rng.uniform(-0.3, 0.3, 200)
    dec = 2 + rng.uniform(-0.3, 0.3, 200)
    t = ps1_neighbours(ra, dec, cat)
    cra, cdec = np.asarray(cat["ra"]), np.asarray(cat["dec"])
    for i in range(0, 200, 7):
        sep = _brute(ra[i], dec[i], cra, cdec)
        order = np.argsort(sep)
        assert t["nmtchps"][i] == np.sum(sep <= 30.0)
        for k in range(3):
            if sep[order[k]] <= 30.0:
                j = order[k]
                assert t[f"objectidps{k + 1}"][i] == cat["objid"][j]
                assert t[f"distpsnr{k + 1}"][i] == pytest.approx(sep[j], abs=1e-6)
                assert t[f"srmag{k + 1}"][i] == pytest.approx(cat["rmag"][j])
                assert t[f"sgscore{k + 1}"][i] == pytest.approx(cat["sgscore"][j])
            else:
                assert t[f"objectidps{k + 1}"][i] == -999 and t[f"distpsnr{k + 1}"][i] == -999.0
    # the catalog has no z band: ZTF's -999
    assert np.all(t["szmag1"] == -999.0)
    assert t["objectidps1"].dtype == np.int64


def test_star_galaxy_score_separates_hosts_from_stars(sky):
    """Candidates on galaxies see sgscore1 ~ 0, on stars ~ 1 (the PS1-PSC analogue of the simulator)."""
    cat = ps1_like(sky, seed=1)
    kinds = np.asarray(sky["kind"]).astype(str)
    bright = np.asarray(sky["r"]) < 20
    for kind, low, high in (("galaxy", 0.0, 0.2), ("star", 0.8, 1.0)):
        sel = np.flatnonzero((kinds == kind) & bright)[:100]
        ra, dec = positions_at(sky[sel], JD0)
        t = ps1_neighbours(ra, dec, cat)
        assert np.all(t["distpsnr1"] < 1.0)
        assert low <= np.median(t["sgscore1"]) <= high, kind


def test_gaia_neighbours(sky):
    cat = gaia_like(sky, seed=2)
    g = np.asarray(cat["phot_g_mean_mag"])
    star = int(np.flatnonzero(g < 14)[0])
    ra, dec = float(cat["ra"][star]) + 5 / 3600, float(cat["dec"][star])
    t = gaia_neighbours([ra, 185.0], [dec, 2.0], cat)
    sep = _brute(ra, dec, np.asarray(cat["ra"]), np.asarray(cat["dec"]))
    assert t["neargaia"][0] == pytest.approx(sep.min(), abs=1e-6)
    assert t["maggaia"][0] == pytest.approx(g[np.argmin(sep)])
    bright = g < 14
    assert t["neargaiabright"][0] == pytest.approx(sep[bright].min(), abs=1e-6)
    assert t["maggaiabright"][0] < 14
    assert list(t[1]) == [-999.0] * 4                      # far outside the simulated sky


def test_known_asteroids_from_the_simulated_sky(sky):
    known = asteroids_from_sky(sky)
    ast = sky[np.asarray(sky["kind"]).astype(str) == "asteroid"]
    assert len(known) == len(ast) >= 5
    jd_mid = JD0 + 0.3 + 15 / 86400                         # mid-exposure, 7 h after the epoch
    ra, dec = positions_at(ast, jd_mid)                     # the simulator's truth
    t = solar_system(ra, dec, jd_mid, known)
    assert np.all(t["ssdistnr"] < 0.01)
    assert list(t["ssnamenr"]) == [str(s) for s in ast["source_id"]]
    np.testing.assert_allclose(t["ssmagnr"], np.asarray(ast["r"]) + 0.2)
    # 40 arcsec away: nothing within 30 arcsec -> ZTF sentinels
    t = solar_system(ra + 40 / 3600 / np.cos(np.radians(dec)), dec, jd_mid, known)
    slow = (np.hypot(ast["ra_rate"], ast["dec_rate"]) < 2)  # fast movers may pass near by chance
    assert np.all(t["ssdistnr"][slow] == -999.0) and set(t["ssnamenr"][slow]) == {"null"}
    # a callable ephemeris gives the same answer
    t2 = solar_system(ra, dec, jd_mid, lambda jd: asteroid_positions(known, jd))
    assert list(t2["ssnamenr"]) == list(solar_system(ra, dec, jd_mid, known)["ssnamenr"])


def test_reference_neighbours_in_pixels():
    ref = Table({"ra": [10.0, 10.01], "dec": [0.0, 0.0], "mag": [18.0, 19.0], "sigmag": [0.02, 0.05],
                 "chi": [1.1, 0.9], "sharp": [0.01, -0.02]})
    t = reference_neighbours([10.0 + 2.024 / 3600, 11.0], [0.0, 0.0], ref, pixscale=1.012)
    assert t["distnr"][0] == pytest.approx(2.0, abs=1e-6)
    assert (t["ranr"][0], t["magnr"][0], t["sharpnr"][0]) == (10.0, 18.0, 0.01)
    assert list(t[1]) == [-999.0] * 7


def test_associations_flow_into_candidate_records(quadrant, sky):
    cands, sci, diff, _ = quadrant
    recs = candidate_records(cands, sci, diff)
    ra, dec = np.array([r["ra"] for r in recs]), np.array([r["dec"] for r in recs])
    cat = ps1_like(sky, seed=1)
    cat["ra"] += 58.5 - 180.0                 # move the simulated catalog onto the real quadrant
    cat["dec"] += 35.7 - 2.0
    no_gaia = Table({"ra": np.zeros(0), "dec": np.zeros(0), "phot_g_mean_mag": np.zeros(0)})
    assoc = hstack([ps1_neighbours(ra, dec, cat), gaia_neighbours(ra, dec, no_gaia)])
    recs = candidate_records(cands, sci, diff, associations=assoc)
    assert [r["nmtchps"] for r in recs] == list(assoc["nmtchps"])
    assert all(r["neargaia"] == -999.0 for r in recs)
    assert any(r["distpsnr1"] != -999.0 for r in recs)


def test_object_ids_by_position():
    known = Table({"objectId": ["ZTF18abmmoot", "ZTF18aaaaaab"], "ra": [304.6445428, 10.0], "dec": [33.9876369, 0.0]})
    ra = [304.6445428 + 1.4 / 3600 / np.cos(np.radians(33.9876369)), 304.6445428 + 1.6 / 3600 / np.cos(np.radians(33.99)),
          50.0, 50.0 + 1.0 / 3600]
    dec = [33.9876369, 33.9876369, 0.0, 0.0]
    assert list(match_objects(ra, dec, known)) == ["ZTF18abmmoot", "", "", ""]
    ids, new = assign_object_ids(ra, dec, known, year=2021, next_number=0)
    assert list(ids) == ["ZTF18abmmoot", "ZTF21aaaaaaa", "ZTF21aaaaaab", "ZTF21aaaaaab"]
    assert list(new["objectId"]) == ["ZTF21aaaaaaa", "ZTF21aaaaaab"]
    empty = Table({"objectId": np.zeros(0, str), "ra": np.zeros(0), "dec": np.zeros(0)})
    assert list(match_objects([1.0], [1.0], empty)) == [""]
