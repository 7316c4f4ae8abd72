"""The IRSA lightcurve-service interface: parameters, columns, formats, plots."""

import io
import math

import numpy as np
import pytest
from astropy.table import Table

from ztfsds.match import (
    LightcurveQueryError,
    calibrate,
    lightcurve_table,
    match_epochs,
    plot_lightcurve,
    query_lightcurves,
    write_hats,
    write_lightcurves,
)
from ztfsds.match.lightcurve_api import OUTPUT_COLUMNS, parse_query
from ztfsds.match.lightcurves import read_dr_parquet
from ztfsds.products import ProductStore

from .conftest import QUADRANT

# the service's documented output columns (ZTF_REFERENCE.md section 6)
IRSA_COLUMNS = ("oid expid hjd mjd mag magerr catflags filtercode ra dec chi sharp filefracday field ccdid qid "
                "limitmag magzp magzprms clrcoeff clrcounc exptime airmass programid").split()


@pytest.fixture(scope="module")
def archive(small_survey, tmp_path_factory):
    root = tmp_path_factory.mktemp("lcapi")
    mf = calibrate(match_epochs(small_survey.epochs, reference=small_survey.reference, **QUADRANT))
    write_hats(lightcurve_table(mf), ProductStore(root).match_dir / "lightcurves" / "ztf")
    return root, mf


