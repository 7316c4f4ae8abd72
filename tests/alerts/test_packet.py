"""Candidate records and packets from a realistic synthetic quadrant on the real field-655 WCS."""

import io
import json
import warnings

import fastavro
import numpy as np
import pytest
from astropy.table import MaskedColumn, Table
from astropy.wcs import WCS, FITSFixedWarning

from ztfsds.alerts import (
    candidate_records,
    fp_hist_record,
    fp_hists_from_forced,
    make_alert,
    packet_bytes,
    prv_candidate_from_candidate,
    upper_limit_from_headers,
    upper_limit_record,
    validate,
)
from ztfsds.alerts.cutout import cutout_array
from ztfsds.alerts.schema import field_names, load_schema, schema_path
from ztfsds.errors import AlertPacketError, MissingKeywordError
from ztfsds.photom.forced import read_forced_photometry
from ztfsds.products import parse_candid

from .synth import DATA

# fields we do not measure, and the associations computed outside candidate_records
NOT_MEASURED = {"sky", "classtar", "dsnrms", "ssnrms", "dsdiff"}
ASSOCIATIONS = {"ssdistnr", "ssmagnr", "ssnamenr", "neargaia", "neargaiabright", "maggaia", "maggaiabright"} | {
    f"{p}{k}" for k in (1, 2, 3) for p in ("objectidps", "sgmag", "srmag", "simag", "szmag", "sgscore", "distpsnr")}


def official_schema():
    """The 4.02 schema parsed from the .avsc files alone, independently of ztfsds.alerts.schema."""
    named = {}
    parsed = None
    for part in ("cutout", "candidate", "prv_candidate", "fp_hist", "alert"):
        parsed = fastavro.parse_schema(json.loads(schema_path("4.02", part).read_text()), named_schemas=named)
    return parsed


@pytest.fixture(scope="module")
def records(quadrant):
    cands, sci, diff, _ = quadrant
    return candidate_records(cands, sci, diff)


def test_identity_fields_follow_the_real_arithmetic(quadrant, records):
    cands, sci, diff, _ = quadrant
    assert len(records) == len(cands) == 40
    for rec, row in zip(records, cands):
        assert set(rec) == set(field_names("candidate"))
        assert rec["pid"] == 1362431775015 == sci["DBPID"]
        pos = row["isdiffpos"] == "t"
        assert rec["candid"] == 1362431775015 * 10**6 + 10000 + 5000 * pos + int(row["tblid"])
        assert parse_candid(rec["candid"]) == (rec["pid"], 10000 + 5000 * pos + int(row["tblid"]))
        assert (rec["jd"], rec["fid"], rec["nid"], rec["field"], rec["rcid"], rec["programid"]) == (
            2459116.9317708, 2, 1362, 655, 50, 1)
        assert (rec["rfid"], rec["nframesref"], rec["jdstartref"], rec["jdendref"]) == (
            655120250, 20, 2458200.5, 2458300.5)
        assert rec["pdiffimfilename"] == "ztf_20200924431759_000655_zr_c13_o_q3_scimrefdiffimg.fits"
        assert (rec["magzpsci"], rec["nmatches"], rec["exptime"], rec["programpi"]) == (26.285139, 2058, 30.0,
                                                                                          "Kulkarni")
        assert (rec["rbversion"], rec["drbversion"], rec["tooflag"]) == ("ztfsds_rb_v1", "d6_m7", 0)
        assert rec["diffmaglim"] == 20.62


def test_positions_are_one_based_and_on_the_wcs(quadrant, records):
    cands, sci, _, _ = quadrant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(sci)
    x = np.array([r["xpos"] for r in records])
    y = np.array([r["ypos"] for r in records])
    np.testing.assert_allclose(x, np.asarray(cands["xpos"]) + 1.0)
    np.testing.assert_allclose(y, np.asarray(cands["ypos"]) + 1.0)
    ra, dec = wcs.all_pix2world(x, y, 1)       # FITS (1-based) convention
    sep = np.hypot((np.array([r["ra"] for r in records]) - ra) * np.cos(np.radians(dec)),
                   np.array([r["dec"] for r in records]) - dec) * 3.6e6
    assert sep.max() < 0.01                    # [mas]
    # IPAC's mindtoedge: min(x, y, NAXIS1 + 0.5 - x, NAXIS2 + 0.5 - y) on 1-based positions
    expected = np.minimum.reduce([x, y, 3072.5 - x, 3080.5 - y])
    np.testing.assert_allclose([r["mindtoedge"] for r in records], expected)
    assert records[0]["xpos"] == 1.0 and records[0]["mindtoedge"] == 1.0


