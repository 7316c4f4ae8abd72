"""Benchmark of `ztfsds.alerts`: the alert packets of one quadrant (build + serialise + tar).

A 500-candidate quadrant (the design budget: alerts + database 1 s per quadrant-image), each packet with a
realistic 30-day history (8 earlier detections and 12 upper limits, 10 forced-photometry epochs) and its
three 63x63 cutouts. Ours: `candidate_records` + `make_alert` (gzipped-FITS cutouts at level 1) +
`write_alerts` (one tar of Avro containers, the schema header built once). The peer does the same job
the obvious way: cutouts through astropy.io.fits and gzip level 9 (IPAC's), `fastavro.writer` per packet.
"""

import io
import gzip
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ztfsds.alerts import (
    candidate_records,
    fp_hist_record,
    load_schema,
    make_alert,
    prv_candidate_from_candidate,
    upper_limit_from_headers,
    write_alerts,
)
from ztfsds.bench import Case

NCAND = {"full": 500, "small": 50}


def _headers():
    sci = fits.Header()
    for key, value in (("NAXIS1", 3072), ("NAXIS2", 3080), ("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"),
                       ("CRPIX1", 1536.5), ("CRPIX2", 1540.5), ("CRVAL1", 55.06), ("CRVAL2", 33.35),
                       ("CD1_1", -2.8117e-4), ("CD1_2", 0.0), ("CD2_1", 0.0), ("CD2_2", 2.8117e-4),
                       ("OBSJD", 2459116.9317708), ("FILTERID", 2), ("FIELDID", 655), ("CCDID", 13), ("QID", 3),
                       ("RCID", 50), ("DBPID", 1362431775015), ("EXPTIME", 30.0), ("MAGZP", 26.285),
                       ("MAGZPUNC", 4e-6), ("MAGZPRMS", 0.0247), ("NMATCHES", 2058), ("CLRCOEFF", 0.079),
                       ("CLRCOUNC", 8.5e-6), ("SEEING", 2.1), ("PIXSCALE", 1.012), ("PROGRMPI", "Kulkarni"),
                       ("FILENAME", "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits")):
        sci[key] = value
    diff = sci.copy()
    for key, value in (("RFID", 655120250), ("NFRAMREF", 20), ("RFJDSTRT", 2458200.5), ("RFJDEND", 2458300.5),
                       ("DIFFMLIM", 20.6), ("RBVERSN", "ztfsds_rb"), ("DRBVERSN", "d6_m7")):
        diff[key] = value
    return sci, diff


def quadrant(size: str):
    """Candidates table, headers, cutouts, and per candidate its history and forced photometry."""
    n = NCAND[size]
    rng = np.random.default_rng(42)
    t = Table()
    t["tblid"] = np.arange(n, dtype=np.int32)
    t["xpos"], t["ypos"] = rng.uniform(0, 3071, n), rng.uniform(0, 3079, n)
    t["isdiffpos"] = np.where(rng.uniform(size=n) < 0.6, "t", "f")
    t["scorr"] = rng.uniform(5, 50, n)
    flux = rng.uniform(100, 1e4, n)
    t["flux"], t["sigflux"] = flux, np.sqrt(flux / 6 + 900)
    t["magpsf"] = 26.285 - 2.5 * np.log10(flux)
    t["sigmapsf"] = 1.0857 * t["sigflux"] / flux
    for col in ("chipsf", "sumrat", "aimage", "bimage", "elong", "fwhm", "distnr", "magnr", "sigmagnr", "chinr",
                "sharpnr", "rb", "drb"):
        t[col] = rng.uniform(0.5, 2.0, n)
    for col in ("magap", "magapbig"):
        t[col] = t["magpsf"] + rng.normal(0, 0.05, n)
    for col in ("sigmagap", "sigmagapbig"):
        t[col] = t["sigmapsf"] * 1.3
    t["magdiff"] = t["magap"] - t["magpsf"]
    t["nbad"], t["nneg"] = rng.integers(0, 3, n), rng.integers(0, 6, n)
    t["mindtoedge"] = np.minimum.reduce([t["xpos"], t["ypos"], 3071 - t["xpos"], 3079 - t["ypos"]])
    stamps = rng.normal(0, 6.5, (n, 3, 63, 63)).astype(np.float32)
    stamps[:, :2] += 150.0
    sci, diff = _headers()
    earlier = candidate_records(t, sci, diff)
    ul = upper_limit_from_headers(sci, diff)
    history = []
    for i in range(n):
        prv = [dict(prv_candidate_from_candidate(earlier[(i + k) % n]), jd=2459090.0 + k) for k in range(8)]
        prv += [dict(ul, jd=2459090.5 + k) for k in range(12)]
        fph = [fp_hist_record(jd=2459090.5 + k, fid=2, pid=1362431775015 - k * 10**6, rfid=655120250,
                              forcediffimflux=float(rng.normal(0, 30)), forcediffimfluxunc=30.0, procstatus="0",
                              magzpsci=26.28, diffmaglim=20.5, ranr=55.0, decnr=33.0) for k in range(10)]
        history.append((prv, fph))
    return t, sci, diff, stamps, history, Path(tempfile.mkdtemp(prefix="bench_alerts_"))


def ours(data):
    t, sci, diff, stamps, history, out = data
    schema = load_schema()
    recs = candidate_records(t, sci, diff)
    packets = [make_alert(rec, objectid="ZTF20aaaaaaa", prv_candidates=history[i][0], fp_hists=history[i][1],
                          cutouts=stamps[i]) for i, rec in enumerate(recs)]
    return write_alerts(packets, out / "ours.tar", schema)


def _astropy_cutout(stamp):
    buf = io.BytesIO()
    hdu = fits.PrimaryHDU(stamp)
    hdu.header["BUNIT"] = "DN"
    hdu.writeto(buf)
    return gzip.compress(buf.getvalue(), compresslevel=9)


def naive_peer(data):
    import tarfile

    import fastavro

    t, sci, diff, stamps, history, out = data
    schema = load_schema()
    recs = candidate_records(t, sci, diff)
    with tarfile.open(out / "naive.tar", "w") as tar:
        for i, rec in enumerate(recs):
            cut = [{"fileName": f"{k}.fits.gz", "stampData": _astropy_cutout(stamps[i, k])} for k in range(3)]
            packet = {"schemavsn": "4.02", "publisher": "ztfsds", "objectId": "ZTF20aaaaaaa", "candid": rec["candid"],
                      "candidate": rec, "prv_candidates": history[i][0], "fp_hists": history[i][1],
                      "cutoutScience": cut[0], "cutoutTemplate": cut[1], "cutoutDifference": cut[2]}
            buf = io.BytesIO()
            fastavro.writer(buf, schema, [packet])
            info = tarfile.TarInfo(f"{rec['candid']}.avro")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    return out / "naive.tar"


CASES = [
    Case(
        name="alerts.quadrant500",
        description="alert packets of a 500-candidate quadrant: records, cutouts, Avro, tar (20 prv + 10 fp_hists each)",
        setup=quadrant,
        ours=ours,
        peers={"astropy cutouts + fastavro.writer": naive_peer},
    ),
]