def _sep_deg(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    c = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def test_cone_query_columns_and_times(archive):
    root, mf = archive
    ra0, dec0 = float(np.median(mf.sources["ra"])), float(np.median(mf.sources["dec"]))
    table = query_lightcurves({"POS": f"CIRCLE {ra0} {dec0} 0.005"}, root=root)
    assert table.colnames == IRSA_COLUMNS == [name for name, _ in OUTPUT_COLUMNS]
    assert table.meta["FORMAT"] == "VOTABLE"
    assert len(table) > 20 and np.all(np.diff(table["oid"]) >= 0)
    src = mf.sources[np.asarray(mf.sources["nobs"]) > 0]
    inside = _sep_deg(ra0, dec0, np.asarray(src["ra"]), np.asarray(src["dec"])) <= 0.005
    oids = set(600208300000000 + np.asarray(src["matchid"], dtype=np.int64)[inside] + 1)
    assert set(table["oid"]) == oids
    # mjd: exposure start; hjd at that instant; the quadrant's ids
    exp = mf.exposures
    row = table[0]
    e = exp[np.asarray(exp["expid"]) == row["expid"]][0]
    assert row["mjd"] == pytest.approx(e["obsmjd"], abs=1e-8)
    sd = mf.sourcedata[(np.asarray(mf.sourcedata["expid"]) == row["expid"])
                       & (np.asarray(mf.sourcedata["matchid"]) == row["oid"] % 10**8 - 1)][0]
    assert row["hjd"] == pytest.approx(sd["hjd"] - 15.0 / 86400, abs=1e-8)    # full precision, not float32
    assert row["mag"] == sd["mag"] and row["ra"] == sd["ra"]
    assert (row["field"], row["ccdid"], row["qid"], row["filtercode"]) == (600, 8, 3, "zr")
    assert row["magzp"] == pytest.approx(e["magzp"]) and row["exptime"] == 30.0


def test_filters_by_id_time_flags_band(archive):
    root, mf = archive
    full = query_lightcurves("ID=600208300000005&ID=600208300000007,600208300000009", root=root)
    assert set(full["oid"]) <= {600208300000005, 600208300000007, 600208300000009} and len(full) > 10
    t0, t1 = np.percentile(full["mjd"], [25, 75])
    part = query_lightcurves({"ID": ["600208300000005", "600208300000007", "600208300000009"],
                              "TIME": f"{t0} {t1}"}, root=root)
    assert 0 < len(part) < len(full) and np.all((part["mjd"] >= t0) & (part["mjd"] <= t1))
    assert len(query_lightcurves({"ID": "600208300000005", "TIME": "-Inf Inf"}, root=root)) == np.count_nonzero(
        full["oid"] == 600208300000005)
    ra0, dec0 = float(np.median(mf.sources["ra"])), float(np.median(mf.sources["dec"]))
    pos = f"CIRCLE {ra0} {dec0} 0.01"
    everything = query_lightcurves({"POS": pos}, root=root)
    assert len(query_lightcurves({"POS": pos, "BANDNAME": "g"}, root=root)) == 0
    assert len(query_lightcurves({"POS": pos, "BANDNAME": "r"}, root=root)) == len(everything)
    assert len(query_lightcurves({"POS": pos, "BAND": "6.0e-7 6.5e-7"}, root=root)) == len(everything)
    assert len(query_lightcurves({"POS": pos, "BAND": "4.2e-7 4.5e-7"}, root=root)) == 0
    many = query_lightcurves({"POS": pos, "NUM_OBS": "30"}, root=root)
    counts = np.unique(many["oid"], return_counts=True)[1]
    assert len(many) < len(everything) and counts.min() >= 30
    bright = query_lightcurves({"POS": pos, "MAG": "10 19"}, root=root)
    med = [np.median(bright["mag"][bright["oid"] == o]) for o in np.unique(bright["oid"])]
    assert 0 < len(bright) < len(everything) and max(med) <= 19.0
    flagged = everything.copy()
    masked = query_lightcurves({"POS": pos, "BAD_CATFLAGS_MASK": "32768"}, root=root)
    assert np.all(masked["catflags"] & 32768 == 0) and len(masked) <= len(flagged)
    assert len(query_lightcurves({"POS": "CIRCLE 10.0 -40.0 0.01"}, root=root)) == 0


@pytest.mark.parametrize("params, message", [
    ({}, "give ID"),
    ({"POS": "BOX 1 2 3"}, "CIRCLE"),
    ({"POS": "CIRCLE 1 2"}, "3 numbers"),
    ({"POS": "CIRCLE 1 95 0.01"}, "declination"),
    ({"POS": "CIRCLE 1 2 0.5"}, "radius"),
    ({"POS": "CIRCLE 1 2 0"}, "radius"),
    ({"POS": "CIRCLE a b c"}, "numbers"),
    ({"ID": "12x"}, "integers"),
    ({"ID": "1", "BANDNAME": "r"}, "cannot be combined with ID"),
    ({"ID": "1", "MAG": "10 12"}, "cannot be combined with ID"),
    ({"POS": "CIRCLE 1 2 0.01", "BANDNAME": "u"}, "g, r or i"),
    ({"POS": "CIRCLE 1 2 0.01", "BAND": "500 600"}, "metres"),
    ({"POS": "CIRCLE 1 2 0.01", "TIME": "59000 58000"}, "start after end"),
    ({"POS": "CIRCLE 1 2 0.01", "TIME": "nan 1"}, "NaN"),
    ({"POS": "CIRCLE 1 2 0.01", "NUM_OBS": "many"}, "integer"),
    ({"POS": "CIRCLE 1 2 0.01", "BAD_CATFLAGS_MASK": "-1"}, "0..65535"),
    ({"POS": "CIRCLE 1 2 0.01", "FORMAT": "XLS"}, "FORMAT"),
    ({"POS": "CIRCLE 1 2 0.01", "COLLECTION": "../etc"}, "COLLECTION"),
    ({"POS": "CIRCLE 1 2 0.01", "RADIUS": "1"}, "unknown parameter"),
    ({"POS": ["CIRCLE 1 2 0.01", "CIRCLE 3 4 0.01"]}, "one POS"),
])
def test_malformed_parameters(params, message):
    with pytest.raises(LightcurveQueryError, match=message) as info:
        parse_query(params)
    assert isinstance(info.value, ValueError)


def test_query_string_and_collections(archive, test_data_dir, tmp_path):
    root, _ = archive
    q = parse_query("POS=CIRCLE+255.57+12.28+0.0028&bandname=g,r&FORMAT=ipac_table&CIRCLE=")
    assert q["cone"] == (255.57, 12.28, 0.0028) and q["filterids"] == {1, 2} and q["format"] == "IPAC_TABLE"
    with pytest.raises(LightcurveQueryError, match="unknown; available: ztf"):
        query_lightcurves({"POS": "CIRCLE 1 2 0.01", "COLLECTION": "ztf_dr5"}, root=root)
    # a public DR file as a collection: the columns it lacks are NaN / -1
    dr5 = read_dr_parquet(test_data_dir / "match" / "ztf_000250_zg_c01_q1_dr5_excerpt.parquet")
    write_hats(dr5, ProductStore(tmp_path).match_dir / "lightcurves" / "ztf_dr5")
    t = query_lightcurves({"ID": "250101100000001", "COLLECTION": "ztf_dr5"}, root=tmp_path)
    assert len(t) == 23 and np.all(t["filtercode"] == "zg") and np.all(t["expid"] == -1)
    assert np.all(np.isnan(t["mjd"])) and t["hjd"][0] == pytest.approx(58348.48046875 + 2400000.5)
    assert (t["ccdid"][0], t["qid"][0]) == (1, 1)
    assert len(query_lightcurves({"ID": "250101100000001", "TIME": "58360 58500"}, root=tmp_path)) == 9
    with pytest.raises(LightcurveQueryError, match="no lightcurve collection"):
        query_lightcurves({"ID": "1"}, root=tmp_path / "empty")


@pytest.mark.parametrize("fmt, reader", [("csv", "ascii.csv"), ("ipac_table", "ascii.ipac"),
                                         ("votable", "votable"), ("tsv", "ascii.tab"), ("parquet", None)])
def test_write_formats(archive, tmp_path, fmt, reader):
    root, _ = archive
    table = query_lightcurves({"ID": "600208300000005"}, root=root)
    path = tmp_path / f"lc.{fmt}"
    write_lightcurves(table, path, fmt)
    if reader is None:
        import pyarrow.parquet as pq

        back = Table(pq.read_table(path).to_pydict())
    else:
        back = Table.read(path, format=reader)
    assert back.colnames == table.colnames and len(back) == len(table)
    assert np.allclose(np.asarray(back["mag"], float), np.asarray(table["mag"], float), atol=1e-5)
    assert list(back["oid"]) == list(table["oid"])
    buffer = io.BytesIO()
    write_lightcurves(table, buffer, fmt)
    assert len(buffer.getvalue()) > 500
    if fmt == "csv":
        text = io.StringIO()
        write_lightcurves(table, text, "CSV")
        assert text.getvalue().splitlines()[0].split(",") == IRSA_COLUMNS
    with pytest.raises(LightcurveQueryError, match="format"):
        write_lightcurves(table, tmp_path / "x", "fits")


def test_plot(archive, tmp_path):
    root, _ = archive
    table = query_lightcurves({"ID": ["600208300000005", "600208300000007"]}, root=root)
    out = plot_lightcurve(table, tmp_path / "lc.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    empty = plot_lightcurve(table[:0], tmp_path / "empty.png")
    assert empty.read_bytes()[:4] == b"\x89PNG"
    assert math.isfinite(float(table["mag"][0]))
