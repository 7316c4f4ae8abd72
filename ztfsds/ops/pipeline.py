"""The per-quadrant science pipeline: raw CCD file -> calib -> astrom -> photom -> subtract -> alerts -> archive.

One raw CCD file is calibrated into its four quadrants (`run_calib`), then each quadrant goes through the
stages of `STAGES` in order (DESIGN.md section 3). Every stage is a product runner with the signature
``run(key, store, config) -> ProductStatus`` plus a ``done`` test, so that:

- a failure at any stage (a `~ztfsds.products.ProductStatus` that is not ``ok``, or an exception) stops that
  quadrant only, with its INFOBITS and message recorded; the other quadrants go on;
- every stage is idempotent and safe to re-run: a stage whose products exist and are up to date is
  skipped (not run, not recorded again) unless ``force`` names it. "Up to date" is, per stage:

  ========  ==================================================================================
  calib     the quadrant's sciimg, mskimg, varimg exist, are newer than the raw file and carry the
            current ``CALHASH``
  astrom    the sciimg carries the current ``ASTHASH`` (calib rewrites the sciimg without it) and
            the sexcat exists; ASTROM_FAILED in INFOBITS means "done, failed"
  photom    the sciimg carries the current ``PHOHASH``; with psfcat and without PHOTCAL_FAILED /
            PSF_FAILED it is "done, ok", otherwise "done, failed"
  subtract  the candidates and scimrefdiffimg exist and are newer than the sciimg and the reference
  alerts    the jobs table has an 'ok' alerts run of the quadrant that finished after its candidates
            were written (the alerts' product is the database plus the alert tar)
  archive   the ``quadimages`` row of the quadrant was ingested after the sciimg was last written
  ========  ==================================================================================

Each stage run is measured (wall time, CPU time and peak memory, see `measure`) and returned as a
`StageRecord`; `record_results` writes them to the database's ``jobs`` table (`ztfsds.archive.record_job`),
one row per (quadrant, stage, attempt). Status values: ``'ok'``; ``'failed'`` (the stage reported a data
problem: a corrupt raw file, no astrometric solution; re-running gives the same result, so a night re-run
leaves it alone and only `ztfsds.ops.retry_failures` tries again); ``'error'`` (an infrastructure problem: an
exception, a database that stayed unavailable, a killed worker; a night re-run tries again);
``'skipped'`` (nothing to do: no reference for a subtraction).

A custom stage is a `Stage` with a runner of the same signature, inserted into the tuple given as
``stages``::

    from ztfsds.ops import STAGES, Stage
    def run_mystage(key, store, config):
        ...
        return ProductStatus("mystage", key.filename, ok=True, message="...")
    stages = STAGES[:3] + (Stage("mystage", run_mystage),) + STAGES[3:]
    run_night(root, stages=stages)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import resource
import sys
import time
import tracemalloc
import traceback
from pathlib import Path
from typing import Callable, Sequence

from ..config import Config
from ..errors import ZTFSDSError
from ..products import InfoBits, ProductKey, ProductStatus, ProductStore, read_header

__all__ = [
    "Stage",
    "StageRecord",
    "QuadrantResult",
    "STAGES",
    "SCIENCE_STAGES",
    "ARCHIVE_STAGES",
    "measure",
    "process_exposure",
    "process_quadrant",
    "record_results",
    "quadrant_name",
    "alerts_available",
]

log = logging.getLogger(__name__)

_ASTROM_BAD = int(InfoBits.ASTROM_FAILED)
_PHOTOM_BAD = int(InfoBits.PHOTCAL_FAILED | InfoBits.PSF_FAILED)


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def quadrant_name(key: ProductKey) -> str:
    """The name of a quadrant-exposure in the jobs table: its sciimg file name without ``_sciimg.fits``.

    For a raw CCD file (a failure before the quadrants exist) the raw name without extension.
    """
    name = key.filename
    for tail in ("_sciimg.fits", ".fits.fz", ".fits"):
        if name.endswith(tail):
            return name[: -len(tail)]
    return name


# -- measurement -------------------------------------------------------------------------------------
@dataclasses.dataclass
class StageRecord:
    """One stage run on one quadrant (or raw file), as recorded in the jobs table.

    Attributes
    ----------
    quadrant : str
        `quadrant_name` of the quadrant-exposure (or raw file).
    stage : str
        Stage name.
    status : str
        'ok', 'failed', 'error' or 'skipped' (see the module notes).
    message : str
        The stage's one-line message (the error for a failure).
    infobits : int
        INFOBITS reported by the stage.
    elapsed_s : float
        Wall time [s].
    cpu_s : float
        CPU time of the worker process during the stage (user + system, all its threads) [s].
    peak_mem_mb : float
        Peak memory [MB]: the worker's peak resident set size (``ru_maxrss``) when the stage ended or,
        with ``trace_memory``, the peak of the stage's own Python and numpy allocations (tracemalloc).
    started, finished : str
        ISO times (UTC).
    outputs : list of str
        Products written.
    """

    quadrant: str
    stage: str
    status: str
    message: str = ""
    infobits: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    peak_mem_mb: float = 0.0
    started: str = ""
    finished: str = ""
    outputs: list[str] = dataclasses.field(default_factory=list)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20  # kB on Linux, bytes on macOS


def measure(stage: str, name: str, call: Callable[[], ProductStatus], *, trace_memory: bool = False
            ) -> tuple[StageRecord, ProductStatus | None]:
    """Run one stage call, measuring it, and turn its outcome into a `StageRecord`.

    Wall time is ``time.perf_counter``; CPU time is ``time.process_time`` (user + system time of the
    whole process: with a thread-based Dask worker it includes the other threads' work); peak memory is
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process high-water mark) or, with
    ``trace_memory``, the tracemalloc peak of the stage (numpy registers its buffers with tracemalloc;
    tracing slows Python-heavy code, hence off by default).

    Parameters
    ----------
    stage : str
        Stage name.
    name : str
        Quadrant name (`quadrant_name`).
    call : callable
        ``call() -> ProductStatus``.
    trace_memory : bool, optional
        Measure the stage's own peak allocation with tracemalloc.

    Returns
    -------
    record : StageRecord
        Status 'ok' / 'failed' from the ProductStatus, 'error' when ``call`` raised (the message is the
        exception and where it was raised).
    status : ProductStatus or None
        The stage's status (None after an exception).
    """
    started = _utcnow()
    if trace_memory:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        tracemalloc.reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    status = None
    try:
        status = call()
    except Exception as exc:  # noqa: BLE001 - a bug or an unexpected failure stops this quadrant only
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
        log.error("%s %s: %s", stage, name, message)
        record = StageRecord(name, stage, "error", message)
    else:
        state = "ok" if status.ok else ("skipped" if getattr(status, "skipped", False) else "failed")
        record = StageRecord(name, stage, state, status.message, int(status.infobits),
                             outputs=[os.fspath(p) for p in status.outputs])
    record.elapsed_s = time.perf_counter() - t0
    record.cpu_s = time.process_time() - c0
    if trace_memory:
        record.peak_mem_mb = tracemalloc.get_traced_memory()[1] / 2**20
    else:
        record.peak_mem_mb = _peak_rss_mb()
    record.started, record.finished = started, _utcnow()
    return record, status


# -- stages ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the per-quadrant pipeline.

    Attributes
    ----------
    name : str
        Stage name (the jobs table's ``stage``).
    run : callable
        ``run(key, store, config) -> ProductStatus`` for the quadrant's sciimg key. A status with
        ``ok=False`` stops the quadrant; set the attribute ``skipped = True`` on it for "nothing to do"
        (recorded as 'skipped'; the later stages still run and decide for themselves, e.g. the alerts
        stage skips a quadrant without a candidates product).
    done : callable, optional
        ``done(key, store, config, db) -> None | bool``: None when the stage must run, True when its
        products are up to date and usable, False when they are up to date but record a failure (the
        quadrant stops). None (the default) always runs the stage.
    needs_db : bool
        Runs where the database is (the parent process, in time order): alerts and archive.
    """

    name: str
    run: Callable[[ProductKey, ProductStore, Config], ProductStatus]
    done: Callable | None = None
    needs_db: bool = False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("nan")


