"""The nightly summary report: one HTML page the data-system lead reads each morning.

`write_report` gathers a night from the archive database and the data root (`summarize_night`) and
writes ``<root>/reports/ztfsds_<night>_report.html``: one self-contained file (plots are inline PNG images,
drawn with matplotlib's Agg canvas), written atomically. It shows

- exposures and quadrant-images processed, subtracted, with INFOBITS set;
- failures by stage and cause (the ``jobs`` table, latest attempt of each quadrant and stage);
- processing time per quadrant-image, core-seconds per quadrant-image and throughput (the jobs'
  ``started``/``finished``/``elapsed_s``), per-stage timing and peak memory;
- seeing, zero point and limiting magnitudes against time (``quadimages``);
- a sky map of the quadrant footprints;
- candidates and alerts, with their ``rb`` / ``drb`` distributions;
- a QA sample of science / reference / difference cutouts spanning the ``drb`` range;
- when the data root holds simulator truth (``sim/truth/<night>/``), the injected transients recovered
  (`transient_recovery`): the demo night's headline number.

Whatever is missing (no database, no references, no alerts, failed quadrants) is said on the page
instead of stopping the report. Without a database the images and candidates are read from the products.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import io
import logging
import math
import os
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .._version import __version__
from ..errors import ProductNameError, ZTFSDSError
from ..products import ProductKey, ProductStore, atomic_write
from .inject import FAKES_DIR

__all__ = ["NightSummary", "summarize_night", "transient_recovery", "render_report", "write_report",
           "report_path", "cause_of", "TRANSIENT_KINDS", "RECOVERY_RADIUS", "FAILED_STATUSES"]

log = logging.getLogger(__name__)

#: Simulator truth ``kind`` values counted as injected transients.
TRANSIENT_KINDS = ("supernova", "nuclear")
#: A transient is recovered by a candidate within this distance [arcsec].
RECOVERY_RADIUS = 1.5
#: Cutout triplets shown in the QA sample.
QA_SAMPLE = 6
#: Rows of the failed-quadrant and transient tables shown on the page.
_MAX_ROWS = 40

_IMAGE_COLUMNS = ("pid", "jd", "field", "ccdid", "qid", "fid", "filtercode", "ra", "dec", "magzp", "seeing",
                  "maglim", "diffmaglim", "infobits", "status", "ncands",
                  "ra1", "dec1", "ra2", "dec2", "ra3", "dec3", "ra4", "dec4")
_CANDIDATE_COLUMNS = ("candid", "pid", "jd", "fid", "field", "rcid", "tblid", "ra", "dec", "isdiffpos",
                      "magpsf", "rb", "drb", "pdiffimfilename")
_FILTER_COLORS = {1: "tab:green", 2: "tab:red", 3: "goldenrod"}


@dataclasses.dataclass
class NightSummary:
    """What the report says about a night (the numbers behind the page).

    Attributes
    ----------
    night : str
        UT date ``YYYYMMDD``.
    raw_exposures : int
        Raw science CCD files of the night under the data root.
    exposures : int
        Exposures with at least one processed quadrant-image.
    images : `~astropy.table.Table`
        One row per quadrant-image (``quadimages`` columns: jd, field, ccdid, qid, fid, magzp, seeing
        [arcsec], maglim, diffmaglim [mag], infobits, footprint corners ra1..dec4 [deg]).
    jobs : `~astropy.table.Table`
        The latest attempt of each (quadrant, stage) of the night.
    failures : `~astropy.table.Table`
        Failed jobs (status in `FAILED_STATUSES`) counted by ``stage``, ``status`` and ``cause`` (the message
        with file names and numbers elided), with an ``example`` quadrant.
    stages : `~astropy.table.Table`
        Per stage: ``n``, ``ok``, ``failed``, ``skipped``, ``median_s``, ``total_s``, ``cpu_s`` [s],
        ``peak_mem_mb`` [MB].
    quadrant_time_s : numpy.ndarray
        Wall time from the first stage's start to the last stage's end of each quadrant [s].
    core_s_per_image : float
        Mean over quadrant-images of the stages' CPU time (the jobs' ``cpu_s``; for rows written before
        that column existed the ``[cpu=...s]`` at the end of the message, else ``elapsed_s``) [s] (NaN
        without timings).
    throughput_per_hour : float
        Quadrant-images finished per hour of wall time (NaN without timings).
    latency_h : numpy.ndarray
        Hours from each exposure to its quadrant's last finished stage.
    finish_times : list of datetime.datetime
        When each quadrant-image's last stage finished (UTC), sorted.
    candidates : `~astropy.table.Table`
        Candidates of the night (candid, pid, jd, ra, dec, isdiffpos, magpsf, rb, drb...).
    alerts : int
        Alert packets of the night (archive database, else the packets in the night's alert tar files).
    alerts_rb : numpy.ndarray
        ``rb`` of the stored alert packets (empty when they come from tar files).
    alert_source : str
        Where ``alerts`` was counted: 'database', 'tar files' or 'none'.
    cutouts : list of dict
        QA sample: ``{'candid', 'rb', 'drb', 'magpsf', 'science', 'template', 'difference'}``.
    recovery : `~astropy.table.Table` or None
        `transient_recovery` (None without simulator truth).
    notes : list of str
        What was missing or could not be read.
    """

    night: str
    raw_exposures: int = 0
    exposures: int = 0
    images: Table = dataclasses.field(default_factory=Table)
    jobs: Table = dataclasses.field(default_factory=Table)
    failures: Table = dataclasses.field(default_factory=Table)
    stages: Table = dataclasses.field(default_factory=Table)
    quadrant_time_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    core_s_per_image: float = math.nan
    throughput_per_hour: float = math.nan
    latency_h: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    finish_times: list = dataclasses.field(default_factory=list)
    candidates: Table = dataclasses.field(default_factory=Table)
    alerts: int = 0
    alerts_rb: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    alert_source: str = "none"
    cutouts: list = dataclasses.field(default_factory=list)
    recovery: Table | None = None
    notes: list = dataclasses.field(default_factory=list)

    @property
    def quadrants(self) -> int:
        """Quadrant-images processed (with a calibrated science image)."""
        return len(self.images)

    @property
    def subtracted(self) -> int:
        """Quadrant-images with a difference image (a difference-image limit)."""
        if not len(self.images) or "diffmaglim" not in self.images.colnames:
            return 0
        return int(np.sum(np.isfinite(_floats(self.images["diffmaglim"]))))

    @property
    def failed(self) -> int:
        """Failed (quadrant, stage) jobs (latest attempt)."""
        return int(np.sum(self.failures["count"])) if len(self.failures) else 0

    @property
    def injected(self) -> int:
        """Injected transients brighter than the difference-image limit on at least one epoch."""
        if self.recovery is None or not len(self.recovery):
            return 0
        return int(np.sum(self.recovery["ndetectable"] > 0))

    @property
    def recovered(self) -> int:
        """Of `injected`, those with a candidate within `RECOVERY_RADIUS` on such an epoch."""
        if self.recovery is None or not len(self.recovery):
            return 0
        return int(np.sum(self.recovery["recovered"]))


# -- helpers ----------------------------------------------------------------------------------------
def _floats(column) -> np.ndarray:
    """A column as float64 with masked / None values as NaN."""
    if hasattr(column, "filled"):
        column = column.filled(np.nan) if column.dtype.kind == "f" else column
    out = np.full(len(column), np.nan)
    for i, v in enumerate(np.asarray(column, dtype=object)):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def _night_string(night) -> str:
    if isinstance(night, (_dt.date, _dt.datetime)):
        return night.strftime("%Y%m%d")
    night = str(night).replace("-", "")
    if not re.fullmatch(r"\d{8}", night):
        raise ZTFSDSError(f"night must be a UT date YYYYMMDD, got {night!r}")
    return night


def _night_jd_range(night: str) -> tuple[float, float]:
    """[start, end) of the UT date [JD]."""
    d = _dt.datetime.strptime(night, "%Y%m%d")
    mjd = (d - _dt.datetime(1858, 11, 17)).days
    return mjd + 2400000.5, mjd + 2400001.5


def _iso(value) -> _dt.datetime | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        t = _dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _jd_to_datetime(jd: float) -> _dt.datetime:
    return _dt.datetime(1858, 11, 17, tzinfo=_dt.timezone.utc) + _dt.timedelta(days=float(jd) - 2400000.5)


def cause_of(message: str) -> str:
    """A failure message with paths, product names and numbers elided, so that alike failures group."""
    text = str(message or "").strip().splitlines()[0] if str(message or "").strip() else "(no message)"
    text = re.sub(r"[^\s:,;'\"]*/[^\s:,;'\"]*", "<file>", text)
    text = re.sub(r"ztf_[^\s:,;'\"]+", "<product>", text)
    text = re.sub(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?", "N", text)
    return text[:140]


def report_path(store: ProductStore, night: str) -> Path:
    """Where `write_report` writes a night's page: ``<root>/reports/ztfsds_<night>_report.html``."""
    return Path(store.reports_dir) / f"ztfsds_{_night_string(night)}_report.html"


# -- gathering ----------------------------------------------------------------------------------------
def _db_images(db, jd0: float, jd1: float) -> Table:
    cols = ", ".join(_IMAGE_COLUMNS)
    return db.query_table(f"SELECT {cols} FROM quadimages WHERE jd >= ? AND jd < ? ORDER BY jd, pid", (jd0, jd1))


def _product_images(store: ProductStore, night: str) -> Table:
    """Quadrant-image rows from the sciimg headers (no database)."""
    from ..archive.footprint import footprint_corners

    rows = []
    for key in store.keys("sci", night=night, suffix="sciimg"):
        try:
            h = store.read_header(key)
        except (ZTFSDSError, OSError) as exc:
            log.warning("report: %s unreadable: %s", key.filename, exc)
            continue
        corners = footprint_corners(h)
        diffmaglim = math.nan
        for suffix in ("scimrefdiffimg", "candidates"):  # the candidates' header is the difference image's
            if math.isnan(diffmaglim) and store.exists(key.with_suffix(suffix)):
                try:
                    diffmaglim = float(store.read_header(key.with_suffix(suffix)).get("DIFFMLIM", math.nan))
                except (ZTFSDSError, OSError, TypeError, ValueError):
                    pass
        row = {"pid": key.pid(), "jd": float(h.get("OBSJD", math.nan)), "field": key.field, "ccdid": key.ccdid,
               "qid": key.qid, "fid": key.fid, "filtercode": key.filtercode, "magzp": h.get("MAGZP"),
               "seeing": h.get("SEEING"), "maglim": h.get("MAGLIM"), "diffmaglim": diffmaglim,
               "infobits": int(h.get("INFOBITS", 0)), "status": 1, "ncands": None}
        for k in range(4):
            row[f"ra{k + 1}"] = float(corners[k, 0]) if corners is not None else math.nan
            row[f"dec{k + 1}"] = float(corners[k, 1]) if corners is not None else math.nan
        row["ra"] = np.nanmean([row[f"ra{k + 1}"] for k in range(4)]) if corners is not None else math.nan
        row["dec"] = np.nanmean([row[f"dec{k + 1}"] for k in range(4)]) if corners is not None else math.nan
        rows.append(row)
    if not rows:
        return Table()
    return Table({c: [_nan_if_none(r.get(c)) for r in rows] for c in _IMAGE_COLUMNS})


def _nan_if_none(v):
    return math.nan if v is None else v


def _db_candidates(db, jd0: float, jd1: float) -> Table:
    cols = ", ".join(_CANDIDATE_COLUMNS)
    return db.query_table(f"SELECT {cols} FROM candidates WHERE jd >= ? AND jd < ? ORDER BY candid", (jd0, jd1))


def _product_candidates(store: ProductStore, night: str) -> Table:
    """Candidates read from the night's candidates products (no database); ra/dec from the WCS if absent."""
    from astropy.wcs import WCS

    from ..products import candid as make_candid

    parts = []
    for key in store.keys("sci", night=night, suffix="candidates"):
        try:
            with fits.open(store.path(key), memmap=False) as hdul:
                h = hdul[0].header
                data = hdul["CANDIDATES"].data
                t = Table({n: np.asarray(data[n]) for n in data.names}) if data is not None else Table()
        except (OSError, KeyError, ValueError) as exc:
            log.warning("report: %s unreadable: %s", key.filename, exc)
            continue
        n = len(t)
        if not n:
            continue
        if "ra" not in t.colnames and "CTYPE1" in h:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ra, dec = WCS(h, naxis=2).all_pix2world(np.asarray(t["xpos"], float), np.asarray(t["ypos"], float), 0)
            t["ra"], t["dec"] = np.mod(ra, 360.0), dec
        pid = key.pid()
        tblid = np.asarray(t["tblid"], int) if "tblid" in t.colnames else np.arange(n)
        isdiffpos = [str(v).strip() for v in np.asarray(t["isdiffpos"])] if "isdiffpos" in t.colnames else ["t"] * n
        out = Table()
        out["candid"] = np.array([make_candid(pid, i, s) for i, s in zip(tblid, isdiffpos)], np.int64)
        out["pid"] = np.full(n, pid, np.int64)
        out["jd"] = np.full(n, float(h.get("OBSJD", math.nan)))
        out["fid"] = np.full(n, key.fid)
        out["field"] = np.full(n, key.field)
        out["rcid"] = np.full(n, key.rcid)
        out["tblid"] = tblid
        for c in ("ra", "dec", "magpsf", "rb", "drb"):
            out[c] = np.asarray(t[c], float) if c in t.colnames else np.full(n, np.nan)
        out["isdiffpos"] = isdiffpos
        out["pdiffimfilename"] = [key.with_suffix("scimrefdiffimg").filename] * n
        parts.append(out)
    if not parts:
        return Table()
    from astropy.table import vstack

    return vstack(parts)


def _jobs_of_night(db, night: str) -> Table:
    sql = ("SELECT quadrant, stage, status, message, elapsed_s, peak_mem_mb, started, finished, attempt{} "
           "FROM jobs WHERE quadrant LIKE ? OR quadrant LIKE ? OR quadrant = ? ORDER BY quadrant, stage, attempt")
    params = (f"ztf_{night}%", f"{night}%", night)
    try:
        t = db.query_table(sql.format(", cpu_s"), params)
    except ZTFSDSError:  # a database not migrated to schema version 2 (no jobs.cpu_s)
        t = db.query_table(sql.format(""), params)
    if not len(t):
        return t
    # the latest attempt of each (quadrant, stage): a retry that succeeded is not a failure
    last = {}
    for i, (q, s) in enumerate(zip(t["quadrant"], t["stage"])):
        last[(str(q), str(s))] = i
    return t[sorted(last.values())]


def _science_key(name: str) -> ProductKey | None:
    """The sciimg key of a jobs-table quadrant name (`ztfsds.ops.pipeline.quadrant_name`), None for others."""
    for candidate in (name, name + "_sciimg.fits", name + ".fits"):
        try:
            key = ProductKey.parse(candidate)
        except ProductNameError:
            continue
        return key.with_suffix("sciimg", ".fits") if key.kind == "sci" else None
    return None


def _quadrant_of(name: str) -> str:
    """The quadrant-exposure a job row belongs to (its sciimg name; the name itself for a raw file)."""
    key = _science_key(name)
    return key.filename if key is not None else name


_CPU_RE = re.compile(r"\s*\[cpu=([0-9.eE+-]+)s\]\s*$")


def _split_cpu(message) -> tuple[str, float]:
    """(message, CPU seconds) of a jobs-table message ending in ``[cpu=...s]`` (NaN without)."""
    text = "" if message is None else str(message)
    m = _CPU_RE.search(text)
    if m is None:
        return text, math.nan
    try:
        return text[: m.start()], float(m.group(1))
    except ValueError:
        return text[: m.start()], math.nan


#: Job statuses counted as failures (``'failed'``: a data problem; ``'error'``: an infrastructure one).
FAILED_STATUSES = ("failed", "error")


def _job_numbers(summary: NightSummary, jobs: Table) -> None:
    empty = Table(names=("stage", "status", "cause", "count", "example"), dtype=(str, str, str, int, str))
    summary.jobs = jobs
    summary.failures = empty
    if not len(jobs):
        return
    status = np.array([str(x) for x in jobs["status"]])
    stage = np.array([str(x) for x in jobs["stage"]])
    split = [_split_cpu(m) for m in jobs["message"]]
    messages = [m for m, _ in split]
    cpu = np.array([c for _, c in split], float)
    if "cpu_s" in jobs.colnames:  # the column wins; the message's tag is for rows older than it
        column = _floats(jobs["cpu_s"])
        cpu = np.where(np.isfinite(column), column, cpu)
    failed = np.isin(status, FAILED_STATUSES)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for i in np.flatnonzero(failed):
        groups.setdefault((stage[i], status[i], cause_of(messages[i])), []).append(str(jobs["quadrant"][i]))
    order = sorted(groups, key=lambda k: (-len(groups[k]), k))
    if order:
        summary.failures = Table({"stage": [k[0] for k in order], "status": [k[1] for k in order],
                                  "cause": [k[2] for k in order], "count": [len(groups[k]) for k in order],
                                  "example": [groups[k][0] for k in order]}, dtype=(str, str, str, int, str))
    elapsed = _floats(jobs["elapsed_s"])
    mem = _floats(jobs["peak_mem_mb"])
    rows = []
    for st in dict.fromkeys(stage):
        m = stage == st
        e = elapsed[m][np.isfinite(elapsed[m])]
        c = cpu[m][np.isfinite(cpu[m])]
        pm = mem[m][np.isfinite(mem[m])]
        rows.append((st, int(m.sum()), int(np.sum(status[m] == "ok")), int(np.sum(failed & m)),
                     int(np.sum(status[m] == "skipped")), float(np.median(e)) if len(e) else math.nan,
                     float(e.sum()) if len(e) else math.nan, float(c.sum()) if len(c) else math.nan,
                     float(pm.max()) if len(pm) else math.nan))
    summary.stages = Table(rows=rows, names=("stage", "n", "ok", "failed", "skipped", "median_s", "total_s",
                                             "cpu_s", "peak_mem_mb"))

    started = [_iso(v) for v in jobs["started"]]
    finished = [_iso(v) for v in jobs["finished"]]
    quads = np.array([_quadrant_of(str(q)) for q in jobs["quadrant"]])
    # core-seconds: the CPU time the pipeline wrote into the message, else the wall time
    core = np.where(np.isfinite(cpu), cpu, elapsed)
    per_quad_times, per_quad_core, ends = [], [], []
    for q in dict.fromkeys(quads):
        idx = np.flatnonzero(quads == q)
        st = [started[i] for i in idx if started[i] is not None]
        fin = [finished[i] for i in idx if finished[i] is not None]
        e = elapsed[idx][np.isfinite(elapsed[idx])]
        if st and fin:
            per_quad_times.append((max(fin) - min(st)).total_seconds())
        elif len(e):
            per_quad_times.append(float(e.sum()))
        if _science_key(q) is None:
            continue  # a raw file that failed before its quadrants existed: no quadrant-image
        c = core[idx][np.isfinite(core[idx])]
        if len(c):
            per_quad_core.append(float(c.sum()))
        if fin:
            ends.append((q, max(fin)))
    summary.quadrant_time_s = np.asarray(per_quad_times, float)
    if per_quad_core:
        summary.core_s_per_image = float(np.mean(per_quad_core))
    all_s = [t for t in started if t is not None]
    all_f = [t for t in finished if t is not None]
    if all_s and all_f and ends:
        span = (max(all_f) - min(all_s)).total_seconds()
        if span > 0:
            summary.throughput_per_hour = len(ends) / (span / 3600.0)
    summary.finish_times = sorted(t for _, t in ends)
    # latency: from the exposure to its quadrant's last finished stage
    if len(summary.images) and ends:
        jd_of = dict(zip((int(p) for p in summary.images["pid"]), _floats(summary.images["jd"])))
        lat = []
        for q, t in ends:
            jd = jd_of.get(_science_key(q).pid())
            if jd is not None and math.isfinite(jd):
                lat.append((t - _jd_to_datetime(jd)).total_seconds() / 3600.0)
        summary.latency_h = np.asarray(lat, float)


def _alert_numbers(summary: NightSummary, store: ProductStore, db, jd0: float, jd1: float) -> None:
    if db is not None:
        t = db.query_table("SELECT candid, rb, drb FROM alert_packets WHERE jd >= ? AND jd < ?", (jd0, jd1))
        if len(t):
            summary.alerts = len(t)
            summary.alerts_rb = _floats(t["rb"])
            summary.alert_source = "database"
            return
    tars = sorted(p for p in store.alerts_dir(summary.night).glob("*") if p.name.endswith((".tar", ".tar.gz", ".tgz")))
    n = 0
    for p in tars:
        try:
            with tarfile.open(p, "r:*") as tar:
                n += sum(1 for m in tar.getmembers() if m.name.endswith(".avro"))
        except (tarfile.TarError, OSError) as exc:
            summary.notes.append(f"{p}: unreadable alert tar file ({exc})")
    if tars:
        summary.alerts = n
        summary.alert_source = "tar files"


def _qa_cutouts(summary: NightSummary, store: ProductStore, db) -> None:
    """Up to `QA_SAMPLE` candidates evenly spaced in drb (bogus to real), with their three cutouts."""
    cands = summary.candidates
    if not len(cands):
        return
    score = _floats(cands["drb"])
    score = np.where(np.isfinite(score), score, _floats(cands["rb"]))
    order = np.argsort(np.where(np.isfinite(score), score, -1.0), kind="stable")
    pick = order[np.unique(np.round(np.linspace(0, len(order) - 1, min(QA_SAMPLE, len(order)))).astype(int))][::-1]
    opened: dict[str, tuple[Table, np.ndarray] | None] = {}
    for i in pick:
        row = cands[int(i)]
        stamps = None
        name = str(row["pdiffimfilename"]) if "pdiffimfilename" in cands.colnames else ""
        if name and name not in ("", "None", "nan"):
            if name not in opened:
                opened[name] = _read_cutouts(store, name)
            got = opened[name]
            if got is not None:
                table, cubes = got
                tblid = int(row["tblid"]) if "tblid" in cands.colnames and np.isfinite(_floats([row["tblid"]])[0]) else -1
                j = np.flatnonzero(np.asarray(table["tblid"]) == tblid) if "tblid" in table.colnames else []
                j = int(j[0]) if len(j) else (tblid if 0 <= tblid < len(cubes) else -1)
                if j >= 0:
                    stamps = {"science": cubes[j, 0], "template": cubes[j, 1], "difference": cubes[j, 2]}
        if stamps is None and db is not None:
            try:
                from ..archive import alert_cutouts

                got = alert_cutouts(db, int(row["candid"]))
                stamps = got if got else None
            except ZTFSDSError:
                stamps = None
        if stamps is None:
            continue
        summary.cutouts.append({"candid": int(row["candid"]), "rb": _floats([row["rb"]])[0],
                                "drb": _floats([row["drb"]])[0], "magpsf": _floats([row["magpsf"]])[0], **stamps})


def _read_cutouts(store: ProductStore, diff_name: str):
    try:
        key = ProductKey.parse(diff_name).with_suffix("candidates", ".fits")
        path = store.path(key)
        if not path.is_file():
            return None
        with fits.open(path, memmap=False) as hdul:
            if "CUTOUTS" not in hdul:
                return None
            data = hdul["CANDIDATES"].data
            table = Table({n: np.asarray(data[n]) for n in data.names}) if data is not None else Table()
            cubes = np.asarray(hdul["CUTOUTS"].data, np.float32)
        if cubes.ndim != 4 or cubes.shape[1] < 3:
            return None
        return table, cubes
    except (ProductNameError, OSError, KeyError, ValueError) as exc:
        log.warning("report: cutouts of %s unreadable: %s", diff_name, exc)
        return None


def transient_recovery(store, night, images: Table, candidates: Table, *,
                       radius_arcsec: float = RECOVERY_RADIUS) -> Table | None:
    """Injected (simulated) transients of a night against the candidates.

    Reads the simulator truth ``<root>/sim/truth/<night>/*_truth.fits`` (one table per quadrant,
    HDUs ``Q1``-``Q4``) and the fakes injected by `ztfsds.ops.inject` (``<root>/ops/fakes/<night>/``,
    kind ``'fake'``, one transient per fake and exposure with ``source_id`` = -(pid * 1000 + fake_id)).
    A transient (``kind`` in `TRANSIENT_KINDS`, on the image, or a fake) is *detectable* on
    an epoch whose quadrant has a difference image and where its true magnitude is brighter than that
    image's limit (``diffmaglim``); it is *recovered* if a candidate of that quadrant-image lies within
    ``radius_arcsec`` on at least one such epoch.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore` or path-like
        The data root.
    night : str
        UT date ``YYYYMMDD``.
    images : `~astropy.table.Table`
        The night's quadrant-images (columns ``pid``, ``diffmaglim`` [mag]).
    candidates : `~astropy.table.Table`
        The night's candidates (``pid``, ``ra``, ``dec`` [deg]).
    radius_arcsec : float, optional
        Match radius [arcsec].

    Returns
    -------
    `~astropy.table.Table` or None
        One row per transient (field, ccdid, source_id): ``kind``, ``ra``, ``dec`` [deg], ``mag_min`` (its
        brightest true magnitude of the night) [mag], ``nepochs`` (epochs on a subtracted image),
        ``ndetectable``, ``ndetected`` (detectable epochs with a candidate), ``recovered`` (bool);
        None when the night has neither truth files nor fakes.
    """
    from ..archive.footprint import angular_distance

    store = store if isinstance(store, ProductStore) else ProductStore(store)
    night = _night_string(night)
    files = sorted((store.root / "sim" / "truth" / night).glob("*_truth.fits"))
    fakes = sorted((store.root / FAKES_DIR / night).glob("*_fakes.fits"))
    if not files and not fakes:
        return None
    diffmaglim = {}
    if len(images) and "diffmaglim" in images.colnames:
        diffmaglim = dict(zip((int(p) for p in images["pid"]), _floats(images["diffmaglim"])))
    by_pid: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if len(candidates):
        pids = np.asarray(candidates["pid"], np.int64)
        ra, dec = _floats(candidates["ra"]), _floats(candidates["dec"])
        for p in np.unique(pids):
            m = pids == p
            by_pid[int(p)] = (ra[m], dec[m])
    acc: dict[tuple[int, int, int], dict] = {}
    for raw, qid, kind, t in _truth_tables(files, fakes):
        pid = raw.quadrant(qid).pid()
        lim = float(diffmaglim.get(pid, math.nan))
        cra, cdec = by_pid.get(pid, (np.zeros(0), np.zeros(0)))
        for i in range(len(t)):
            sid = (raw.field, raw.ccdid, int(t["source_id"][i]))
            ra, dec, mag = float(t["ra"][i]), float(t["dec"][i]), float(t["mag"][i])
            a = acc.setdefault(sid, {"kind": kind[i], "ra": ra, "dec": dec, "qid": qid, "mag_min": mag,
                                     "nepochs": 0, "ndetectable": 0, "ndetected": 0})
            a["mag_min"] = min(a["mag_min"], mag)
            if not math.isfinite(lim):
                continue
            a["nepochs"] += 1
            if mag < lim:
                a["ndetectable"] += 1
                if len(cra) and np.min(angular_distance(ra, dec, cra, cdec)) <= radius_arcsec:
                    a["ndetected"] += 1
    keys = sorted(acc)
    out = Table()
    out["field"] = np.array([k[0] for k in keys], int)
    out["ccdid"] = np.array([k[1] for k in keys], int)
    out["qid"] = np.array([acc[k]["qid"] for k in keys], int)
    out["source_id"] = np.array([k[2] for k in keys], np.int64)
    out["kind"] = np.array([acc[k]["kind"] for k in keys], dtype="<U9")
    for c in ("ra", "dec", "mag_min"):
        out[c] = np.array([acc[k][c] for k in keys], float)
    for c in ("nepochs", "ndetectable", "ndetected"):
        out[c] = np.array([acc[k][c] for k in keys], int)
    out["recovered"] = out["ndetected"] > 0
    return out


def _truth_tables(files, fakes):
    """(raw key, qid, kind array, rows) of the transients of the simulator's truth files and the fakes."""
    for path in files:
        stem = path.name[: -len("_truth.fits")]
        try:
            raw = ProductKey.parse(stem + ".fits")
        except ProductNameError:
            log.warning("report: %s: not named after a raw file", path)
            continue
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul[1:]:
                if not (hdu.name.startswith("Q") and hdu.name[1:].isdigit()) or hdu.data is None:
                    continue
                t = hdu.data
                kind = np.char.strip(np.asarray(t["kind"]).astype(str))
                on = np.asarray(t["on_image"], bool) if "on_image" in t.names else np.ones(len(t), bool)
                sel = np.flatnonzero(np.isin(kind, TRANSIENT_KINDS) & on)
                if len(sel):
                    yield raw, int(hdu.name[1:]), kind[sel], t[sel]
    for path in fakes:
        try:
            key = ProductKey.parse(path.name[: -len("_fakes.fits")] + "_sciimg.fits")
            t = Table.read(path, hdu="FAKES")
        except (ProductNameError, OSError, KeyError, ValueError) as exc:
            log.warning("report: %s unreadable: %s", path, exc)
            continue
        if not len(t):
            continue
        # one transient per fake and exposure: source_id -(pid * 1000 + fake_id), apart from the sky's ids
        t["source_id"] = -(key.pid() * 1000 + np.asarray(t["fake_id"], np.int64))
        yield ProductKey.raw(key.filefracday, key.field, key.filtercode, key.ccdid), key.qid, \
            np.full(len(t), "fake"), t


def summarize_night(store, night, *, db=None) -> NightSummary:
    """Gather a night's numbers from the archive database and the data root.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore` or path-like
        The data root.
    night : str or datetime.date
        UT date (``YYYYMMDD``).
    db : `~ztfsds.archive.db.Database` or str, optional
        The archive database (or its URL); default the data root's SQLite file when it exists, else
        none (images and candidates are then read from the products).

    Returns
    -------
    NightSummary
    """
    from ..archive import connect

    store = store if isinstance(store, ProductStore) else ProductStore(store)
    night = _night_string(night)
    summary = NightSummary(night=night)
    jd0, jd1 = _night_jd_range(night)
    own = None
    if isinstance(db, (str, os.PathLike)):
        db = own = connect(str(db))
    elif db is None and store.database_path.is_file():
        db = own = connect(store=store)
    try:
        summary.raw_exposures = sum(1 for k in store.keys("raw", night=night) if k.imgtype == "o")
        if db is not None:
            summary.images = _db_images(db, jd0, jd1)
            summary.candidates = _db_candidates(db, jd0, jd1)
        else:
            summary.notes.append("no archive database: images and candidates read from the products; "
                                 "no job timings")
        if not len(summary.images):
            summary.images = _product_images(store, night)
            if len(summary.images) and db is not None:
                summary.notes.append("the night's images are not in the database: read from the products")
        if not len(summary.candidates) and len(summary.images):
            summary.candidates = _product_candidates(store, night)
        if len(summary.images):
            exp = {(round(float(j), 6), int(f)) for j, f in zip(_floats(summary.images["jd"]), summary.images["field"])}
            summary.exposures = len(exp)
        _job_numbers(summary, _jobs_of_night(db, night) if db is not None else Table())
        _alert_numbers(summary, store, db, jd0, jd1)
        _qa_cutouts(summary, store, db)
        summary.recovery = transient_recovery(store, night, summary.images, summary.candidates)
        if not summary.subtracted and len(summary.images):
            summary.notes.append("no difference images this night (no references yet?)")
    finally:
        if own is not None:
            own.close()
    return summary


# -- plots --------------------------------------------------------------------------------------------
def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w, h):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _plot_conditions(s: NightSummary) -> str | None:
    im = s.images
    if not len(im):
        return None
    jd = _floats(im["jd"])
    if not np.isfinite(jd).any():
        return None
    hours = (jd - _night_jd_range(s.night)[0]) * 24.0
    fid = np.asarray(im["fid"], int)
    fig = _figure(7.5, 6.0)
    axes = fig.subplots(3, 1, sharex=True)
    panels = [("seeing", "seeing [arcsec]"), ("magzp", "zero point MAGZP [mag]"), ("maglim", "limiting mag [mag]")]
    for ax, (col, label) in zip(axes, panels):
        y = _floats(im[col])
        for f in np.unique(fid):
            m = fid == f
            ax.plot(hours[m], y[m], "o", ms=3, color=_FILTER_COLORS.get(int(f), "k"), label=f"fid {f}")
        if col == "maglim":
            d = _floats(im["diffmaglim"])
            if np.isfinite(d).any():
                ax.plot(hours, d, "x", ms=3, color="0.4", label="diffmaglim")
            ax.invert_yaxis()
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    axes[-1].set_xlabel(f"hours UT on {s.night}")
    return _png(fig)