def test_derived_fields_and_sentinels(quadrant, records):
    cands, _, _, _ = quadrant
    for rec, row in zip(records, cands):
        if np.isfinite(row["magap"]):
            assert rec["magfromlim"] == pytest.approx(20.62 - row["magap"])
        assert rec["seeratio"] == pytest.approx(min(1.241 / row["fwhm"], 2.0))
        assert rec["aimagerat"] == pytest.approx(row["aimage"] / row["fwhm"])
        assert rec["elong"] == pytest.approx(row["elong"])
        far = not np.isfinite(row["distnr"]) or row["distnr"] * 1.012 > 30.0
        if far:
            assert (rec["distnr"], rec["magnr"], rec["ranr"], rec["decnr"]) == (-999.0,) * 4
        else:
            assert rec["distnr"] == pytest.approx(row["distnr"]) and rec["magnr"] == pytest.approx(row["magnr"])
        assert rec["ndethist"] == rec["ncovhist"] == 1 and rec["jdstarthist"] == rec["jd"]
        assert rec["nmtchps"] == 0
        missing = {k for k, v in rec.items() if v is None}
        assert missing == NOT_MEASURED | ASSOCIATIONS
    assert records[3]["distnr"] == -999.0
    assert sum(r["distnr"] == -999.0 for r in records) == 1 + int(np.sum(np.asarray(cands["distnr"]) * 1.012 > 30))
    assert records[5]["magpsf"] == -999.0      # a failed fit: required float, ZTF sentinel


def test_associations_override_and_masked_become_null(quadrant):
    cands, sci, diff, _ = quadrant
    n = len(cands)
    assoc = Table()
    assoc["ndethist"] = np.arange(n) + 2
    assoc["jdstarthist"] = np.full(n, 2459000.5)
    assoc["sgscore1"] = MaskedColumn(np.full(n, 0.9), mask=np.arange(n) % 2 == 0)
    assoc["objectidps1"] = np.full(n, 148783046447405858, dtype=np.int64)
    assoc["ssnamenr"] = ["null"] * n
    assoc["not_a_field"] = np.zeros(n)
    recs = candidate_records(cands, sci, diff, associations=assoc)
    assert [r["ndethist"] for r in recs] == list(range(2, n + 2))
    assert recs[0]["sgscore1"] is None and recs[1]["sgscore1"] == 0.9
    assert recs[0]["objectidps1"] == 148783046447405858 and recs[0]["ssnamenr"] == "null"
    assert "not_a_field" not in recs[0]
    with pytest.raises(AlertPacketError, match="3 rows for 40 candidates"):
        candidate_records(cands, sci, diff, associations=assoc[:3])


def test_missing_keywords_are_clear(quadrant):
    cands, sci, diff, _ = quadrant
    bad = sci.copy()
    del bad["OBSJD"]
    with pytest.raises(MissingKeywordError, match="OBSJD"):
        candidate_records(cands, bad, diff)
    assert candidate_records(cands[:0], sci, diff) == []


def test_history_records_look_like_the_real_ones(quadrant, records):
    _, sci, diff, _ = quadrant
    with open(DATA / "alerts" / "v3.3_1628364324215010017.avro", "rb") as fh:
        real = next(fastavro.reader(fh))
    real_ul = next(p for p in real["prv_candidates"] if p["candid"] is None)
    ul = upper_limit_from_headers(sci, diff)
    assert set(ul) == set(real_ul) == set(field_names("prv_candidate"))
    assert {k for k, v in ul.items() if v is not None} == {k for k, v in real_ul.items() if v is not None}
    assert ul["candid"] is None and ul["magpsf"] is None and ul["diffmaglim"] == 20.62
    det = prv_candidate_from_candidate(records[2])
    assert set(det) == set(field_names("prv_candidate"))
    assert det["candid"] == records[2]["candid"] and det["magpsf"] == records[2]["magpsf"]
    with pytest.raises(AlertPacketError, match="not prv_candidate fields"):
        upper_limit_record(2459000.5, 1, 1, 20.0, sgscore1=0.5)


def test_fp_hists_from_real_forced_photometry():
    forced = read_forced_photometry(DATA / "forcedphotometry_req00108452_lc_trimmed.txt.gz")
    recs = fp_hists_from_forced(forced[:60], ranr=10.0, decnr=20.0)
    assert len(recs) == 60
    assert all(set(r) == set(field_names("fp_hist")) for r in recs)
    assert [r["jd"] for r in recs] == sorted(r["jd"] for r in recs)
    row = forced[0]
    first = next(r for r in recs if r["pid"] == int(row["pid"]) and r["jd"] == float(row["jd"]))
    assert first["rcid"] == 4 * (int(row["ccdid"]) - 1) + int(row["qid"]) - 1
    assert first["fid"] == {"ZTF_g": 1, "ZTF_r": 2, "ZTF_i": 3}[str(row["filter"])]
    assert first["magzpsci"] == float(row["zpmaginpsci"]) and first["clrcounc"] == float(row["clrcoeffunc"])
    assert first["distnr"] == float(row["dnearestrefsrc"]) and (first["ranr"], first["decnr"]) == (10.0, 20.0)
    failed = [r for r in fp_hists_from_forced(forced) if r["procstatus"] == "61"]
    assert failed and all(r["forcediffimflux"] == -99999.0 for r in failed)
    assert all(r["magnr"] is None or r["magnr"] > -99999 for r in failed)
    with pytest.raises(AlertPacketError, match="not fp_hist fields"):
        fp_hist_record(jd=1.0, fid=1, pid=1, rfid=1, flux=3.0)


