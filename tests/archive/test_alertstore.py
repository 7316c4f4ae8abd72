"""The alert archive on real ZTF packets (schemas 1.7 - 3.5): round trip, search, history, cutouts."""

import gzip
import io
import json
import math
import struct
import tarfile
import warnings
from pathlib import Path

import fastavro
import numpy as np
import pytest

from ztfsds.archive import (alert_cutouts, alert_history, get_alerts, get_packet_bytes, ingest_alerts,
                            search_alerts)
from ztfsds.errors import ArchiveError, InputError

REAL = Path(__file__).parent.parent / "data" / "alerts_real"
FILES = sorted(REAL.glob("*.avro"))


def _read(path):
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        return reader.metadata["avro.schema"], list(reader)


def _identical(a, b, where="packet"):
    """Deep equality with floats compared bit for bit (NaN equal to itself)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert isinstance(b, float) and struct.pack("<d", a) == struct.pack("<d", b), (where, a, b)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def test_the_sample_covers_the_schema_versions():
    versions = {json.loads(_read(f)[0])["version"] for f in FILES}
    assert {"1.7", "1.8", "2.0", "3.0", "3.1", "3.2", "3.3", "3.5"} <= versions
    assert sum(f.stat().st_size for f in REAL.iterdir()) < 1_000_000


def test_newer_reader_schema_fails_on_some_old_packets():
    """Why packets are kept in their own writer schema: 3.3's schema cannot read a 3.1 packet."""
    schema_31, (rec31,) = _read(REAL / "v3.1_697252845815015007.avro")
    schema_33, _ = _read(REAL / "v3.3_472263571115115000.avro")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(schema_31)), rec31)
    buf.seek(0)
    with pytest.raises(Exception):
        fastavro.schemaless_reader(buf, fastavro.parse_schema(json.loads(schema_31)),
                                   fastavro.parse_schema(json.loads(schema_33)))


def test_round_trip_field_for_field(db):
    assert ingest_alerts(db, REAL) == len(FILES)
    assert db.query("SELECT COUNT(*) FROM alert_packets") == [(len(FILES),)]
    nschemas = len({json.loads(_read(f)[0])["version"] for f in FILES})
    assert db.query("SELECT COUNT(*) FROM avro_schemas")[0][0] >= nschemas
    for f in FILES:
        schema_json, (record,) = _read(f)
        back = get_alerts(db, [record["candid"]])[0]
        _identical(record, back, f.name)
        # the container we hand out carries the original writer schema and the same packet
        data = get_packet_bytes(db, record["candid"])
        reader = fastavro.reader(io.BytesIO(data))
        assert json.loads(reader.metadata["avro.schema"]) == json.loads(schema_json)
        _identical(record, next(reader), f.name + " (container)")


def test_ingest_is_idempotent_and_takes_tars_and_bytes(db, tmp_path):
    tar_path = tmp_path / "ztf_public_20200101.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for f in FILES[:5]:
            tar.add(f, arcname=f.name)
    assert ingest_alerts(db, tar_path) == 5
    before = db.query("SELECT candid, packet FROM alert_packets ORDER BY candid")
    nhist = db.query("SELECT COUNT(*) FROM alert_history")[0][0]
    assert ingest_alerts(db, FILES[0].read_bytes()) == 1
    assert ingest_alerts(db, tar_path) == 5
    after = db.query("SELECT candid, packet FROM alert_packets ORDER BY candid")
    assert [(c, bytes(p)) for c, p in after] == [(c, bytes(p)) for c, p in before]
    assert db.query("SELECT COUNT(*) FROM alert_history")[0][0] == nhist
    assert db.query("SELECT source FROM alert_packets WHERE candid = ?",
                    (_read(FILES[1])[1][0]["candid"],))[0][0].endswith(FILES[1].name)


def test_schemaless_packets(db):
    schema_json, (record,) = _read(FILES[-1])
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(schema_json)), record)
    assert ingest_alerts(db, buf.getvalue(), schema=schema_json) == 1
    _identical(record, get_alerts(db, [record["candid"]])[0])


