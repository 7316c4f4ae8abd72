"""run_alerts on synthetic pipeline products (tests/alerts/runner_synth.py): a transient T seen on 7 epochs
of one quadrant over 40 days, its history, object ids, fp_hists and associations, idempotent re-runs,
compact packets and Kafka."""

import io
import json
import sys

import fastavro
import numpy as np
import pytest

from ztfsds.alerts import read_alerts
from ztfsds.alerts.runner import alert_tar_path, read_compact_tar, run_alerts, select_alerts
from ztfsds.alerts.schema import load_schema, schema_path
from ztfsds.archive import alert_history, connect, search_alerts
from ztfsds.config import AlertParams, Config
from ztfsds.products import ProductStore

from .runner_synth import A_XY, JD0, SIGMA_D, T_XY, write_asteroids, write_epoch, write_reference_catalog

# (days after JD0, flux of T, flux of A, a streak candidate at T)
EPOCHS = [(0, 400.0, None, False), (20, 500.0, None, False), (24, None, None, False), (27, 600.0, None, False),
          (31, None, 800.0, True), (36, 700.0, None, False), (40, 900.0, None, False)]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    store = ProductStore(tmp_path_factory.mktemp("alertrun"))
    keys = [write_epoch(store, JD0 + dt, t_flux=tf, a_flux=af, streak_at_t=st, seed=i)[0]
            for i, (dt, tf, af, st) in enumerate(EPOCHS)]
    write_reference_catalog(store, keys[0], [(T_XY[0] + 0.5, T_XY[1], 19.0), (60.0, 60.0, 17.0)])
    write_asteroids(store, "2830", A_XY, JD0 + 31)
    statuses = [run_alerts(k, store) for k in keys]
    packets = [list(read_alerts(s.outputs[0])) for s in statuses]
    return store, keys, statuses, packets


def _at(packets, xy, tol=0.2):
    """The packet of the candidate at 0-based pixel ``xy`` (packets hold 1-based positions)."""
    out = [p for p in packets if abs(p["candidate"]["xpos"] - 1 - xy[0]) < tol and abs(p["candidate"]["ypos"] - 1 - xy[1]) < tol]
    assert len(out) <= 1
    return out[0] if out else None


def test_statuses_and_tars(night):
    store, keys, statuses, packets = night
    for key, status, pk in zip(keys, statuses, packets):
        assert status.ok, str(status)
        assert status.outputs == [alert_tar_path(store, key)]
        assert status.outputs[0].name == key.filename.replace("_sciimg.fits", "_alerts.tar")
        assert f"{len(pk)} alerts" in status.message
    # the streak candidate at epoch 4 is not an alert
    assert len(packets[4]) == 7 and "of 8 candidates" in statuses[4].message


def test_history_of_transient(night):
    """The last packet of T lists exactly the detections and limits of the 30-day window before it."""
    _, _, _, packets = night
    last = _at(packets[-1], T_XY)
    prv = last["prv_candidates"]
    det = [(round(r["jd"] - JD0, 3), r["candid"]) for r in prv if r["candid"] is not None]
    lim = [(round(r["jd"] - JD0, 3), r["pid"], r["diffmaglim"]) for r in prv if r["candid"] is None]
    expect_det = [(float(d), _at(packets[i], T_XY)["candid"]) for i, d in ((1, 20), (3, 27), (5, 36))]
    assert det == expect_det
    # the limits: epoch 2 (T absent) and epoch 4 (only a streak candidate there), with their images' limits
    assert [(d, p) for d, p, _ in lim] == [(24.0, packets[2][0]["candidate"]["pid"]),
                                           (31.0, packets[4][0]["candidate"]["pid"])]
    assert [round(m, 3) for _, _, m in lim] == [round(packets[2][0]["candidate"]["diffmaglim"], 3),
                                                round(packets[4][0]["candidate"]["diffmaglim"], 3)]
    # earlier detections carry their measurements (1-based positions, as the packets')
    d0 = next(r for r in prv if r["candid"] == expect_det[0][1])
    c0 = _at(packets[1], T_XY)["candidate"]
    for f in ("ra", "dec", "magpsf", "sigmapsf", "xpos", "ypos", "rb", "fid", "pid", "isdiffpos", "field", "rcid",
              "magzpsci", "diffmaglim", "aimagerat", "magfromlim"):
        assert d0[f] == pytest.approx(c0[f], abs=1e-5) if isinstance(c0[f], float) else d0[f] == c0[f], f
    c = last["candidate"]
    assert (c["ndethist"], c["ncovhist"]) == (5, 7)          # since the survey start (epoch 0 too), this one included
    assert c["jdstarthist"] == pytest.approx(JD0) and c["jdendhist"] == pytest.approx(JD0 + 40)