def _header(store: ProductStore, key: ProductKey):
    try:
        return read_header(store.path(key))
    except (ZTFSDSError, OSError):
        return None


def _hash_done(store, key, keyword: str, value: str, product: str, bad: int):
    h = _header(store, key)
    if h is None or h.get(keyword) != value:
        return None
    if not store.exists(key.with_suffix(product)):
        return None if product == "sexcat" else False
    return not (int(h.get("INFOBITS", 0)) & bad)


def _astrom_done(key, store, config, db=None):
    return _hash_done(store, key, "ASTHASH", config.astrom.param_hash(), "sexcat", _ASTROM_BAD)


def _photom_done(key, store, config, db=None):
    return _hash_done(store, key, "PHOHASH", config.photom.param_hash(), "psfcat", _PHOTOM_BAD)


def _subtract_done(key, store, config, db=None):
    cands = store.path(key.with_suffix("candidates"))
    diff = store.path(key.with_suffix("scimrefdiffimg"))
    ref = store.path(key.reference("refimg"))
    oldest = min(_mtime(cands), _mtime(diff))
    if not oldest >= max(_mtime(store.path(key)), _mtime(ref)):  # NaN (missing) compares False
        return None
    return True


def _run_astrom(key, store, config):
    from ..astrom import run_astrom

    return run_astrom(key, store, config)


