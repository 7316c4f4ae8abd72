"""A small archive for the HTTP service tests, and a real uvicorn server on loopback.

`build_archive` writes into a data root: quadrant images (with stars) of programs 1, 2 and 3 covering the
alert ZTF18aaxjdyr's position, their PSF catalogs and candidates; the real alert packets of
``tests/data/alerts_real`` (programs 0, 1 and 3), two of them changed so that the auth tests have recent
program-2 data: ZTF18abstqbv's packet made programid 2, and half of the recent ``prv_candidates`` of
ZTF18aaxjdyr's (public) packet; and a HATS lightcurve catalog of a simulated sky around the same position
whose odd epochs are programid 2. The service runs "as of" `NOW_JD` with the default 365-day rule, so
data of programs 0/2/3 before `CUTOFF_JD` are public and later ones proprietary.
"""

import contextlib
import io
import json
import threading
import time
import warnings
from pathlib import Path

import fastavro
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits

from archive.synth import write_candidates, write_quadrant
from ztfsds.archive import connect, ingest_alerts, ingest_candidates, ingest_quadrant, migrate
from ztfsds.products import ProductStore

REAL = Path(__file__).parent.parent / "data" / "alerts_real"
NOW_JD = 2459420.0                   # 2021-07-23: the service's "now" in the tests
CUTOFF_JD = NOW_JD - 365.0
CENTRE = (296.8679, 24.0888)          # ZTF18aaxjdyr (public packet, jd 2459415.88)
PARTNER = "partner-token-0123"        # programid 2
CALTECH = "caltech-token-4567"        # programids 2 and 3
TOKENS = {PARTNER: [2], CALTECH: [2, 3]}
#: (jd, programid) of the quadrant images at CENTRE.
IMAGES = ((NOW_JD - 10.2, 1), (NOW_JD - 9.2, 2), (NOW_JD - 8.2, 3), (NOW_JD - 500.2, 2))
PROPRIETARY_PACKET = "v3.5_1660293514215020000.avro"     # ZTF18abstqbv -> programid 2
MIXED_PACKET = "v3.5_1661382530015060001.avro"           # ZTF18aaxjdyr: recent prv entries -> programid 2


def _read(path):
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        return reader.metadata["avro.schema"], list(reader)


def _container(schema_json, records) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, json.loads(schema_json), records, codec="null")
    return buf.getvalue()


def _paint_stars(store, key, seed):
    """Replace the zero sciimg of `write_quadrant` by Gaussian stars at its psfcat positions, plus noise."""
    header = store.read_header(key)
    with fits.open(store.path(key.with_suffix("psfcat"))) as hdul:
        cat = hdul["PSFCAT"].data
        x, y, flux = np.asarray(cat["x"]), np.asarray(cat["y"]), np.asarray(cat["flux"])
    n = header["NAXIS1"]
    yy, xx = np.mgrid[0:n, 0:n]
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 3.0, (n, n))
    for xi, yi, fi in zip(x, y, flux):
        image += fi / (2 * np.pi * 1.5**2) * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * 1.5**2))
    store.write_fits(key, fits.PrimaryHDU(image.astype(np.float32), header))


def _lightcurves(store):
    """A HATS lightcurve catalog around CENTRE: 30 epochs over 600 days, odd epochs of programid 2."""
    from ztfsds.match import calibrate, lightcurve_table, match_epochs, write_hats
    from ztfsds.match.synthetic import synthetic_epochs
    from ztfsds.sim.sky import make_sky

    sky = make_sky(SkyCoord(*CENTRE, unit="deg"), 0.02, seed=5, transient_window=(NOW_JD - 600, NOW_JD))
    jd = NOW_JD - 600 + np.sort(np.random.default_rng(4).choice(595, 30, replace=False)) + 0.3
    survey = synthetic_epochs(sky, "zr", jd, seed=6, field=600, ccdid=8, qid=3)
    for k, (_, header) in enumerate(survey.epochs):
        header["PROGRMID"] = 2 if k % 2 else 1
    with warnings.catch_warnings():      # Lomb-Scargle on short, flat lightcurves divides by zero
        warnings.simplefilter("ignore", RuntimeWarning)
        mf = calibrate(match_epochs(survey.epochs, reference=survey.reference, field=600, ccdid=8, qid=3,
                                    filtercode="zr"))
    table = lightcurve_table(mf)
    write_hats(table, store.match_dir / "lightcurves" / "ztf")
    return table


def build_archive(root, database_url=None, schema=None) -> dict:
    """Write the test archive under ``root`` (and into ``database_url``, default the root's SQLite file);
    returns what the tests need to know about it."""
    store = ProductStore(root)
    db = connect(database_url, store=store, schema=schema)
    migrate(db)
    pids = {}
    ra0, dec0 = CENTRE
    for k, (jd, programid) in enumerate(IMAGES):
        # centres within 20" of the position, so that every footprint (128" wide) contains it
        key = write_quadrant(store, ra0 + 0.004 * (k - 1.5), dec0 + 0.003 * (k % 2), jd, nsrc=30, seed=k,
                             programid=programid)
        _paint_stars(store, key, k)
        ingest_quadrant(db, store, key)
        write_candidates(store, key, [(40.0 + 5 * k, 50.0), (64.0, 64.0)], seed=k)
        ingest_candidates(db, store, key)
        pids[(jd, programid)] = int(db.query("SELECT pid FROM quadimages WHERE jd = ?", (jd,))[0][0])
    changed = {}
    for path in sorted(REAL.glob("*.avro")):
        if path.name not in (PROPRIETARY_PACKET, MIXED_PACKET):
            ingest_alerts(db, path)
            continue
        schema_json, (record,) = _read(path)
        if path.name == PROPRIETARY_PACKET:
            record["candidate"]["programid"] = 2
            for i, prv in enumerate(record["prv_candidates"]):
                prv["programid"] = 2 if i % 2 else prv["programid"]
        else:
            for i, prv in enumerate(record["prv_candidates"]):
                if prv["jd"] > CUTOFF_JD and i % 2:
                    prv["programid"] = 2
        changed[path.name] = record
        ingest_alerts(db, _container(schema_json, [record]))
    db.close()
    lightcurves = _lightcurves(store)
    return {"root": Path(root), "store": store, "pids": pids, "changed": changed, "lightcurves": lightcurves}


@contextlib.contextmanager
def running(app):
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


_BUILT: dict = {}


def shared_archive(tmp_path_factory) -> dict:
    """`build_archive` once per test session (both service test modules use it; read-only)."""
    if "archive" not in _BUILT:
        _BUILT["archive"] = build_archive(tmp_path_factory.mktemp("service-archive"))
    return _BUILT["archive"]


def proprietary(programid, jd) -> np.ndarray:
    """Rows that an anonymous request must never see (as of NOW_JD with the 365-day rule)."""
    programid = np.array([np.nan if p is None else p for p in np.atleast_1d(programid)], dtype=float)
    jd = np.array([np.nan if t is None else t for t in np.atleast_1d(jd)], dtype=float)
    return ~np.isin(programid, [1]) & ~(jd < CUTOFF_JD)
