"""Identifier arithmetic against the ids of real ZTF alert packets (tests/data/real_*_ids.csv)."""

import csv
import datetime as dt

import pytest
from astropy.time import Time

from ztfsds.products import ids


def _rows(test_data_dir, name):
    with open(test_data_dir / name, newline="") as fh:
        return list(csv.DictReader(fh))


def test_real_alert_pid_expid_nid(test_data_dir):
    rows = _rows(test_data_dir, "real_alert_ids.csv")
    assert len(rows) >= 100
    for r in rows:
        jd, pid = float(r["jd"]), int(r["pid"])
        expid, rcid, pipeline = ids.parse_pid(pid)
        assert expid == ids.expid(jd), r
        assert pipeline == ids.PIPELINE_ID
        if r["rcid"]:
            assert rcid == int(r["rcid"])
            assert ids.pid(ids.expid(jd), rcid) == pid
        if r["nid"]:
            assert ids.nid(jd) == int(r["nid"])
        assert ids.parse_candid(int(r["candid"]))[0] == pid


def test_real_prv_candidates_pid(test_data_dir):
    rows = _rows(test_data_dir, "real_prv_ids.csv")
    assert len(rows) >= 500
    for r in rows:
        expid, rcid, _ = ids.parse_pid(int(r["pid"]))
        assert expid == ids.expid(float(r["jd"]))
        if r["rcid"]:
            assert rcid == int(r["rcid"])


def test_real_candid_rule_2019_onwards(test_data_dir):
    rows = [r for r in _rows(test_data_dir, "real_alert_ids.csv") if r["schemavsn"] in ("3.2", "3.3")]
    assert len(rows) >= 80
    for r in rows:
        assert ids.candid(int(r["pid"]), int(r["tblid"]), r["isdiffpos"]) == int(r["candid"]), r


def test_real_rfid(test_data_dir):
    rows = [r for r in _rows(test_data_dir, "real_alert_ids.csv") if r["rfid"] and r["field"] and r["rcid"]]
    assert len(rows) >= 80
    for r in rows:
        assert ids.rfid(int(r["field"]), int(r["fid"]), int(r["rcid"])) == int(r["rfid"])


def test_real_objectids_roundtrip(test_data_dir):
    for r in _rows(test_data_dir, "real_alert_ids.csv"):
        year, number = ids.objectid_to_number(r["objectId"])
        assert 2017 <= year <= 2030
        assert ids.objectid_from_number(year, number) == r["objectId"]
    assert ids.objectid_from_number(2018, 0) == "ZTF18aaaaaaa"
    assert ids.objectid_from_number(2018, 26**7 - 1) == "ZTF18zzzzzzz"
    # assigned in order -> ids sort in order
    assert ids.objectid_from_number(2020, 1000) < ids.objectid_from_number(2020, 1001)


def test_real_header_ids():
    # the real science quadrant ztf_20200924431759_000655_zr_c13_o_q3: OBSJD, EXPID, RCID, DBPID, DBRID
    obsjd = 2459116.9317708
    assert ids.nid(obsjd) == 1362
    assert ids.expid(obsjd) == 136243177
    assert ids.pid(136243177, 50) == 1362431775015
    assert ids.dbrid(136243177, 50) == 13624317750
    assert ids.expid(Time(obsjd, format="jd", scale="utc")) == 136243177
    assert ids.night_date(1362) == dt.date(2020, 9, 24)
    assert ids.nid(dt.date(2018, 4, 18)) == 472


def test_filefracday_and_expid_agree():
    jd = Time("2021-06-14T20:44:56.000", scale="utc").jd
    ffd = ids.filefracday(jd)
    assert ffd == "20210614864537"
    assert ids.expid(ffd) == ids.expid(jd)
    assert ids.parse_expid(ids.expid(jd)) == (ids.nid(jd), 0.86453)


def test_fcqfid_and_oid():
    assert ids.fcqfid(506, 3, 3, 1) == 5060331
    assert ids.parse_fcqfid(5060331) == (506, 3, 3, 1)
    assert ids.lightcurve_oid(250, 1, 1, 1, 1) == 250101100000001


@pytest.mark.parametrize("call", [
    lambda: ids.pid(1, 64),
    lambda: ids.candid(1, 5000, "t"),
    lambda: ids.candid(1, 0, "x"),
    lambda: ids.objectid_to_number("ZTF18ABCDEFG"),
    lambda: ids.objectid_from_number(2018, -1),
    lambda: ids.expid("2020092443175"),
])
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()