def _plot_skymap(s: NightSummary) -> str | None:
    from matplotlib.patches import Polygon

    im = s.images
    if not len(im):
        return None
    ras = np.array([_floats(im[f"ra{k}"]) for k in range(1, 5)]).T
    decs = np.array([_floats(im[f"dec{k}"]) for k in range(1, 5)]).T
    good = np.isfinite(ras).all(1) & np.isfinite(decs).all(1)
    if not good.any():
        return None
    ras, decs = ras[good], decs[good]
    centre = float(np.median(ras[:, 0]))
    ras = (ras - centre + 180.0) % 360.0 - 180.0 + centre  # unwrap around the median RA
    fid = np.asarray(im["fid"], int)[good]
    fields = np.asarray(im["field"], int)[good]
    fig = _figure(6.5, 5.0)
    ax = fig.subplots()
    for r, d, f in zip(ras, decs, fid):
        ax.add_patch(Polygon(np.c_[r, d], closed=True, fill=True, alpha=0.25, ec=_FILTER_COLORS.get(int(f), "k"),
                             fc=_FILTER_COLORS.get(int(f), "k")))
    for f in np.unique(fields):
        m = fields == f
        ax.text(ras[m].mean(), decs[m].mean(), str(f), ha="center", va="center", fontsize=8)
    pad = 0.05 * max(np.ptp(ras), np.ptp(decs), 0.05)
    ax.set_xlim(ras.max() + pad, ras.min() - pad)  # RA increases to the east (left)
    ax.set_ylim(decs.min() - pad, decs.max() + pad)
    ax.set_xlabel("RA [deg]")
    ax.set_ylabel("Dec [deg]")
    ax.set_title(f"{len(ras)} quadrant footprints, {len(np.unique(fields))} fields")
    ax.grid(alpha=0.3)
    return _png(fig)