def _run_photom(key, store, config):
    from ..photom import run_photom

    return run_photom(key, store, config)


def _run_subtract(key, store, config):
    from ..subtract import run_subtract

    if not store.exists(key.reference("refimg")):
        status = ProductStatus("subtract", key.filename, ok=False,
                               message=f"no reference image {key.reference('refimg').filename} yet")
        status.skipped = True
        return status
    return run_subtract(key, store, config)


def alerts_available() -> bool:
    """Whether the alert stage runner (`ztfsds.alerts.runner.run_alerts`) is installed."""
    try:
        from ..alerts.runner import run_alerts  # noqa: F401
    except ImportError:
        return False
    return True


def _finished_after(db, name: str, stage: str, when: float) -> bool:
    rows = db.query("SELECT status, finished FROM jobs WHERE quadrant = ? AND stage = ? ORDER BY attempt DESC "
                    "LIMIT 1", (name, stage))
    if not rows or rows[0][0] != "ok" or not rows[0][1]:
        return False
    finished = _dt.datetime.fromisoformat(rows[0][1]).timestamp()
    return finished >= int(when)  # the jobs table keeps whole seconds


def _alerts_done(key, store, config, db=None):
    if db is None:
        return None
    cands = store.path(key.with_suffix("candidates"))
    return True if _finished_after(db, quadrant_name(key), "alerts", _mtime(cands)) else None


def _run_alerts(key, store, config, db=None):
    if not store.exists(key.with_suffix("candidates")):
        status = ProductStatus("alerts", key.filename, ok=False, message="no candidates product (no subtraction)")
        status.skipped = True
        return status
    try:
        from ..alerts.runner import run_alerts
    except ImportError:
        status = ProductStatus("alerts", key.filename, ok=False,
                               message="alert stage not available in this version (ztfsds.alerts.runner)")
        status.skipped = True
        return status
    return run_alerts(key, store, config, db=db)


def _archive_done(key, store, config, db=None):
    if db is None:
        return None
    rows = db.query("SELECT ingested_at FROM quadimages WHERE sciimg = ?", (store.relpath(key).as_posix(),))
    if not rows or not rows[0][0]:
        return None
    ingested = _dt.datetime.fromisoformat(rows[0][0]).timestamp()  # to the microsecond
    return True if ingested >= _mtime(store.path(key)) else None


def _run_archive(key, store, config, db=None):
    from ..archive import ingest_candidates, ingest_quadrant

    start = time.perf_counter()
    result = dict(ingest_quadrant(db, store, key))
    if store.exists(key.with_suffix("candidates")):
        result.update(ingest_candidates(db, store, key))
    return ProductStatus("archive", key.filename, ok=True, message=", ".join(f"{k} {v}" for k, v in result.items()),
                         elapsed=time.perf_counter() - start)


#: The default stages after calibration, in order.
STAGES: tuple[Stage, ...] = (
    Stage("astrom", _run_astrom, _astrom_done),
    Stage("photom", _run_photom, _photom_done),
    Stage("subtract", _run_subtract, _subtract_done),
    Stage("alerts", _run_alerts, _alerts_done, needs_db=True),
    Stage("archive", _run_archive, _archive_done, needs_db=True),
)
#: The stages a worker runs without the database.
SCIENCE_STAGES = tuple(s.name for s in STAGES if not s.needs_db)
#: The stages run where the database is, in exposure time order.
ARCHIVE_STAGES = tuple(s.name for s in STAGES if s.needs_db)


