"""The archive's HTTP service against a real uvicorn server on loopback: every endpoint, access control,
malformed queries (never a 5xx), the OpenAPI description."""

import gzip
import io
import json
import random
import struct
from urllib.parse import quote

import fastavro
import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from archive.service_data import (CALTECH, CENTRE, CUTOFF_JD, IMAGES, MIXED_PACKET, NOW_JD, PARTNER,
                                  PROPRIETARY_PACKET, TOKENS, build_archive, proprietary, running,
                                  shared_archive)
from ztfsds.archive import connect, cone_search, migrate, search_images
from ztfsds.archive.service import AccessPolicy, create_app, load_tokens
from ztfsds.errors import ArchiveError, ConfigError

IRSA_COLUMNS = ("oid expid hjd mjd mag magerr catflags filtercode ra dec chi sharp filefracday field ccdid qid "
                "limitmag magzp magzprms clrcoeff clrcounc exptime airmass programid").split()
RA, DEC = CENTRE
POS = f"CIRCLE {RA} {DEC} 0.01"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return shared_archive(tmp_path_factory)


@pytest.fixture(scope="module")
def url(archive):
    with running(create_app(archive["root"], tokens=TOKENS, now_jd=NOW_JD)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _auth(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def _rows(client, path, token=None, **params):
    r = client.get(path, params=params, headers=_auth(token))
    assert r.status_code == 200, (path, r.text)
    return r.json()


def _csv(client, path, token=None, **params):
    r = client.get(path, params=params, headers=_auth(token))
    assert r.status_code == 200, (path, r.text)
    return Table.read(r.text, format="ascii.csv")


# -- each endpoint ------------------------------------------------------------------------------------
def test_image_search_is_search_images(client, archive):
    got = _rows(client, "/api/images", CALTECH, ra=RA, dec=DEC)
    db = connect(store=archive["store"])
    try:
        truth = search_images(db, ra=RA, dec=DEC)
    finally:
        db.close()
    assert got["count"] == len(truth) == len(IMAGES) == 4
    assert [r["pid"] for r in got["rows"]] == truth["pid"].tolist()
    assert got["rows"][0]["magzp"] == pytest.approx(26.3) and got["rows"][0]["seeing"] == pytest.approx(2.1)
    # filters pass through
    assert _rows(client, "/api/images", CALTECH, jd_min=NOW_JD - 9.5, jd_max=NOW_JD)["count"] == 2
    assert _rows(client, "/api/images", CALTECH, field=655, ccdid=13, qid=3, fid=2, limit=3)["count"] == 3
    assert _rows(client, "/api/images", CALTECH, fid=1)["count"] == 0
    assert _rows(client, "/api/images", CALTECH, ra=RA + 1, dec=DEC)["count"] == 0
    assert _rows(client, "/api/images", CALTECH, max_seeing=2.0)["count"] == 0
    # one image's row
    pid = got["rows"][0]["pid"]
    assert _rows(client, f"/api/images/{pid}", CALTECH)["pid"] == pid


def test_image_product_and_cutouts(client, archive):
    (pid, jd), = [(p, j) for (j, prog), p in archive["pids"].items() if prog == 1]
    row = _rows(client, f"/api/images/{pid}")
    path = archive["root"] / "sci" / "/".join(row["sciimg"].split("/")[1:])
    r = client.get(f"/api/images/{pid}/products/sciimg")
    assert r.status_code == 200 and r.headers["content-type"] == "application/fits"
    assert r.content == path.read_bytes()
    assert client.get(f"/api/images/{pid}/products/psfcat").status_code == 200
    assert client.get(f"/api/images/{pid}/products/scimrefdiffimg").status_code == 404   # not on disk
    # a FITS cutout: 41" = 41 px, its WCS puts (ra, dec) on its centre, its pixels are the image's
    r = client.get(f"/api/images/{pid}/cutout", params={"ra": RA, "dec": DEC, "size_arcsec": 41})
    assert r.status_code == 200
    with fits.open(io.BytesIO(r.content)) as hdul:
        cut, header = hdul[0].data, hdul[0].header
    assert cut.shape == (41, 41) and header["PROGRMID"] == 1 and header["OBSJD"] == pytest.approx(jd)
    x, y = WCS(header).all_world2pix(RA, DEC, 0)
    assert abs(x - 20) <= 0.5 and abs(y - 20) <= 0.5
    with fits.open(path) as hdul:
        image, wcs = hdul[0].data, WCS(hdul[0].header)
    x0, y0 = (int(round(float(v))) for v in wcs.all_world2pix(RA, DEC, 0))
    np.testing.assert_array_equal(cut, image[y0 - 20:y0 + 21, x0 - 20:x0 + 21])
    png = client.get(f"/api/images/{pid}/cutout", params={"ra": RA, "dec": DEC, "format": "png"})
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png.content[16:24]) == (256, 256) and len(png.content) > 10_000
    # a position off the image: 400 with the reason
    r = client.get(f"/api/images/{pid}/cutout", params={"ra": RA + 1, "dec": DEC})
    assert r.status_code == 400 and "not on image" in r.json()["detail"]


def test_catalog_cone_is_cone_search(client, archive):
    db = connect(store=archive["store"])
    try:
        truth = cone_search(db, "sources", RA, DEC, 40.0)
        progs = dict(db.query("SELECT pid, programid FROM quadimages"))
        jds = dict(db.query("SELECT pid, jd FROM quadimages"))
    finally:
        db.close()
    got = _rows(client, "/api/catalogs/sources", CALTECH, ra=RA, dec=DEC, radius_arcsec=40)
    assert [r["sourceid"] for r in got["rows"]] == truth["sourceid"].tolist() and got["count"] > 20
    assert np.allclose([r["dist"] for r in got["rows"]], truth["dist"])
    anon = _rows(client, "/api/catalogs/sources", ra=RA, dec=DEC, radius_arcsec=40)
    hidden = proprietary([progs[p] for p in truth["pid"]], [jds[p] for p in truth["pid"]])
    assert sorted(r["sourceid"] for r in anon["rows"]) == sorted(truth["sourceid"][~hidden].tolist())
    assert 0 < anon["count"] < got["count"]
    cands = _rows(client, "/api/catalogs/candidates", CALTECH, ra=RA, dec=DEC, radius_arcsec=300)
    assert cands["count"] == 2 * len(IMAGES)
    assert _rows(client, "/api/catalogs/candidates", ra=RA, dec=DEC, radius_arcsec=300, limit=1)["count"] == 1


def test_lightcurves_speak_irsa(client, archive):
    full = _csv(client, "/lightcurves", CALTECH, POS=POS, FORMAT="CSV")
    assert full.colnames == IRSA_COLUMNS and len(full) > 100
    assert set(full["programid"]) == {1, 2}
    # the same query from the Python API
    from ztfsds.match import query_lightcurves

    truth = query_lightcurves({"POS": POS}, root=archive["root"])
    assert len(truth) == len(full) and np.array_equal(truth["oid"], full["oid"])
    np.testing.assert_allclose(np.asarray(full["mjd"]), np.asarray(truth["mjd"]), rtol=0, atol=1e-8)
    # every IRSA format; IRSA's own path answers the same bytes
    oid = int(full["oid"][0])
    for fmt, check in (("VOTABLE", lambda b: Table.read(io.BytesIO(b), format="votable")),
                       ("IPAC_TABLE", lambda b: Table.read(b.decode(), format="ascii.ipac")),
                       ("CSV", lambda b: Table.read(b.decode(), format="ascii.csv")),
                       ("PARQUET", lambda b: Table(pq.read_table(io.BytesIO(b)).to_pydict()))):
        r = client.get("/lightcurves", params={"ID": oid, "FORMAT": fmt}, headers=_auth(CALTECH))
        assert r.status_code == 200, (fmt, r.text)
        table = check(r.content)
        assert len(table) == np.count_nonzero(full["oid"] == oid) and "hjd" in table.colnames, fmt
        irsa = client.get("/cgi-bin/ZTF/nph_light_curves", params={"ID": oid, "FORMAT": fmt},
                          headers=_auth(CALTECH))
        assert irsa.content == r.content, fmt
    # a plot
    png = client.get("/lightcurves/plot", params={"ID": oid}, headers=_auth(CALTECH))
    assert png.headers["content-type"] == "image/png" and struct.unpack(">II", png.content[16:24]) == (800, 450)


def test_alert_search_packet_cutouts_history(client, archive):
    rows = _rows(client, "/api/alerts", ra=RA, dec=DEC, radius_arcsec=5)
    assert [r["objectid"] for r in rows["rows"]] == ["ZTF18aaxjdyr"] and rows["rows"][0]["dist"] < 0.5
    assert _rows(client, "/api/alerts", jd_min=2458000, jd_max=2458300)["count"] == 5
    assert _rows(client, "/api/alerts", jd_min=2458000, jd_max=2459500, mag_max=17.0)["count"] < 12
    candid = rows["rows"][0]["candid"]
    original = archive["changed"][MIXED_PACKET]
    # the partner gets the packet as stored; the public its public epochs only
    for token, expect in ((CALTECH, original["prv_candidates"]),
                          (None, [p for p in original["prv_candidates"] if not proprietary(p["programid"], p["jd"])[0]])):
        r = client.get(f"/api/alerts/{candid}", headers=_auth(token))
        assert r.status_code == 200 and r.headers["content-type"] == "application/avro"
        (record,) = list(fastavro.reader(io.BytesIO(r.content)))
        assert record["candid"] == candid and record["prv_candidates"] == expect
        assert record["candidate"] == original["candidate"]
    assert 0 < len(expect) < len(original["prv_candidates"])
    # cutouts: the packet's FITS stamp, or a PNG
    fits_bytes = client.get(f"/api/alerts/{candid}/cutouts/science", params={"format": "fits"}).content
    stamp = original["cutoutScience"]["stampData"]
    assert fits_bytes == (gzip.decompress(stamp) if stamp[:2] == b"\x1f\x8b" else stamp)
    for kind in ("science", "template", "difference"):
        png = client.get(f"/api/alerts/{candid}/cutouts/{kind}")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG" and len(png.content) > 5000
    # a recent programid-2 packet: invisible to the public, whole to the partner
    secret = archive["changed"][PROPRIETARY_PACKET]
    assert _rows(client, "/api/alerts", objectid=secret["objectId"])["count"] == 0
    r = client.get(f"/api/alerts/{secret['candid']}")
    assert r.status_code == 404 and "partner token" in r.json()["detail"]
    r = client.get(f"/api/alerts/{secret['candid']}", headers=_auth(PARTNER))
    assert list(fastavro.reader(io.BytesIO(r.content)))[0]["prv_candidates"] == secret["prv_candidates"]
    # history: every visible epoch, one per (jd, fid)
    anon = _rows(client, "/api/objects/ZTF18aaxjdyr/history")
    full = _rows(client, "/api/objects/ZTF18aaxjdyr/history", CALTECH)
    assert full["count"] == len(original["prv_candidates"]) + 1
    assert anon["count"] == len(expect) + 1


# -- access control -----------------------------------------------------------------------------------
def _probe(client, token):
    """Every endpoint's rows (programid, jd) for one credential, and the status of the single items."""
    out = {}
    images = _rows(client, "/api/images", token, ra=RA, dec=DEC)["rows"]
    out["images"] = [(r["programid"], r["jd"]) for r in images]
    srcs = _rows(client, "/api/catalogs/sources", token, ra=RA, dec=DEC, radius_arcsec=60)["rows"]
    pids = {r["pid"]: (r["programid"], r["jd"]) for r in _rows(client, "/api/images", CALTECH)["rows"]}
    out["sources"] = [pids[r["pid"]] for r in srcs]
    out["candidates"] = [(r["programid"], r["jd"]) for r in
                         _rows(client, "/api/catalogs/candidates", token, ra=RA, dec=DEC, radius_arcsec=300)["rows"]]
    lc = _csv(client, "/lightcurves", token, POS=POS, FORMAT="CSV")
    out["lightcurves"] = list(zip(lc["programid"].tolist(), (np.asarray(lc["mjd"]) + 2400000.5).tolist()))
    alerts = _rows(client, "/api/alerts", token, jd_min=2450000, jd_max=2460000)["rows"]
    out["alerts"] = [(r["programid"], r["jd"]) for r in alerts]
    out["history"] = []
    for objectid in sorted({r["objectid"] for r in _rows(client, "/api/alerts", CALTECH, jd_min=0, jd_max=3e6)["rows"]}):
        out["history"] += [(r["programid"], r["jd"]) for r in
                           _rows(client, f"/api/objects/{objectid}/history", token)["rows"]]
    for r in _rows(client, "/api/alerts", CALTECH, jd_min=0, jd_max=3e6)["rows"]:
        got = client.get(f"/api/alerts/{r['candid']}", headers=_auth(token))
        single = [client.get(f"/api/alerts/{r['candid']}/cutouts/difference", headers=_auth(token)).status_code,
                  client.get(f"/api/alerts/{r['candid']}/cutouts/science", params={"format": "fits"},
                             headers=_auth(token)).status_code, got.status_code]
        out.setdefault("packet_status", []).append((r["programid"], r["jd"], single))
        if got.status_code == 200:
            (record,) = list(fastavro.reader(io.BytesIO(got.content)))
            out.setdefault("prv_of", {})[r["candid"]] = [(p.get("programid"), p["jd"])
                                                         for p in record["prv_candidates"] or []]
    for pid, (prog, jd) in pids.items():
        single = [client.get(f"/api/images/{pid}", headers=_auth(token)).status_code,
                  client.get(f"/api/images/{pid}/products/sciimg", headers=_auth(token)).status_code,
                  client.get(f"/api/images/{pid}/cutout", params={"ra": RA, "dec": DEC},
                             headers=_auth(token)).status_code]
        out.setdefault("image_status", []).append((prog, jd, single))
    return out


def test_unauthenticated_requests_never_see_proprietary_rows(client):
    anon, partner = _probe(client, None), _probe(client, CALTECH)
    # the histories inside the packets both may read
    for probe in (anon, partner):
        probe["prv_candidates"] = [e for candid in sorted(anon["prv_of"]) for e in probe["prv_of"][candid]]
    for name in ("images", "sources", "candidates", "lightcurves", "alerts", "history", "prv_candidates"):
        prog, jd = zip(*anon[name]) if anon[name] else ((), ())
        assert not proprietary(prog, jd).any(), name            # no proprietary row for the public
        prog_p, jd_p = zip(*partner[name])
        n_hidden = np.count_nonzero(proprietary(prog_p, jd_p))
        assert n_hidden > 0, name                               # ... and there were some to see
        assert len(partner[name]) == len(anon[name]) + n_hidden, name   # the partner sees everything
    for name in ("packet_status", "image_status"):
        for prog, jd, statuses in anon[name]:
            expect = 404 if proprietary(prog, jd)[0] else 200
            assert statuses == [expect] * 3, (name, prog, jd, statuses)
        assert all(s == [200, 200, 200] for _, _, s in partner[name]), name
        assert any(proprietary(p, j)[0] for p, j, _ in anon[name])


@pytest.mark.postgres
def test_access_control_on_postgresql(pg_url, tmp_path):
    """The same service over PostgreSQL (the search_path in the URL): the public never sees proprietary rows."""
    import uuid

    import psycopg

    schema = f"ztfsds_service_{uuid.uuid4().hex[:8]}"
    try:
        build_archive(tmp_path, pg_url, schema)
        url = f"{pg_url}?options=-csearch_path%3D{schema}"
        with running(create_app(tmp_path, database_url=url, tokens=TOKENS, now_jd=NOW_JD)) as base, \
                httpx.Client(base_url=base, timeout=30) as c:
            assert _rows(c, "/api/status")["engine"] == "postgresql"
            anon, partner = _probe(c, None), _probe(c, CALTECH)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    for name in ("images", "sources", "candidates", "lightcurves", "alerts", "history"):
        prog, jd = zip(*anon[name])
        assert not proprietary(prog, jd).any(), name
        assert np.count_nonzero(proprietary(*zip(*partner[name]))) > 0, name
    assert [s for p, j, s in anon["packet_status"] if proprietary(p, j)[0]] == [[404, 404, 404]]


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Bearer", "Basic dXNlcjpwYXNz", "partner-token-0123",
                                    "Bearer partner-token-01234"])