def _plot_timing(s: NightSummary) -> str | None:
    times = s.quadrant_time_s
    finish = s.finish_times
    if not len(times) and not finish:
        return None
    fig = _figure(8.0, 3.0)
    a1, a2 = fig.subplots(1, 2)
    if len(times):
        a1.hist(times, bins=min(30, max(5, len(times) // 2)), color="tab:blue")
    a1.set_xlabel("processing time per quadrant-image [s]")
    a1.set_ylabel("quadrant-images")
    if finish:
        t0 = finish[0]
        start = s.jobs["started"] if len(s.jobs) else []
        starts = [t for t in (_iso(v) for v in start) if t is not None]
        t0 = min(starts) if starts else t0
        minutes = [(t - t0).total_seconds() / 60.0 for t in finish]
        a2.step(minutes, np.arange(1, len(minutes) + 1), where="post", color="tab:purple")
    a2.set_xlabel("minutes since the first stage started")
    a2.set_ylabel("quadrant-images finished")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    return _png(fig)


def _plot_scores(s: NightSummary) -> str | None:
    c = s.candidates
    rb = _floats(c["rb"]) if len(c) else np.zeros(0)
    drb = _floats(c["drb"]) if len(c) else np.zeros(0)
    if not np.isfinite(rb).any() and not np.isfinite(drb).any() and not len(s.alerts_rb):
        return None
    fig = _figure(7.5, 3.0)
    ax = fig.subplots()
    bins = np.linspace(0, 1, 21)
    for values, label, color in ((rb, "candidates rb", "tab:blue"), (drb, "candidates drb", "tab:orange"),
                                 (s.alerts_rb, "alerts rb", "tab:green")):
        v = values[np.isfinite(values)]
        if len(v):
            ax.hist(v, bins=bins, histtype="step", lw=1.5, label=f"{label} ({len(v)})", color=color)
    ax.set_xlabel("real-bogus score")
    ax.set_ylabel("count")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return _png(fig)


def _plot_cutouts(s: NightSummary) -> str | None:
    if not s.cutouts:
        return None
    n = len(s.cutouts)
    fig = _figure(5.4, 1.9 * n)
    axes = np.atleast_2d(fig.subplots(n, 3))
    for row, cut in zip(axes, s.cutouts):
        for ax, name in zip(row, ("science", "template", "difference")):
            img = np.asarray(cut.get(name, np.zeros((1, 1))), float)
            finite = img[np.isfinite(img)]
            lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
            ax.imshow(np.nan_to_num(img), origin="lower", cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{cut['candid']}\nrb {cut['rb']:.2f} drb {cut['drb']:.2f}", fontsize=7)
    for ax, name in zip(axes[0], ("science", "reference", "difference")):
        ax.set_title(name, fontsize=9)
    return _png(fig)


# -- HTML ---------------------------------------------------------------------------------------------
_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td.l, th.l { text-align: left; }
.headline { font-size: 1.1em; background: #eef4ff; padding: 0.6em 1em; border-radius: 4px; }
.bad { color: #a00; } .note { color: #666; font-style: italic; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
"""


def _fmt(v, digits=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, (float, np.floating)):
        return "-" if not math.isfinite(v) else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table_html(t: Table, columns=None, *, left=(), digits=2, limit=_MAX_ROWS) -> str:
    """An HTML table; ``digits`` is an int or a dict column -> digits (default 2)."""
    columns = columns or t.colnames
    ndig = digits if isinstance(digits, dict) else {}
    default = 2 if isinstance(digits, dict) else digits
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(c)}</th>' for c in columns)
    body = []
    for row in t[:limit]:
        cells = "".join(f'<td class="{"l" if c in left else ""}">{_fmt(row[c], ndig.get(c, default))}</td>'
                        for c in columns)
        body.append(f"<tr>{cells}</tr>")
    more = f'<p class="note">... {len(t) - limit} more rows</p>' if len(t) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _img(b64: str | None, alt: str, missing: str) -> str:
    if b64 is None:
        return f'<p class="note">{html.escape(missing)}</p>'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _median(v) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else math.nan


def render_report(summary: NightSummary) -> str:
    """The HTML page of a `NightSummary` (self-contained: plots inline as PNG).

    Parameters
    ----------
    summary : NightSummary

    Returns
    -------
    str
        The HTML document.
    """
    s = summary
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    n_pos = int(np.sum(np.char.strip(np.asarray(s.candidates["isdiffpos"]).astype(str)) == "t")) \
        if len(s.candidates) and "isdiffpos" in s.candidates.colnames else 0
    infobits = int(np.sum(np.asarray(s.images["infobits"], float) > 0)) if len(s.images) else 0
    if s.recovery is not None:
        rec = (f"recovered <b>{s.recovered}</b> of <b>{s.injected}</b> injected transients brighter than the "
               f"difference-image limit")
    else:
        rec = "no simulator truth for this night"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ztfsds night {s.night}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>ztfsds nightly report: {s.night}</h1>",
             f'<p class="note">generated {now} by ztfsds {html.escape(__version__)}</p>',
             f'<p class="headline" id="headline">{s.exposures} exposures, {s.quadrants} quadrant-images '
             f"processed, {s.subtracted} subtracted; "
             f'<span class="{"bad" if s.failed else ""}">{s.failed} failed jobs</span>; '
             f"{len(s.candidates)} candidates, {s.alerts} alerts; {rec}.</p>"]
    if s.notes:
        parts.append("<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in s.notes) + "</ul>")

    counts = Table(rows=[("raw science CCD files", s.raw_exposures), ("exposures processed", s.exposures),
                         ("quadrant-images processed", s.quadrants), ("quadrant-images with INFOBITS set", infobits),
                         ("quadrant-images subtracted", s.subtracted), ("candidates", len(s.candidates)),
                         ("positive candidates (isdiffpos t)", n_pos),
                         (f"alerts ({s.alert_source})", s.alerts)], names=("what", "count"))
    parts += ["<h2>Processing</h2>", _table_html(counts, left=("what",))]
    if len(s.stages):
        parts += ["<h3>Stages (latest attempt)</h3>",
                  _table_html(s.stages, left=("stage",), digits=2)]
    parts.append("<h3>Failures by stage and cause</h3>")
    if len(s.failures):
        parts.append(_table_html(s.failures, ("stage", "status", "cause", "count", "example"),
                                 left=("stage", "status", "cause", "example")))
        failed = s.jobs[np.isin(np.array([str(x) for x in s.jobs["status"]]), FAILED_STATUSES)]
        parts += ["<h3>Failed quadrants</h3>",
                  _table_html(failed, ("quadrant", "stage", "status", "attempt", "message"),
                              left=("quadrant", "stage", "status", "message"))]
    else:
        parts.append('<p class="note">no failed jobs recorded</p>')

    parts.append("<h2>Latency and throughput</h2>")
    lat = _median(s.latency_h)
    timing = [("quadrant-images timed", len(s.quadrant_time_s)),
              ("median processing time per quadrant-image [s]", _fmt(_median(s.quadrant_time_s))),
              ("max processing time per quadrant-image [s]",
               _fmt(float(np.max(s.quadrant_time_s)) if len(s.quadrant_time_s) else math.nan)),
              ("core-seconds per quadrant-image [s]", _fmt(s.core_s_per_image)),
              ("throughput [quadrant-images / hour]", _fmt(s.throughput_per_hour, 1)),
              ("median latency after the exposure [h]", _fmt(lat))]
    parts.append(_table_html(Table(rows=[(a, str(b)) for a, b in timing], names=("what", "value")), left=("what",)))
    if math.isfinite(lat) and lat > 48:
        parts.append('<p class="note">the exposures are older than two days: a reprocessing run, the latency '
                     "is not the real-time one</p>")
    parts.append(_img(_plot_timing(s), "processing time", "no job timings recorded"))

    parts.append("<h2>Observing conditions</h2>")
    if len(s.images):
        med = [("median seeing [arcsec]", _fmt(_median(_floats(s.images["seeing"])))),
               ("median MAGZP [mag]", _fmt(_median(_floats(s.images["magzp"])), 3)),
               ("median MAGLIM [mag]", _fmt(_median(_floats(s.images["maglim"])))),
               ("median diffmaglim [mag]", _fmt(_median(_floats(s.images["diffmaglim"]))))]
        parts.append(_table_html(Table(rows=med, names=("what", "value")), left=("what",)))
    parts.append(_img(_plot_conditions(s), "seeing, zero point and limiting magnitude", "no quadrant-images"))
    parts += ["<h2>Sky map</h2>", _img(_plot_skymap(s), "sky map", "no footprints")]

    parts += ["<h2>Candidates and alerts</h2>",
              f"<p>{len(s.candidates)} candidates ({n_pos} positive), {s.alerts} alerts "
              f"(counted from {html.escape(s.alert_source)}).</p>",
              _img(_plot_scores(s), "rb and drb distributions", "no candidates or alerts")]
    parts += ["<h2>QA sample of cutouts</h2>",
              '<p class="note">candidates evenly spaced in drb, highest first</p>' if s.cutouts else "",
              _img(_plot_cutouts(s), "cutouts", "no cutouts available")]

    parts.append("<h2>Injected transients</h2>")
    if s.recovery is None:
        parts.append('<p class="note">no simulator truth under sim/truth/ for this night</p>')
    else:
        r = s.recovery
        eff = 100.0 * s.recovered / s.injected if s.injected else math.nan
        unsub = int(np.sum(r["nepochs"] == 0)) if len(r) else 0
        parts.append(f'<p id="recovery">recovered {s.recovered} of {s.injected} injected transients '
                     f"({_fmt(eff, 1)} %) within {RECOVERY_RADIUS}\" on an epoch brighter than the "
                     f"difference-image limit; {len(r)} transients on the images, {unsub} only on images "
                     "without a difference image.</p>")
        if len(r):
            shown = r[np.argsort(~np.asarray(r["recovered"]) * 1 + (r["ndetectable"] == 0) * 2, kind="stable")]
            parts.append(_table_html(shown, ("field", "ccdid", "qid", "source_id", "kind", "ra", "dec", "mag_min",
                                             "nepochs", "ndetectable", "ndetected", "recovered"),
                                     left=("kind",), digits={"ra": 5, "dec": 5, "mag_min": 2}))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(store, night, *, db=None, out=None, summary: NightSummary | None = None) -> Path:
    """Write a night's summary report (one self-contained HTML file), atomically.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore` or path-like
        The data root.
    night : str or datetime.date
        UT date (``YYYYMMDD``).
    db : `~ztfsds.archive.db.Database` or str, optional
        The archive database (or its URL); default the data root's SQLite file when it exists.
    out : path-like, optional
        The HTML file; default `report_path` (``<root>/reports/ztfsds_<night>_report.html``).
    summary : NightSummary, optional
        The night's numbers when already gathered (`summarize_night`).

    Returns
    -------
    pathlib.Path
        The page written.
    """
    store = store if isinstance(store, ProductStore) else ProductStore(store)
    summary = summary if summary is not None else summarize_night(store, night, db=db)
    path = Path(out) if out is not None else report_path(store, summary.night)
    page = render_report(summary)
    with atomic_write(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report of night %s: %s (%d quadrant-images, %d failed jobs, %d alerts)", summary.night, path,
             summary.quadrants, summary.failed, summary.alerts)
    return path