@dataclasses.dataclass
class QuadrantResult:
    """What the pipeline did to one quadrant-exposure (or to a raw file that could not be calibrated).

    Attributes
    ----------
    quadrant : str
        `quadrant_name`.
    key : str
        The sciimg file name ('' for a raw file that failed).
    records : list of StageRecord
        The stages run (up-to-date stages are not run and not listed).
    uptodate : list of str
        Stages found up to date.
    stopped_at : str or None
        The stage that stopped the quadrant (failed or error), None when it went through.
    status : str
        'ok' when it went through, else the stopping stage's status.
    """

    quadrant: str
    key: str
    records: list[StageRecord] = dataclasses.field(default_factory=list)
    uptodate: list[str] = dataclasses.field(default_factory=list)
    stopped_at: str | None = None
    status: str = "ok"

    @property
    def cpu_s(self) -> float:
        """CPU time of the stages run [s]."""
        return float(sum(r.cpu_s for r in self.records))


def _calib_done(raw: ProductKey, raw_path: Path, store: ProductStore, config: Config) -> bool:
    want = config.calib.param_hash()
    t_raw = _mtime(raw_path)
    for qid in (1, 2, 3, 4):
        key = raw.quadrant(qid, "sciimg")
        times = [_mtime(store.path(key.with_suffix(s))) for s in ("sciimg", "mskimg", "varimg")]
        if not min(times) >= t_raw:
            return False
        h = _header(store, key)
        if h is None or h.get("CALHASH") != want:
            return False
    return True


def process_quadrant(key, store: ProductStore, config: Config | None = None, *, stages: Sequence[Stage] = STAGES,
                     only: Sequence[str] | None = None, force: Sequence[str] = (), db=None,
                     trace_memory: bool = False, result: QuadrantResult | None = None) -> QuadrantResult:
    """Run the stages after calibration on one calibrated quadrant-exposure.

    Parameters
    ----------
    key : `~ztfsds.products.ProductKey` or str
        Any product of the quadrant (its sciimg is used).
    store : `~ztfsds.products.ProductStore`
        The data root.
    config : `~ztfsds.config.Config`, optional
        Parameters of every stage.
    stages : sequence of Stage, optional
        The stages, in order (default `STAGES`).
    only : sequence of str, optional
        Run only these stages (the others are left alone: e.g. `SCIENCE_STAGES` in a worker without
        the database).
    force : sequence of str, optional
        Stages to run even when up to date ('all' for every stage).
    db : `~ztfsds.archive.db.Database`, optional
        The database (needed by the alerts and archive stages; opened from ``config`` when None).
    trace_memory : bool, optional
        See `measure`.
    result : QuadrantResult, optional
        Append to this result (used by `process_exposure`).

    Returns
    -------
    QuadrantResult
    """
    from ..products.quadrant import science_key

    config = config or Config()
    key = science_key(key)
    name = quadrant_name(key)
    result = result or QuadrantResult(name, key.filename)
    force_all = "all" in force
    opened = None
    try:
        for stage in stages:
            if only is not None and stage.name not in only:
                continue
            if stage.needs_db and db is None:
                db = opened = _open_db(store, config)
            if not (force_all or stage.name in force) and stage.done is not None:
                state = stage.done(key, store, config, db)
                if state is True:
                    result.uptodate.append(stage.name)
                    continue
                if state is False:
                    result.uptodate.append(stage.name)
                    result.stopped_at, result.status = stage.name, "failed"
                    return result
            if stage.needs_db:
                call = (lambda s=stage: s.run(key, store, config, db=db))
            else:
                call = (lambda s=stage: s.run(key, store, config))
            record, _ = measure(stage.name, name, call, trace_memory=trace_memory)
            result.records.append(record)
            if record.status in ("failed", "error"):
                result.stopped_at, result.status = stage.name, record.status
                return result
    finally:
        if opened is not None:
            opened.close()
    return result


def _open_db(store: ProductStore, config: Config):
    from ..archive import connect, migrate

    db = connect(config.archive.database_url or None, store=store)
    migrate(db)
    return db