def test_bad_input_is_named(db, tmp_path):
    bad = tmp_path / "broken.avro"
    bad.write_bytes(b"Obj\x01garbage")
    with pytest.raises(InputError, match="broken.avro"):
        ingest_alerts(db, bad)
    with pytest.raises(InputError, match="not found"):
        ingest_alerts(db, tmp_path / "none.avro")
    with pytest.raises(ArchiveError, match="not stored"):
        get_alerts(db, [1234])


def test_search_alerts(db):
    ingest_alerts(db, REAL)
    records = [_read(f)[1][0] for f in FILES]
    everything = search_alerts(db)
    assert sorted(everything["candid"].tolist()) == sorted(r["candid"] for r in records)
    assert np.all(np.diff(everything["jd"]) >= 0)
    r = records[4]
    c = r["candidate"]
    by_id = search_alerts(db, objectid=r["objectId"])
    assert r["candid"] in by_id["candid"].tolist()
    cone = search_alerts(db, ra=c["ra"] + 1.0 / 3600, dec=c["dec"], radius_arcsec=2.0)
    assert r["candid"] in cone["candid"].tolist() and np.all(cone["dist"] <= 2.0)
    assert cone["dist"][cone["candid"] == r["candid"]][0] == pytest.approx(np.cos(np.radians(c["dec"])), rel=1e-6)
    mags = np.array([x["candidate"]["magpsf"] for x in records])
    got = search_alerts(db, mag_min=17.0, mag_max=19.0)
    assert len(got) == int(np.sum((mags >= 17.0) & (mags <= 19.0)))
    rbs = np.array([x["candidate"]["rb"] if x["candidate"]["rb"] is not None else -1 for x in records])
    assert len(search_alerts(db, rb_min=0.5)) == int(np.sum(rbs >= 0.5))
    jds = np.array([x["candidate"]["jd"] for x in records])
    assert len(search_alerts(db, jd_min=2458500.0)) == int(np.sum(jds >= 2458500.0))
    assert len(search_alerts(db, limit=3)) == 3
    with pytest.raises(ArchiveError, match="needs ra, dec and radius"):
        search_alerts(db, ra=10.0)


def test_alert_history_is_the_union_of_packet_histories(db):
    ingest_alerts(db, REAL)
    for f in FILES:
        (record,) = _read(f)[1]
        entries = [record["candidate"]] + list(record["prv_candidates"] or [])
        keys = {(e["jd"], e["fid"]) for e in entries}
        hist = alert_history(db, record["objectId"])
        got = set(zip(hist["jd"].tolist(), hist["fid"].tolist()))
        assert keys <= got, f.name
        assert np.all(np.diff(hist["jd"]) >= 0)
        # detections carry their candid, upper limits none
        dets = {(e["jd"], e["fid"]): e["candid"] for e in entries if e.get("candid")}
        for jd, fid, cand in zip(hist["jd"], hist["fid"], hist["candid"].filled(0)):
            if (jd, fid) in dets:
                assert cand == dets[(jd, fid)]
    # the same object in two packets: its history counted once
    objectids = [_read(f)[1][0]["objectId"] for f in FILES]
    for o in set(objectids):
        hist = alert_history(db, o)
        assert len(set(zip(hist["jd"].tolist(), hist["fid"].tolist()))) == len(hist)


def test_alert_cutouts(db):
    ingest_alerts(db, REAL)
    (record,) = _read(FILES[6])[1]
    cut = alert_cutouts(db, record["candid"])
    assert set(cut) == {"science", "template", "difference"}
    from astropy.io import fits

    raw = gzip.decompress(record["cutoutDifference"]["stampData"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)   # old stamps' SIMPLE card
        with fits.open(io.BytesIO(raw)) as hdul:
            expected = np.asarray(hdul[0].data, np.float32)
    assert cut["difference"].shape == (63, 63)
    assert np.array_equal(cut["difference"], expected, equal_nan=True)
    assert math.isfinite(float(np.nanmedian(cut["science"])))