def _history(records, sci, diff):
    """A realistic 30-day history: 8 detections (earlier candidates) and 12 upper limits."""
    prv = []
    for k in range(20):
        if k % 5 in (0, 2):
            rec = prv_candidate_from_candidate(records[k])
            rec["jd"] = records[k]["jd"] - 30 + k
        else:
            rec = upper_limit_from_headers(sci, diff)
            rec["jd"] -= 29.5 - k
        prv.append(rec)
    return prv


def test_packets_validate_and_read_back_with_the_official_schema(quadrant, records):
    cands, sci, diff, stamps = quadrant
    forced = read_forced_photometry(DATA / "forcedphotometry_req00108452_lc_trimmed.txt.gz")
    fph = fp_hists_from_forced(forced[:15])
    schema = load_schema()
    official = official_schema()
    sizes = []
    for i, rec in enumerate(records):
        packet = make_alert(rec, objectid="ZTF20abcdefg", prv_candidates=_history(records, sci, diff),
                            fp_hists=fph, cutouts=stamps[i])
        validate(packet, schema)
        fastavro.validation.validate(packet, official, raise_errors=True)
        data = packet_bytes(packet, schema)
        sizes.append(len(data))
        with io.BytesIO(data) as fh:
            got = next(fastavro.reader(fh, reader_schema=official))
        assert got["candid"] == rec["candid"] and got["objectId"] == "ZTF20abcdefg"
        for key, value in rec.items():
            if isinstance(value, float):
                assert got["candidate"][key] == pytest.approx(value, rel=1e-6, abs=1e-30), key
            else:
                assert got["candidate"][key] == value, key
        assert len(got["prv_candidates"]) == 20 and len(got["fp_hists"]) == 15
        assert [p["jd"] for p in got["prv_candidates"]] == sorted(p["jd"] for p in got["prv_candidates"])
        sci_stamp = cutout_array(got["cutoutScience"]["stampData"])
        assert sci_stamp.tobytes() == stamps[i, 0].tobytes()
        diff_stamp = cutout_array(got["cutoutDifference"]["stampData"])
        sign = 1.0 if rec["isdiffpos"] == "t" else -1.0     # negative candidates: ref - sci, as IPAC
        np.testing.assert_array_equal(diff_stamp, sign * stamps[i, 2])
        assert got["cutoutDifference"]["fileName"].endswith("scimref.fits.gz" if sign > 0 else "refmsci.fits.gz")
    # real packets: 50-90 kB (mean 68 kB); ours with 20 history entries and 15 fp_hists
    assert 55_000 < np.median(sizes) < 95_000, np.median(sizes)


def test_invalid_packet_names_the_field(records):
    packet = make_alert(dict(records[0], magpsf="bright"), objectid="ZTF20aaaaaaa")
    with pytest.raises(AlertPacketError, match="magpsf"):
        validate(packet)
    with pytest.raises(AlertPacketError, match="magpsf"):
        packet_bytes(packet)
    with pytest.raises(AlertPacketError, match="science, template, difference"):
        make_alert(records[0], objectid="ZTF20aaaaaaa", cutouts=(None, None))
    empty = make_alert(records[0], objectid="ZTF20aaaaaaa", prv_candidates=[], fp_hists=None)
    assert empty["prv_candidates"] is None and empty["cutoutScience"] is None
    validate(empty)


def test_candidates_product_read_back_from_fits(tmp_path, quadrant, records):
    """The candidates table as run_subtract writes it (FITS binary table) gives the same records."""
    from ztfsds.products import table_hdulist

    cands, sci, diff, _ = quadrant
    path = tmp_path / "ztf_20200924431759_000655_zr_c13_o_q3_candidates.fits"
    table_hdulist(diff, cands, "CANDIDATES").writeto(path)
    back = Table.read(path, hdu="CANDIDATES")
    again = candidate_records(back, sci, diff)
    assert [r["candid"] for r in again] == [r["candid"] for r in records]
    assert [r["isdiffpos"] for r in again] == [r["isdiffpos"] for r in records]
    assert again[7]["ra"] == records[7]["ra"]