def process_exposure(raw, root, config: Config | None = None, *, stages: Sequence[Stage] = STAGES,
                     only: Sequence[str] | None = None, force: Sequence[str] = (), qids: Sequence[int] = (1, 2, 3, 4),
                     db=None, trace_memory: bool = False) -> list[QuadrantResult]:
    """Calibrate one raw CCD file and run the pipeline on each of its quadrants.

    This is the function the executors map over raw files (it takes the data root as a path, so it can
    be sent to a process pool or a Dask worker).

    Parameters
    ----------
    raw : `~ztfsds.products.ProductKey`, str or path-like
        The raw science file (a key or name under ``root``, or a path).
    root : path-like or `~ztfsds.products.ProductStore`
        The data root.
    config : `~ztfsds.config.Config`, optional
    stages, only, force, db, trace_memory
        As in `process_quadrant`; ``force`` may name 'calib'.
    qids : sequence of int, optional
        Quadrants to run the later stages on.

    Returns
    -------
    list of QuadrantResult
        One per quadrant; a single result named after the raw file when it could not be calibrated.
    """
    from ..calib import run_calib

    config = config or Config()
    store = root if isinstance(root, ProductStore) else ProductStore(root)
    if isinstance(raw, ProductKey):
        raw_key, raw_path = raw, store.path(raw)
    else:
        raw_path = Path(raw)
        raw_key = ProductKey.parse(raw_path.name)
        if not raw_path.is_file():
            raw_path = store.path(raw_key)
    results = {qid: QuadrantResult(quadrant_name(raw_key.quadrant(qid)), raw_key.quadrant(qid).filename)
               for qid in (1, 2, 3, 4)}
    run_cal = only is None or "calib" in only
    if run_cal and ("calib" in force or "all" in force or not _calib_done(raw_key, raw_path, store, config)):
        holder: dict = {}

        def call():
            statuses = run_calib(raw_path, store, config)
            holder["statuses"] = statuses
            bad = [s for s in statuses if not s.ok]
            return ProductStatus("calib", raw_key.filename, ok=not bad or len(statuses) > 1,
                                 message=bad[0].message if bad else f"{len(statuses)} quadrants")

        record, status = measure("calib", quadrant_name(raw_key), call, trace_memory=trace_memory)
        statuses = holder.get("statuses", [])
        if record.status != "ok" or len(statuses) < 2:
            # the whole file is unusable (or the calibration crashed): one result named after the raw file
            return [QuadrantResult(quadrant_name(raw_key), "", [record], stopped_at="calib", status=record.status)]
        # split the file-level measurement over its quadrants
        for s in statuses:
            qid = ProductKey.parse(s.key).qid
            res = results[qid]
            share = 1.0 / len(statuses)
            res.records.append(dataclasses.replace(
                record, quadrant=res.quadrant, status="ok" if s.ok else "failed", message=s.message,
                infobits=int(s.infobits), elapsed_s=record.elapsed_s * share, cpu_s=record.cpu_s * share,
                outputs=[os.fspath(p) for p in s.outputs]))
            if not s.ok:
                res.stopped_at, res.status = "calib", "failed"
    elif run_cal:
        for res in results.values():
            res.uptodate.append("calib")
    out = []
    for qid in qids:
        res = results[qid]
        if res.stopped_at is None:
            process_quadrant(raw_key.quadrant(qid), store, config, stages=stages, only=only, force=force, db=db,
                             trace_memory=trace_memory, result=res)
        out.append(res)
    return out


def record_results(db, results: Sequence[QuadrantResult]) -> int:
    """Write the stage records of pipeline results to the jobs table (one row per quadrant, stage, attempt).

    The attempt number continues from the rows already there; the CPU time goes to the ``cpu_s`` column.

    Returns
    -------
    int
        Rows written.
    """
    from ..archive import record_job

    n = 0
    for res in results:
        for rec in res.records:
            last = db.query("SELECT attempt, status FROM jobs WHERE quadrant = ? AND stage = ? "
                            "ORDER BY attempt DESC LIMIT 1", (rec.quadrant, rec.stage))
            attempt = 1 + int(last[0][0]) if last else 1
            if last and rec.status == "skipped" and last[0][1] == "skipped":
                attempt -= 1  # still nothing to do: refresh that row rather than add one
            record_job(db, rec.quadrant, rec.stage, rec.status, message=rec.message, elapsed_s=rec.elapsed_s,
                       peak_mem_mb=rec.peak_mem_mb, started=rec.started or None, finished=rec.finished or None,
                       attempt=attempt, cpu_s=rec.cpu_s)
            n += 1
    return n