def test_object_ids(night):
    _, _, _, packets = night
    t_ids = {_at(packets[i], T_XY)["objectId"] for i in (0, 1, 3, 5, 6)}
    assert len(t_ids) == 1
    a_id = _at(packets[4], A_XY)["objectId"]
    assert a_id not in t_ids and a_id.startswith("ZTF20") and len(a_id) == 12
    # every alert has the id of the first earlier alert within 1.5 arcsec, else a new one (in order)
    known, expect = [], []
    for pk in packets:
        for p in pk:
            c = p["candidate"]
            d = [np.hypot((c["ra"] - r) * np.cos(np.radians(c["dec"])), c["dec"] - e) * 3600 for r, e, _ in known]
            if d and min(d) < 1.5:
                expect.append(known[int(np.argmin(d))][2])
            else:
                known.append((c["ra"], c["dec"], p["objectId"]))
                expect.append(p["objectId"])
    assert [p["objectId"] for pk in packets for p in pk] == expect
    assert len({o for _, _, o in known}) == len(known) > 20
    # the first object of 2020 has the first id of the year
    assert _at(packets[0], T_XY)["objectId"] == "ZTF20aaaaaaa"


def test_fp_hists_measure_the_transient(night):
    """Forced photometry on the earlier difference images: the injected flux where T was, ~0 elsewhere."""
    _, _, _, packets = night
    fp = _at(packets[-1], T_XY)["fp_hists"]
    assert [round(r["jd"] - JD0) for r in fp] == [20, 24, 27, 31, 36]
    truth = {20: 500.0, 24: 0.0, 27: 600.0, 31: 0.0, 36: 700.0}
    for r in fp:
        err = r["forcediffimfluxunc"]
        assert 0.5 * SIGMA_D * np.sqrt(4 * np.pi * 1.3**2) < err < 2 * SIGMA_D * np.sqrt(4 * np.pi * 1.3**2)
        assert abs(r["forcediffimflux"] - truth[round(r["jd"] - JD0)]) < 4 * err, r
        assert r["procstatus"] == "0" and r["rfid"] == 655120250
    # the reference source 0.5 px from T: distnr in arcsec in fp_hist, ranr/decnr the candidate's
    assert fp[0]["distnr"] == pytest.approx(0.5, abs=0.01)
    cand = _at(packets[-1], T_XY)["candidate"]
    assert cand["distnr"] == pytest.approx(0.5, abs=0.01) and fp[0]["ranr"] == cand["ranr"] != -999


def test_associations(night):
    _, _, _, packets = night
    a = _at(packets[4], A_XY)["candidate"]
    assert a["ssnamenr"] == "2830" and a["ssdistnr"] == pytest.approx(0.0, abs=0.05) and a["ssmagnr"] == 19.5
    t = _at(packets[4 + 1], T_XY)["candidate"]
    assert t["ssnamenr"] == "null" and t["ssdistnr"] == -999
    # no calibrator catalogs under this root: ZTF's sentinels
    assert t["sgscore1"] == -999 and t["distpsnr1"] == -999 and t["objectidps1"] == -999 and t["nmtchps"] == 0
    assert t["neargaia"] == -999


