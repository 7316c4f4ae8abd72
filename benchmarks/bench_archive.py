"""Archive database: cone searches over 10^7 stored sources and the alert histories of a quadrant.

Data (``setup``, not timed; ``small``: 10^5 sources, 10^4 background candidates):

* ``archive.cone_*``: 10^7 sources (sourceid, pid, ra, dec, hpx) uniformly over a 3 x 3 deg patch around
  (150, 2) (1.1 million per deg^2, ~7 per 5" cone: the density of a field observed a few hundred times),
  bulk-loaded into the archive schema (SQLite: executemany then the hpx index; PostgreSQL: binary COPY
  then the index; about a minute each). Each timed call is ONE 5" cone at a fresh random position:
  `ztfsds.archive.cone_search` (HEALPix ranges on the indexed hpx column, then the exact distance).
  Peers: the same cone by a bounding-box ``SELECT`` on the unindexed ra/dec columns (a full table scan in
  the same database), and astropy ``SkyCoord.separation`` over the whole table held in memory.
* ``archive.history500_*``: the history lookups of one quadrant's 500 alerts, as the alert stage makes
  them (`candidate_histories` and `nondetections_many` over the 500): for each alert `candidate_history` (earlier candidates within 1.5" in 30 days) and `nondetections`
  (images covering it in 30 days without a candidate there), among 10^7 background candidates
  (``full``), 30 nights of the quadrant's images and ~10 earlier detections per alert. Peer: the same
  history from the candidates table held in memory with astropy ``search_around_sky``.

Acceptance (issues 8 and 9): a 5" cone under 50 ms at 10^7 sources, 500 histories under 0.5 s, on both
engines. PostgreSQL cases need the server on 127.0.0.1:5432 (database ``test``); they use a schema of
their own, dropped at exit.
"""

import atexit
import os
import shutil
import tempfile

import numpy as np

from ztfsds.archive import candidate_histories, cone_search, connect, migrate, nondetections_many
from ztfsds.archive.footprint import cover_pixels, hpx_of
from ztfsds.bench import Case

RA0, DEC0, HALF = 150.0, 2.0, 1.5
PG_URLS = ("postgresql://postgres@127.0.0.1:5432/test",)
JD_NOW = 2460000.5
_CLEANUP = []


def _random_sky(n, rng, half=HALF):
    ra = RA0 + rng.uniform(-half, half, n) / np.cos(np.radians(DEC0))
    dec = DEC0 + rng.uniform(-half, half, n)
    return ra, dec


def _open(engine):
    if engine == "sqlite":
        tmp = tempfile.mkdtemp(prefix="bench_archive_")
        _CLEANUP.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        db = connect(f"sqlite:///{tmp}/archive.sqlite")
    else:
        schema = f"bench_archive_{os.getpid()}_{len(_CLEANUP)}"
        last = None
        for url in PG_URLS:
            try:
                db = connect(url, schema=schema)
                break
            except Exception as exc:  # the next URL, then give up with the reason
                last = exc
        else:
            raise RuntimeError(f"no PostgreSQL server: {last}")

        def drop(db=db, schema=schema):
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            db.close()
        _CLEANUP.append(drop)
    migrate(db)
    return db


@atexit.register
def _cleanup():
    while _CLEANUP:
        try:
            _CLEANUP.pop()()
        except Exception:  # best effort at exit
            pass


def _bulk(db, table, columns, arrays, chunk=1_000_000):
    """Bulk load: sqlite3 executemany, or PostgreSQL binary COPY built from a numpy record array."""
    n = len(arrays[0])
    if db.engine == "sqlite":
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        with db.transaction():
            for s in range(0, n, chunk):
                db.connection.executemany(sql, zip(*(a[s:s + chunk].tolist() for a in arrays)))
        return
    fields = [("nf", ">i2")]
    for c, a in zip(columns, arrays):
        fields += [(f"len_{c}", ">i4"), (c, ">f8" if a.dtype.kind == "f" else ">i8")]
    dtype = np.dtype(fields)
    with db.connection.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            rec = np.empty(m, dtype)
            rec["nf"] = len(columns)
            for c, a in zip(columns, arrays):
                rec[f"len_{c}"] = 8
                rec[c] = a[s:s + m]
            cp.write(rec.tobytes())
        cp.write(b"\xff\xff")