def test_bad_credentials_are_401_everywhere(client, archive, header):
    pid = next(iter(archive["pids"].values()))
    candid = _rows(client, "/api/alerts", objectid="ZTF18aaxjdyr")["rows"][0]["candid"]
    for path in ("/api/status", f"/api/images?ra={RA}&dec={DEC}", f"/api/images/{pid}",
                 f"/api/images/{pid}/products/sciimg", f"/api/images/{pid}/cutout?ra={RA}&dec={DEC}",
                 f"/api/catalogs/sources?ra={RA}&dec={DEC}&radius_arcsec=5", f"/lightcurves?POS={POS}",
                 f"/lightcurves/plot?POS={POS}", f"/cgi-bin/ZTF/nph_light_curves?POS={POS}",
                 "/api/alerts?objectid=ZTF18aaxjdyr", f"/api/alerts/{candid}",
                 f"/api/alerts/{candid}/cutouts/science", "/api/objects/ZTF18aaxjdyr/history"):
        r = client.get(path, headers={"Authorization": header})
        assert r.status_code == 401, (path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer" and isinstance(r.json()["detail"], str)


def test_programs_and_the_date_rule(archive):
    """A program-2 token does not see program 3; with no age rule the 2018 programid-0/3 alerts are hidden."""
    with running(create_app(archive["root"], tokens=TOKENS, public_after_days=None)) as base, \
            httpx.Client(base_url=base) as c:
        def progs(token):
            rows = _rows(c, "/api/alerts", token, jd_min=0, jd_max=3e6)["rows"]
            return sorted(r["programid"] for r in rows)
        assert progs(None) == [1] * 5
        assert progs(PARTNER) == [1] * 5 + [2]
        assert progs(CALTECH) == [1] * 5 + [2] + [3] * 3
        images = _rows(c, "/api/images", PARTNER, ra=RA, dec=DEC)["rows"]
        assert sorted(r["programid"] for r in images) == [1, 2, 2]
        assert _rows(c, "/api/status", PARTNER)["public_before_jd"] is None
    # the age rule as of NOW_JD: programs 0 and 3 of 2018 are public
    policy = AccessPolicy(tokens=load_tokens(TOKENS), now_jd=NOW_JD)
    grant = policy.grant(None)
    assert grant.cutoff_jd == pytest.approx(CUTOFF_JD)
    assert grant.visible([0, 3, 2, 2, None, 1], [2458151.0, 2458226.7, NOW_JD - 1, None, 2458000.0, NOW_JD]).tolist() \
        == [True, True, False, False, True, True]
    assert policy.grant(PARTNER).visible([2, 3], [NOW_JD, NOW_JD]).tolist() == [True, False]
    with pytest.raises(PermissionError):
        policy.grant("partner-token-012")


# -- malformed queries --------------------------------------------------------------------------------
BAD = [
    ("/api/images?ra=abc&dec=1", 422), ("/api/images?ra=10", 400), ("/api/images?ra=nan&dec=0", 422),
    ("/api/images?dec=91&ra=0", 422), ("/api/images?field=99999999999999999999999", 422),
    ("/api/images?ccdid=17", 422), ("/api/images?limit=0", 422), ("/api/images?jd_min=inf", 422),
    ("/api/images/abc", 422), ("/api/images/-1", 422), ("/api/images/123", 404),
    ("/api/images/123/products/sciimg", 404), ("/api/images/123/products/../../etc/passwd", 404),
    ("/api/images/123/products/secret", 422), ("/api/images/123/cutout", 422),
    ("/api/images/123/cutout?ra=1&dec=1&size_arcsec=0", 422), ("/api/images/123/cutout?ra=1&dec=1&format=gif", 422),
    ("/api/catalogs/sources?ra=1&dec=1", 422), ("/api/catalogs/sources?ra=1&dec=1&radius_arcsec=-3", 422),
    ("/api/catalogs/sources?ra=1&dec=1&radius_arcsec=1e9", 422), ("/api/catalogs/objects?ra=1&dec=1&radius_arcsec=1", 422),
    ("/lightcurves", 400), ("/lightcurves?POS=CIRCLE+1+2", 400), ("/lightcurves?POS=CIRCLE+1+2+5", 400),
    ("/lightcurves?ID=abc", 400), ("/lightcurves?ID=1&BANDNAME=r", 400), ("/lightcurves?ID=1&FORMAT=xls", 400),
    ("/lightcurves?ID=1&TIME=5+1", 400), ("/lightcurves?ID=1&FOO=1", 400), ("/lightcurves?ID=1&COLLECTION=../x", 400),
    ("/lightcurves?ID=1&COLLECTION=ztf_dr99", 400), ("/lightcurves/plot?POS=CIRCLE+a+b+c", 400),
    ("/cgi-bin/ZTF/nph_light_curves?ID=1&BAD_CATFLAGS_MASK=-1", 400),
    ("/api/alerts", 400), ("/api/alerts?objectid=ZTF18", 422), ("/api/alerts?ra=1&dec=2", 400),
    ("/api/alerts?ra=1&dec=2&radius_arcsec=0", 422), ("/api/alerts?jd_min=x", 422),
    ("/api/alerts/1", 404), ("/api/alerts/x", 422), ("/api/alerts/99999999999999999999", 422),
    ("/api/alerts/1/cutouts/science", 404), ("/api/alerts/1/cutouts/sky", 422),
    ("/api/objects/foo/history", 422), ("/nothing", 404),
]


@pytest.mark.parametrize("path,status", BAD)
def test_malformed_queries_get_4xx_with_a_message(client, path, status):
    r = client.get(path)
    assert r.status_code == status, (path, r.text)
    body = r.json()
    message = body.get("message") or body["detail"]
    assert isinstance(message, str) and len(message) > 5, body


def test_random_garbage_never_gives_5xx(client, archive):
    """A schemathesis-like loop: random and hostile parameter values on every endpoint, 400 requests."""
    rng = random.Random(7)
    pid = next(iter(archive["pids"].values()))
    candid = _rows(client, "/api/alerts", objectid="ZTF18aaxjdyr")["rows"][0]["candid"]
    garbage = ["", " ", "abc", "-1", "0", "1e400", "-1e400", "nan", "NaN", "inf", "-inf", "1e308", "9" * 40,
               "-9" * 20, "0x10", "1,2", "1 2 3", "CIRCLE", "CIRCLE 1 2 3 4", "CIRCLE nan 0 0.1", "'; DROP TABLE x;--",
               "%00", "\u00e9\u4e2d", "../../etc/passwd", "ZTF18aaxjdyr", "1.5", "2", "3", "90.0001", "-90",
               "359.9999", "true", "null", "[]", "{}", "a" * 3000, "-Inf Inf", "0.0001 0.2", str(RA), str(DEC)]
    oid = str(archive["lightcurves"].column("objectid")[0].as_py())
    valid = {"ra": [str(RA), "0", "359.99", "-10"], "dec": [str(DEC), "-89.999", "90"], "size_arcsec": ["30", "1800"],
             "radius_arcsec": ["5", "60", "1800"], "field": ["655"], "ccdid": ["13"], "qid": ["3"], "fid": ["2"],
             "jd_min": ["2458000.5"], "jd_max": ["2459500"], "max_seeing": ["3"], "min_maglim": ["19"],
             "infobits_mask": ["0", "33554432"], "status": ["1"], "programid": ["1", "2"], "limit": ["1", "5"],
             "product": ["sciimg", "scorr"], "format": ["png", "fits"], "ID": [oid, f"{oid},{oid}"],
             "POS": [POS, "CIRCLE 0 0 0.1"], "CIRCLE": [f"{RA} {DEC} 0.001"], "BAND": ["6e-7 7e-7", "4.5e-7"],
             "BANDNAME": ["g", "r", "r,i"], "MAG": ["10 25"], "NUM_OBS": ["3"], "NOBS_MIN": ["30"],
             "TIME": ["-Inf Inf", "59000 59500"], "BAD_CATFLAGS_MASK": ["32768"], "COLLECTION": ["ztf"],
             "FORMAT": ["CSV", "IPAC_TABLE", "VOTABLE", "PARQUET", "HTML", "TSV"], "objectid": ["ZTF18aaxjdyr"],
             "mag_min": ["15"], "mag_max": ["20"], "rb_min": ["0.5"], "drb_min": ["0.5"]}
    endpoints = {
        "/api/images": ["ra", "dec", "field", "ccdid", "qid", "fid", "jd_min", "jd_max", "max_seeing", "min_maglim",
                        "infobits_mask", "status", "programid", "limit"],
        f"/api/images/{pid}/cutout": ["ra", "dec", "size_arcsec", "product", "format"],
        "/api/catalogs/sources": ["ra", "dec", "radius_arcsec", "limit"],
        "/api/catalogs/candidates": ["ra", "dec", "radius_arcsec", "limit"],
        "/lightcurves": ["ID", "POS", "CIRCLE", "BAND", "BANDNAME", "MAG", "NUM_OBS", "NOBS_MIN", "TIME",
                         "BAD_CATFLAGS_MASK", "COLLECTION", "FORMAT", "pos", "id", "x"],
        "/api/alerts": ["objectid", "ra", "dec", "radius_arcsec", "jd_min", "jd_max", "mag_min", "mag_max", "rb_min",
                        "drb_min", "fid", "programid", "limit"],
        f"/api/alerts/{candid}/cutouts/science": ["format"],
    }
    paths = ["/api/images/{}", "/api/images/{}/products/{}", "/api/alerts/{}", "/api/alerts/{}/cutouts/{}",
             "/api/objects/{}/history"]
    statuses = []
    for k in range(400):
        if k % 5 == 4:
            template = rng.choice(paths)
            path = template.format(*(quote(rng.choice(garbage), safe="") or "x" for _ in range(template.count("{}"))))
            params = {}
        else:
            path = rng.choice(sorted(endpoints))
            names = endpoints[path]
            chosen = rng.sample(names, rng.randint(1, min(5, len(names))))
            # mostly valid values, so that the garbage reaches past the first check
            params = {n: rng.choice(valid.get(n, garbage)) if rng.random() < 0.6 else rng.choice(garbage)
                      for n in chosen}
            if rng.random() < 0.5 and "ra" in names:
                params.update(ra=str(RA), dec=str(DEC))
        r = client.get(path, params=params)
        statuses.append(r.status_code)
        assert r.status_code < 500, (path, params, r.text[:300])
        if r.status_code >= 400:
            body = r.json()
            assert isinstance(body.get("message") or body["detail"], str), (path, params, body)
    assert statuses.count(200) > 60 and sum(400 <= s < 500 for s in statuses) > 150


# -- the OpenAPI description --------------------------------------------------------------------------
def test_openapi_lists_every_endpoint_and_validates(client, url):
    from jsonschema import Draft202012Validator

    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "ztfsds archive"
    expected = {"/api/status", "/api/images", "/api/images/{pid}", "/api/images/{pid}/products/{suffix}",
                "/api/images/{pid}/cutout", "/api/catalogs/{table}", "/lightcurves", "/cgi-bin/ZTF/nph_light_curves",
                "/lightcurves/plot", "/api/alerts", "/api/alerts/{candid}", "/api/alerts/{candid}/cutouts/{kind}",
                "/api/objects/{objectid}/history"}
    assert set(spec["paths"]) == expected
    ids = []
    for path, ops in spec["paths"].items():
        assert set(ops) == {"get"}, path                     # read-only
        op = ops["get"]
        ids.append(op["operationId"])
        assert "200" in op["responses"] and op.get("summary"), path
        assert {"HTTPBearer": []} in op.get("security", []), path
        names = {p["name"] for p in op.get("parameters", [])}
        assert set(path.replace("}", "{").split("{")[1::2]) <= names, path
        for p in op.get("parameters", []):
            Draft202012Validator.check_schema(p["schema"])
    assert len(set(ids)) == len(ids)
    assert {"ID", "POS", "BANDNAME", "TIME", "BAD_CATFLAGS_MASK", "FORMAT"} <= {
        p["name"] for p in spec["paths"]["/lightcurves"]["get"]["parameters"]}
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "A partner token: data of proprietary programs."}
    for name, schema in spec["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    # every $ref resolves
    text = json.dumps(spec)
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
        node = spec
        for key in ref.lstrip("#/").split("/"):
            node = node[key]
    assert client.get("/docs").status_code == 200


# -- set-up and configuration ------------------------------------------------------------------------
def test_load_tokens(tmp_path):
    toml = tmp_path / "tokens.toml"
    toml.write_text('[tokens]\n"abcdefgh12" = [2]\n"zyxwvuts98" = [2, 3]\n')
    assert load_tokens(toml) == {"abcdefgh12": frozenset({2}), "zyxwvuts98": frozenset({2, 3})}
    js = tmp_path / "tokens.json"
    js.write_text(json.dumps({"abcdefgh12": [3]}))
    assert load_tokens(js) == {"abcdefgh12": frozenset({3})}
    for bad in ({"short": [2]}, {"abcdefgh12": ["2"]}, {"abcdefgh12": [200]}, {"with space 1": [2]}):
        with pytest.raises(ConfigError, match="tokens"):
            load_tokens(bad)
    with pytest.raises(ConfigError, match="missing.toml"):
        load_tokens(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("[tokens\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_tokens(tmp_path / "broken.toml")


def test_create_app_refuses_an_empty_database(tmp_path):
    with pytest.raises(ArchiveError, match="no archive tables"):
        create_app(tmp_path)
    db = connect(store=tmp_path)
    migrate(db)
    db.close()
    assert create_app(tmp_path).title == "ztfsds archive"
    with pytest.raises(ConfigError, match="public_after_days"):
        create_app(tmp_path, public_after_days=-1)