def test_packets_validate_and_read_with_the_schema_only(night):
    """Every packet follows the 4.02 schema and decodes with a reader built from the .avsc files alone."""
    _, _, statuses, _ = night
    import tarfile

    from ztfsds.alerts import validate

    names = ("cutout", "candidate", "prv_candidate", "fp_hist", "alert")
    named = {}
    for part in names:
        named_schema = fastavro.schema.parse_schema(json.loads(schema_path(part=part).read_text()), named)
    n = 0
    for status in statuses:
        with tarfile.open(status.outputs[0]) as tar:
            for member in tar:
                data = tar.extractfile(member).read()
                rec = next(fastavro.reader(io.BytesIO(data), reader_schema=named_schema))
                validate(rec, load_schema())
                assert rec["schemavsn"] == "4.02" and rec["cutoutScience"]["stampData"][:2] == b"\x1f\x8b"
                n += 1
    assert n == sum(len(p) for p in night[3])


def test_archive_and_idempotent_rerun(night):
    store, keys, statuses, packets = night
    db = connect(None, store=store)
    try:
        stored = search_alerts(db)
        assert len(stored) == sum(len(p) for p in packets)
        counter = db.query("SELECT n FROM object_counters")[0][0]
        oid = _at(packets[-1], T_XY)["objectId"]
        hist = alert_history(db, oid)
        assert int(np.sum(~np.asarray(hist["candid"].mask) if hasattr(hist["candid"], "mask") else len(hist))) >= 5
        before = db.query("SELECT objectid, ndet FROM objects ORDER BY objectid")
        again = run_alerts(keys[-1], store, db=db)
        assert again.ok
        assert [p["objectId"] for p in read_alerts(again.outputs[0])] == [p["objectId"] for p in packets[-1]]
        assert [p["prv_candidates"] for p in read_alerts(again.outputs[0])] == [p["prv_candidates"] for p in packets[-1]]
        assert db.query("SELECT n FROM object_counters")[0][0] == counter
        assert db.query("SELECT objectid, ndet FROM objects ORDER BY objectid") == before
        assert len(search_alerts(db)) == len(stored)
    finally:
        db.close()


def test_compact_and_kafka(night, monkeypatch):
    """Compact packets: schemaless, no cutouts, the schema in the tar; Kafka: a clear failure without the
    client, the packets sent through a stand-in client otherwise."""
    from .test_kafka import fake_module

    store, keys, _, packets = night
    config = Config(alerts=AlertParams(compact=True, kafka_servers="127.0.0.1:9"))
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)     # not installed
    status = run_alerts(keys[-1], store, config)
    assert status.ok and "Kafka distribution failed" in status.message and "confluent-kafka" in status.message
    compact = read_compact_tar(status.outputs[0])
    assert status.outputs[0].name.endswith("_alerts_compact.tar")
    assert [p["candid"] for p in compact] == [p["candid"] for p in packets[-1]]
    assert all(p["cutoutScience"] is None for p in compact)
    assert [p["prv_candidates"] for p in compact] == [p["prv_candidates"] for p in packets[-1]]
    ratio = alert_tar_path(store, keys[-1]).stat().st_size / status.outputs[0].stat().st_size
    assert ratio > 3, ratio
    module, sent = fake_module()
    monkeypatch.setitem(sys.modules, "confluent_kafka", module)
    status = run_alerts(keys[-1], store, Config(alerts=AlertParams(kafka_servers="127.0.0.1:9")))
    assert status.ok and f"{len(packets[-1])} sent to Kafka topic ztf_20201018_programid1" in status.message
    assert len(sent) == len(packets[-1])


def test_select_alerts():
    from astropy.table import Table

    t = Table({"magpsf": [18.0, np.nan, 19.0, 19.5, 20.0], "sigmapsf": [0.1, 0.1, 0.2, 0.1, 0.0],
               "onstreak": [0, 0, 1, 0, 0], "rb": [0.9, 0.8, 0.9, 0.3, 0.9]})
    assert select_alerts(t).tolist() == [True, False, False, True, False]
    assert select_alerts(t, min_rb=0.5).tolist() == [True, False, False, False, False]


def test_missing_candidates_product(tmp_path):
    status = run_alerts("ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits", ProductStore(tmp_path))
    assert not status.ok and "candidates" in status.message and status.outputs == []