def _without_indexes(db, table, load):
    from ztfsds.archive.schema import INDEXES

    mine = [(name, cols) for name, t, cols in INDEXES if t == table]
    for name, _ in mine:
        db.execute(f"DROP INDEX IF EXISTS {name}")
    load()
    for name, cols in mine:
        db.execute(f"CREATE INDEX {name} ON {table} ({', '.join(cols)})")
    db.execute(f"ANALYZE {table}")


# -- cone search --------------------------------------------------------------------------------------
def _cone_setup(engine):
    def setup(size):
        n = 10_000_000 if size == "full" else 100_000
        rng = np.random.default_rng(8)
        ra, dec = _random_sky(n, rng)
        db = _open(engine)
        ids = np.arange(n, dtype=np.int64)
        arrays = [ids, ids // 10000, ra, dec, hpx_of(ra, dec)]
        _without_indexes(db, "sources", lambda: _bulk(db, "sources", ["sourceid", "pid", "ra", "dec", "hpx"], arrays))
        return {"db": db, "ra": ra, "dec": dec, "rng": np.random.default_rng(9)}
    return setup


def _next_position(data):
    ra, dec = _random_sky(1, data["rng"], half=HALF - 0.01)
    return float(ra[0]), float(dec[0])


def cone_ours(data):
    ra, dec = _next_position(data)
    return cone_search(data["db"], "sources", ra, dec, 5.0, columns=["sourceid"])


def cone_bbox_scan(data):
    ra, dec = _next_position(data)
    r = 5.0 / 3600
    dra = r / np.cos(np.radians(dec))
    return data["db"].query("SELECT sourceid, ra, dec FROM sources WHERE ra BETWEEN ? AND ? AND dec BETWEEN ? AND ?",
                            (ra - dra, ra + dra, dec - r, dec + r))


def cone_astropy(data):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    if "coords" not in data:
        data["coords"] = SkyCoord(data["ra"] * u.deg, data["dec"] * u.deg)
    ra, dec = _next_position(data)
    sep = data["coords"].separation(SkyCoord(ra * u.deg, dec * u.deg))
    return np.flatnonzero(sep < 5 * u.arcsec)


# -- alert histories ----------------------------------------------------------------------------------
_HISTORY_DATA = {}


def _history_setup(engine):
    def setup(size):
        # the cone and the history cases of an engine share one loaded database
        if (engine, size) not in _HISTORY_DATA:
            _HISTORY_DATA[(engine, size)] = _history_data(engine, size)
        return _HISTORY_DATA[(engine, size)]
    return setup


def _history_data(engine, size):
    rng = np.random.default_rng(12)
    nbg = 10_000_000 if size == "full" else 10_000
    db = _open(engine)
    # 30 nights of one quadrant (0.87 deg square around the patch centre)
    half = 0.435
    corners = np.array([[RA0 - half, DEC0 - half], [RA0 + half, DEC0 - half], [RA0 + half, DEC0 + half],
                        [RA0 - half, DEC0 + half]])
    pix = cover_pixels(corners)
    pids = []
    with db.transaction():
        for night in range(31):
            pid = (1000 + night) * 10**9 + 5015
            pids.append(pid)
            jd = JD_NOW - 30.5 + night
            row = [pid, 1, 600, 13, 3, 50, 2, jd, RA0, DEC0, 20.5, 26.3] + corners.ravel().tolist()
            db.execute("INSERT INTO quadimages (pid, status, field, ccdid, qid, rcid, fid, jd, ra, dec, diffmaglim, "
                       "magzp, ra1, dec1, ra2, dec2, ra3, dec3, ra4, dec4) VALUES "
                       "(" + ", ".join("?" * 20) + ")", row)
            db.executemany("INSERT INTO quadimage_cover (hpx8, pid) VALUES (?, ?)", [(int(p), pid) for p in pix])
    # 500 alert positions with ~10 earlier detections each, plus nbg unrelated candidates
    ra_a, dec_a = _random_sky(500, rng, half=0.4)
    nights = np.array([rng.choice(30, 10, replace=False) for _ in range(500)])
    ra_d = np.repeat(ra_a, 10) + rng.normal(0, 0.2 / 3600, 5000)
    dec_d = np.repeat(dec_a, 10) + rng.normal(0, 0.2 / 3600, 5000)
    pid_d = np.array(pids)[nights.ravel()]
    jd_d = JD_NOW - 30.5 + nights.ravel()
    ra_b, dec_b = _random_sky(nbg, rng, half=3.0)
    nights_b = rng.integers(0, 31, nbg)
    ra_c = np.concatenate([ra_d, ra_b])
    dec_c = np.concatenate([dec_d, dec_b])
    pid_c = np.concatenate([pid_d, np.array(pids)[nights_b] + 10**8])
    jd_c = np.concatenate([jd_d, JD_NOW - 30.5 + nights_b])
    order = np.argsort(pid_c, kind="stable")
    tbl = np.zeros(len(pid_c), np.int64)
    _, first = np.unique(pid_c[order], return_index=True)
    counts = np.diff(np.append(first, len(order)))
    tbl[order] = np.arange(len(order)) - np.repeat(first, counts)
    # candid arithmetic without the 5000-per-image cap of real ones (the background is dense)
    candids = pid_c * 10**6 + 10000 + tbl
    keep = np.arange(len(candids))
    cols = ["candid", "pid", "jd", "ra", "dec", "hpx", "magpsf", "fid"]
    arrays = [candids, pid_c[keep], jd_c[keep], ra_c[keep], dec_c[keep], hpx_of(ra_c[keep], dec_c[keep]),
              rng.uniform(17, 21, len(keep)), np.full(len(keep), 2, np.int64)]
    _without_indexes(db, "candidates", lambda: _bulk(db, "candidates", cols, arrays))
    return {"db": db, "ra": ra_a, "dec": dec_a, "cand": (ra_c[keep], dec_c[keep], jd_c[keep])}


def history_ours(data):
    db = data["db"]
    jd = np.full(len(data["ra"]), JD_NOW)
    hist = candidate_histories(db, data["ra"], data["dec"], jd)
    pids = [[] for _ in range(len(jd))]
    for k, pid in zip(hist["index"].tolist(), hist["pid"].tolist()):
        pids[k].append(pid)
    limits = nondetections_many(db, data["ra"], data["dec"], jd, exclude_pids=pids, check_candidates=False)
    return len(hist) + len(limits)


def cone_candidates(data):
    """One 5" cone among the 10^7 stored candidates, at a fresh random position."""
    rng = data.setdefault("rng", np.random.default_rng(5))
    ra, dec = _random_sky(1, rng, half=2.5)
    return len(cone_search(data["db"], "candidates", float(ra[0]), float(dec[0]), 5.0))


def history_astropy(data):
    from astropy import units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    ra_c, dec_c, jd_c = data["cand"]
    if "coords" not in data:
        data["coords"] = SkyCoord(ra_c * u.deg, dec_c * u.deg)
    idx_a, idx_c, _, _ = search_around_sky(SkyCoord(data["ra"] * u.deg, data["dec"] * u.deg), data["coords"],
                                           1.5 * u.arcsec)
    return int(np.sum((jd_c[idx_c] < JD_NOW) & (jd_c[idx_c] >= JD_NOW - 30)))


CASES = [
    Case("archive.cone_sqlite", _cone_setup("sqlite"), cone_ours,
         {"bbox scan (SQLite, no index)": cone_bbox_scan, "astropy SkyCoord.separation (memory)": cone_astropy},
         description="one 5\" cone search among 10^7 sources, SQLite", repeat=50),
    Case("archive.cone_postgresql", _cone_setup("postgresql"), cone_ours,
         {"bbox scan (PostgreSQL, no index)": cone_bbox_scan},
         description="one 5\" cone search among 10^7 sources, PostgreSQL", repeat=50),
    Case("archive.cone_candidates_sqlite", _history_setup("sqlite"), cone_candidates,
         description="one 5\" cone among 10^7 stored candidates (acceptance of issue 8: < 50 ms)", repeat=50),
    Case("archive.cone_candidates_postgresql", _history_setup("postgresql"), cone_candidates,
         description="one 5\" cone among 10^7 stored candidates (acceptance of issue 8: < 50 ms)", repeat=50),
    Case("archive.history500_sqlite", _history_setup("sqlite"), history_ours,
         {"astropy search_around_sky (memory, detections only)": history_astropy},
         description="candidate history + non-detections of 500 alerts (10^7 candidates), SQLite", repeat=3),
    Case("archive.history500_postgresql", _history_setup("postgresql"), history_ours,
         {"astropy search_around_sky (memory, detections only)": history_astropy},
         description="candidate history + non-detections of 500 alerts (10^7 candidates), PostgreSQL", repeat=3),
]
