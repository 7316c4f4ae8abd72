"""Matching epochs to the reference and to each other; incremental updates."""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from ztfsds.errors import InputError
from ztfsds.match import calibrate, lightcurve_table, match_epochs, read_matchfile, write_matchfile
from ztfsds.match.matching import heliocentric_delay

from .conftest import QUADRANT


def test_detections_go_to_their_source(survey, matched):
    """Every matched detection belongs to the reference source it was matched to (>= 99.9 %)."""
    sd = matched.sourcedata
    nref = len(survey.reference_source_id)
    ref = np.asarray(sd["matchid"]) < nref
    right = total = 0
    for j, (cat, header) in enumerate(survey.epochs):
        rows = sd[(np.asarray(sd["expid"]) == header["EXPID"]) & ref]
        # rows keep the catalog's positions exactly: find each row's catalog entry, hence its truth
        order = np.argsort(np.asarray(cat["dec"]))
        pos = order[np.searchsorted(np.asarray(cat["dec"]), np.asarray(rows["dec"]), sorter=order)]
        assert np.array_equal(np.asarray(cat["ra"])[pos], np.asarray(rows["ra"]))
        truth = survey.source_id[j][pos]
        right += np.count_nonzero(truth == survey.reference_source_id[np.asarray(rows["matchid"])])
        total += len(rows)
    assert total > 1_000_000
    assert right / total > 0.999, right / total
    # one detection per object and epoch
    key = np.asarray(sd["matchid"]).astype(np.int64) * 2**32 + np.asarray(sd["expid"]).astype(np.int64)
    assert np.unique(key).size == len(sd)


def test_matchfile_columns_and_times(matched, survey):
    exp = matched.exposures
    assert len(exp) == 100 and np.all(np.diff(exp["obsmjd"]) > 0)
    assert set(matched.attrs) >= {"fieldID", "ccdID", "quadrantID", "rcID", "filterID", "referenceZeroPoint"}
    assert int(matched.attrs["rcID"]) == 4 * (8 - 1) + 3 - 1
    sd = matched.sourcedata[:2000]
    e = exp[np.searchsorted(exp["expid"], sd["expid"])]
    # sourcedata.mjd is mid-exposure; hjd adds the heliocentric delay (< 8.4 min) at the source
    assert np.allclose(sd["mjd"], e["obsmjd"] + 15.0 / 86400, atol=1e-8)
    delay = (sd["hjd"] - 2400000.5 - sd["mjd"]) * 86400
    assert np.all(np.abs(delay) < 500.0) and np.std(delay) > 10


def test_heliocentric_delay_agrees_with_astropy():
    from astropy.coordinates import EarthLocation

    jd = 2458320.98145831
    ra, dec = np.array([2.6104292, 120.0, 250.0]), np.array([-22.4325758, 40.0, -60.0])
    ours = heliocentric_delay(jd, ra, dec) * 86400
    palomar = EarthLocation.from_geodetic(-116.8598, 33.3573, 1668)
    t = Time(jd, format="jd", scale="utc", location=palomar)
    theirs = t.light_travel_time(SkyCoord(ra, dec, unit="deg"), kind="heliocentric").to_value("s")
    assert np.allclose(ours, theirs, atol=0.05)
    # the real matchfile's first detection: hjd - mid-exposure jd = 273.28 s
    assert ours[0] == pytest.approx(273.28, abs=0.1)


def _cat(ra, dec, mag=18.0):
    n = len(ra)
    flux = 10 ** (-0.4 * (np.asarray(mag, dtype=float) - 26.0)) * np.ones(n)
    return Table({"ra": np.asarray(ra, float), "dec": np.asarray(dec, float), "flux": flux, "sigflux": flux / 50,
                  "x": np.zeros(n), "y": np.zeros(n), "chi": np.ones(n), "sharp": np.zeros(n),
                  "flags": np.zeros(n, dtype=int), "snr": np.full(n, 50.0)})


def _hdr(expid, jd):
    return {"EXPID": expid, "OBSJD": jd, "MAGZP": 26.0, "EXPTIME": 30.0}


def test_new_objects_and_transients():
    """A source absent from the reference becomes an object from its second epoch; a one-off stays transient."""
    ref = _cat([10.0, 10.01], [20.0, 20.0])
    arc = 1 / 3600
    new = (10.02, 20.0)
    epochs = [
        (_cat([10.0, 10.01 + 0.3 * arc, new[0], 10.05], [20.0, 20.0, new[1], 20.05]), _hdr(1, 2458500.7)),
        (_cat([10.0 + 2.0 * arc, 10.01, new[0] + 0.5 * arc], [20.0, 20.0, new[1]]), _hdr(2, 2458501.7)),
    ]
    mf = match_epochs(epochs, reference=ref, **QUADRANT)
    assert list(mf.sources["matchid"]) == [0, 1, 2]
    assert list(mf.sources["isref"]) == [1, 1, 0]
    sd = mf.sourcedata
    assert list(zip(sd["matchid"], sd["expid"])) == [(0, 1), (1, 1), (1, 2), (2, 1), (2, 2)]
    # the 2" offset detection of source 0 and the one-off at (10.05, 20.05) stay unmatched
    assert len(mf.transientdata) == 2
    assert mf.sources["ra"][2] == pytest.approx(new[0] + 0.25 * arc, abs=1e-9)
    # duplicate EXPIDs are not matched twice
    again = match_epochs(epochs[:1], previous=mf)
    assert len(again.sourcedata) == len(mf.sourcedata) and len(again.exposures) == 2
    with pytest.raises(InputError, match="EXPID"):
        match_epochs([(_cat([10.0], [20.0]), {"OBSJD": 2458500.0})], reference=ref, **QUADRANT)


def test_incremental_update_equals_rebuild(small_survey, tmp_path):
    """25 epochs, written and read back, then 15 more: the same lightcurves as matching all 40 at once."""
    syn = small_survey
    full = calibrate(match_epochs(syn.epochs, reference=syn.reference, **QUADRANT))
    first = calibrate(match_epochs(syn.epochs[:25], reference=syn.reference, **QUADRANT))
    write_matchfile(first, tmp_path / "m.pytable")
    update = calibrate(match_epochs(syn.epochs[25:], previous=read_matchfile(tmp_path / "m.pytable")))
    new_objects = np.count_nonzero(full.sources["isref"] == 0)
    assert new_objects > 100                    # the shallow reference leaves many sources to find
    assert np.count_nonzero(update.sources["isref"] == 0) == new_objects
    a, b = lightcurve_table(full), lightcurve_table(update)
    assert a.num_rows > 1000
    assert a.equals(b)
    # new epochs were appended to objects that existed after the first 25
    n1 = dict(zip(lightcurve_table(first).column("objectid").to_pylist(),
                  lightcurve_table(first).column("nepochs").to_pylist()))
    grown = sum(1 for oid, n in zip(b.column("objectid").to_pylist(), b.column("nepochs").to_pylist())
                if oid in n1 and n > n1[oid])
    assert grown > 0.8 * len(n1)
