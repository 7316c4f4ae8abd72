"""Operator tasks: retries, reprocessing, disk clean-up, and the scheduled reference and matchfile updates.

Schedule rules (what `run_night` calls, and when):

- `update_references` after every night: a reference is built for each field / CCD / quadrant / filter
  that has none yet and at least ``[refimg] min_epochs`` good epochs (astrometric and photometric
  calibration, INFOBITS allowed by `ztfsds.refimg`); it is ingested into ``refimages``. Existing references
  are never replaced automatically (their products' alerts refer to them): ``rebuild=True`` does it.
- `update_matchfiles` when due: the first time, then every ``interval_days`` (7: weekly, as IPAC's
  matchfiles were refreshed in batches), or when a reference was built since the last update. The time of
  the last update is kept in ``<root>/ops/state.json``.

Disk policy (`cleanup`): below ``[ops] min_free_gb`` of free space on the data root's file system,
products are deleted in this order until enough is free, oldest nights first, never the newest
``keep_nights`` nights:

1. stale temporary files (writers that were killed, older than one hour);
2. intermediates that can be remade from the raw file: ``varimg``, ``sciimgdaopsfcent``, ``diffimgvar``,
   ``diffimgmsk``, ``scorr``;
3. difference-image products: ``scimrefdiffimg``, ``diffimgpsf`` (the candidates and alerts stay).

Raw files, calibration products, references, sciimg/mskimg, catalogs, candidates products and alert tars
are never deleted; and nothing of a quadrant that is not archived: its ``quadimages`` row was ingested
after the sciimg was last written, its candidates are all in ``candidates`` and, when it has
candidates, its alerts are in ``alert_packets``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

from ..config import Config
from ..errors import ZTFSDSError
from ..products import ProductKey, ProductStatus, ProductStore

__all__ = [
    "update_references",
    "update_matchfiles",
    "retry_failures",
    "reprocess",
    "DiskUsage",
    "disk_usage",
    "CleanupResult",
    "cleanup",
    "is_archived",
    "INTERMEDIATE_SUFFIXES",
    "DIFFERENCE_SUFFIXES",
]

log = logging.getLogger(__name__)

#: Tier 2 of the clean-up: products remade from the raw file by re-running the pipeline.
INTERMEDIATE_SUFFIXES = ("varimg", "sciimgdaopsfcent", "diffimgvar", "diffimgmsk", "scorr")
#: Tier 3: difference images (the candidates product keeps cutouts and all measurements).
DIFFERENCE_SUFFIXES = ("scimrefdiffimg", "diffimgpsf")


def _store(root) -> ProductStore:
    return root if isinstance(root, ProductStore) else ProductStore(root)


def _db(store, config, db):
    from ..archive import connect, migrate

    if db is not None:
        return db, False
    db = connect(config.archive.database_url or None, store=store)
    migrate(db)
    return db, True


# -- references and matchfiles ----------------------------------------------------------------------
def update_references(root, config: Config | None = None, *, db=None, rebuild: bool = False,
                      fields: Sequence[int] | None = None) -> list[ProductStatus]:
    """Build the references that are due (see the module notes) and ingest them.

    Parameters
    ----------
    root : path-like or `~ztfsds.products.ProductStore`
        The data root.
    config : `~ztfsds.config.Config`, optional
        ``refimg.min_epochs`` decides when a quadrant has enough epochs.
    db : `~ztfsds.archive.db.Database`, optional
        Where references are ingested (opened from ``config`` when None).
    rebuild : bool, optional
        Rebuild existing references too.
    fields : sequence of int, optional
        Only these fields.

    Returns
    -------
    list of `~ztfsds.products.ProductStatus`
        One per reference attempted (quadrants with too few epochs are not attempted).
    """
    from ..archive import ingest_reference
    from ..refimg import build_reference
    from ..refimg.runner import epoch_table

    config = config or Config()
    store = _store(root)
    quads = sorted({(k.field, k.ccdid, k.qid, k.filtercode) for k in store.keys("sci", suffix="sciimg")
                    if fields is None or k.field in fields})
    out = []
    db, close = _db(store, config, db)
    try:
        for field, ccd, qid, fc in quads:
            ref = ProductKey("ref", fc, ccd, qid, field, None, None, "o", "refimg", ".fits")
            if store.exists(ref) and not rebuild:
                continue
            table = epoch_table(store, field, ccd, qid, fc)
            if int(sum(table["ok"])) < config.refimg.min_epochs:
                continue
            status = build_reference(store, field, ccd, qid, fc, config)
            if status.ok:
                ingest_reference(db, store, ref)
            log.info("%s", status)
            out.append(status)
    finally:
        if close:
            db.close()
    if out:
        state = _state(store)
        state["references_built_at"] = time.time()
        _save_state(store, state)
    return out


def _state(store):
    from .night import _read_state

    return _read_state(store)


def _save_state(store, state):
    from .night import _write_state

    _write_state(store, state)


def update_matchfiles(root, config: Config | None = None, *, interval_days: float = 7.0, force: bool = False,
                      scheduler=None, now: float | None = None) -> list[ProductStatus]:
    """Run `ztfsds.match.run_match_all` when it is due (see the module notes).

    Parameters
    ----------
    root : path-like or `~ztfsds.products.ProductStore`
    config : `~ztfsds.config.Config`, optional
    interval_days : float, optional
        Days between updates [day].
    force : bool, optional
        Run now.
    scheduler : optional
        Dask scheduler for `run_match_all`.
    now : float, optional
        The current time (UNIX seconds; tests).

    Returns
    -------
    list of `~ztfsds.products.ProductStatus`
        Empty when not due.
    """
    from ..match import run_match_all

    store = _store(root)
    state = _state(store)
    now = time.time() if now is None else now
    last = state.get("matchfiles_updated_at")
    due = (force or last is None or now - last >= interval_days * 86400.0
           or state.get("references_built_at", 0) > last)
    if not due:
        return []
    statuses = run_match_all(store, config=config, scheduler=scheduler)
    state = _state(store)
    state["matchfiles_updated_at"] = now
    _save_state(store, state)
    return statuses


# -- retries and reprocessing -----------------------------------------------------------------------
def _night_quadrants(db, night: str) -> dict:
    """{quadrant name: (last stage status by stage)} for a night's quadrants in the jobs table."""
    out: dict = {}
    prefix = f"ztf_{night}%"
    for q, stage, status, _ in db.query("SELECT quadrant, stage, status, attempt FROM jobs WHERE quadrant LIKE ? "
                                        "ORDER BY quadrant, stage, attempt", (prefix,)):
        out.setdefault(q, {})[stage] = status
    return out


def _raw_of(store: ProductStore, quadrant: str) -> Path | None:
    """The raw file of a jobs-table quadrant name (``ztf_..._c13_o_q3`` or ``ztf_..._c13_o``)."""
    base = quadrant.rsplit("_q", 1)[0] if quadrant[-3:-1] == "_q" else quadrant
    for ext in (".fits", ".fits.fz"):
        try:
            key = ProductKey.parse(base + ext)
        except ZTFSDSError:
            return None
        if store.exists(key):
            return store.path(key)
    return None


def retry_failures(root, night: str, *, config: Config | None = None, stages: Sequence[str] | None = None,
                   executor: str = "serial", workers: int = 2, scheduler=None, progress=None,
                   qids=(1, 2, 3, 4)):
    """Run again the quadrants of a night whose last attempt of some stage failed or erred.

    The failed stage and those after it are forced; the stages before it are skipped when up to date.

    Parameters
    ----------
    root : path-like or `~ztfsds.products.ProductStore`
    night : str
        YYYYMMDD.
    config : `~ztfsds.config.Config`, optional
    stages : sequence of str, optional
        Only failures of these stages (e.g. ``['archive', 'alerts']`` for archive failures).
    executor, workers, scheduler, progress
        As in `ztfsds.ops.run_night`.
    qids : sequence of int, optional
        Quadrants processed when a whole raw file failed (calibration, a worker that died).

    Returns
    -------
    NightSummary
    """
    from .night import NightSummary, process_raw_files
    from .pipeline import STAGES

    config = config or Config()
    store = _store(root)
    db, _ = _db(store, config, None)
    summary = NightSummary(store.root, nights=[night], database=db.url)
    t0 = time.perf_counter()
    try:
        order = ["worker", "calib"] + [s.name for s in STAGES]
        groups: dict = {}
        for q, last in _night_quadrants(db, night).items():
            bad = [s for s, st in last.items() if st in ("failed", "error") and (stages is None or s in stages)
                   and last.get(s) != "ok"]
            if not bad:
                continue
            first = min(bad, key=lambda s: order.index(s) if s in order else len(order))
            raw = _raw_of(store, q)
            if raw is None:
                continue
            force = tuple(order[max(order.index(first), 1):]) if first in order else ("all",)
            qid = int(q[-1]) if q[-3:-1] == "_q" else None
            entry = groups.setdefault((raw, force), set())
            entry.update([qid] if qid else list(qids))
        for (raw, force), qids in sorted(groups.items(), key=lambda kv: str(kv[0][0])):
            process_raw_files([raw], store, config, db, summary, executor=executor, workers=workers,
                              scheduler=scheduler, force=tuple(f for f in force if f != "worker"),
                              retry_failed=True, qids=sorted(qids), progress=progress)
    finally:
        db.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


def reprocess(root, *, night: str | None = None, field: int | None = None, ccd: int | None = None,
              qid: int | None = None, config: Config | None = None, force: Sequence[str] = ("all",),
              executor: str = "serial", workers: int = 2, scheduler=None, progress=None):
    """Reprocess selected quadrant-exposures (by night / field / CCD / quadrant) and summarise.

    Parameters
    ----------
    root : path-like or `~ztfsds.products.ProductStore`
    night : str, optional
        YYYYMMDD.
    field, ccd, qid : int, optional
        Selection (None: all).
    config : `~ztfsds.config.Config`, optional
    force : sequence of str, optional
        Stages to re-run even when up to date (default all; ``()`` only completes what is missing).
    executor, workers, scheduler, progress
        As in `ztfsds.ops.run_night`.

    Returns
    -------
    NightSummary
        Counts per stage and the failures of the reprocessed quadrants.
    """
    from .night import NightSummary, process_raw_files

    config = config or Config()
    store = _store(root)
    raws = [store.path(k) for k in store.keys("raw", night=night) if k.imgtype == "o"
            and (field is None or k.field == field) and (ccd is None or k.ccdid == ccd)]
    if not raws:
        raise ZTFSDSError(f"{store.root}: no raw science files match night={night} field={field} ccd={ccd}")
    db, _ = _db(store, config, None)
    summary = NightSummary(store.root, database=db.url)
    summary.nights = sorted({ProductKey.parse(p.name).night for p in raws})
    t0 = time.perf_counter()
    try:
        for n in summary.nights:
            mine = [p for p in raws if ProductKey.parse(p.name).night == n]
            process_raw_files(mine, store, config, db, summary, executor=executor, workers=workers,
                              scheduler=scheduler, force=tuple(force), retry_failed=True,
                              qids=(qid,) if qid else (1, 2, 3, 4), progress=progress)
    finally:
        db.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


# -- disk -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DiskUsage:
    """Space on the data root's file system and under the root.

    Attributes
    ----------
    total_gb, free_gb : float
        File-system size and free space [GB].
    by_area : dict
        Bytes under each top-level directory of the root (raw, cal, sci, ref, alerts, match, ...).
    """

    total_gb: float
    free_gb: float
    by_area: dict


def disk_usage(root) -> DiskUsage:
    """Measure the data root's disk use (`DiskUsage`)."""
    store = _store(root)
    usage = shutil.disk_usage(store.root)
    areas = {}
    for sub in sorted(store.root.iterdir()) if store.root.is_dir() else []:
        if sub.is_dir():
            areas[sub.name] = sum(p.stat().st_size for p in sub.rglob("*") if p.is_file())
        elif sub.is_file():
            areas[sub.name] = sub.stat().st_size
    return DiskUsage(usage.total / 1e9, usage.free / 1e9, areas)


@dataclasses.dataclass
class CleanupResult:
    """What `cleanup` did.

    Attributes
    ----------
    free_gb_before, free_gb_after : float
        Free space [GB].
    removed : list of pathlib.Path
        Files deleted (or that would be, with ``dry_run``).
    freed_bytes : int
    kept_unarchived : list of str
        Quadrants whose products were eligible by age but kept because they are not archived.
    """

    free_gb_before: float
    free_gb_after: float
    removed: list = dataclasses.field(default_factory=list)
    freed_bytes: int = 0
    kept_unarchived: list = dataclasses.field(default_factory=list)


def is_archived(db, store: ProductStore, key: ProductKey) -> bool:
    """Whether a quadrant-exposure is fully in the archive (see the module notes)."""
    from ..products.quadrant import science_key

    key = science_key(key)
    rows = db.query("SELECT pid, ingested_at, ncands FROM quadimages WHERE sciimg = ?", (store.relpath(key).as_posix(),))
    if not rows or not rows[0][1]:
        return False
    pid, ingested, _ = rows[0]
    sci = store.path(key)
    # changed since its ingestion (the times to the microsecond: a quadrant touched within the second of
    # its ingestion is not archived)
    if sci.exists() and _dt.datetime.fromisoformat(ingested).timestamp() < sci.stat().st_mtime:
        return False
    cands = store.path(key.with_suffix("candidates"))
    if cands.exists():
        from astropy.io import fits

        with fits.open(cands) as hdul:
            n = len(hdul["CANDIDATES"].data) if "CANDIDATES" in hdul else 0
        stored = db.query("SELECT COUNT(*) FROM candidates WHERE pid = ?", (pid,))[0][0]
        if stored < n:
            return False
        if n:
            alerts = db.query("SELECT COUNT(*) FROM alert_packets a JOIN candidates c ON a.candid = c.candid "
                              "WHERE c.pid = ?", (pid,))[0][0]
            if alerts == 0:
                return False
    return True


def cleanup(root, *, config: Config | None = None, min_free_gb: float | None = None, keep_nights: int = 1,
            dry_run: bool = False, db=None, free_gb=None) -> CleanupResult:
    """Free disk space under the data root by the policy of the module notes.

    Parameters
    ----------
    root : path-like or `~ztfsds.products.ProductStore`
    config : `~ztfsds.config.Config`, optional
        ``ops.min_free_gb`` is the default threshold.
    min_free_gb : float, optional
        Delete until this much is free [GB] (nothing is deleted when it already is).
    keep_nights : int, optional
        The newest nights never cleaned.
    dry_run : bool, optional
        List what would be deleted without deleting.
    db : `~ztfsds.archive.db.Database`, optional
    free_gb : callable, optional
        ``free_gb() -> float`` (tests); default the file system's free space.

    Returns
    -------
    CleanupResult
    """
    config = config or Config()
    store = _store(root)
    threshold = config.ops.min_free_gb if min_free_gb is None else min_free_gb
    measure = free_gb or (lambda: shutil.disk_usage(store.root).free / 1e9)
    before = measure()
    result = CleanupResult(before, before)
    if before >= threshold:
        return result
    freed = [0]

    def enough():
        return (before + freed[0] / 1e9 if dry_run else measure()) >= threshold

    def remove(path: Path):
        size = path.stat().st_size
        result.removed.append(path)
        result.freed_bytes += size
        freed[0] += size
        if not dry_run:
            path.unlink()

    for path in store.remove_stale_temporaries(3600.0) if not dry_run else []:
        result.removed.append(path)
    db, close = _db(store, config, db)
    try:
        nights = sorted({k.night for k in store.keys("sci", suffix="sciimg")})
        old = nights[:-keep_nights] if keep_nights > 0 else nights
        archived: dict = {}
        for tier in (INTERMEDIATE_SUFFIXES, DIFFERENCE_SUFFIXES):
            for night in old:
                for key in store.keys("sci", night=night, suffix="sciimg"):
                    if enough():
                        break
                    files = [store.path(key.with_suffix(s)) for s in tier if store.exists(key.with_suffix(s))]
                    if not files:
                        continue
                    if key.filename not in archived:
                        archived[key.filename] = is_archived(db, store, key)
                        if not archived[key.filename]:
                            result.kept_unarchived.append(key.filename)
                    if archived[key.filename]:
                        for f in files:
                            remove(f)
    finally:
        if close:
            db.close()
    result.free_gb_after = measure() if not dry_run else before + result.freed_bytes / 1e9
    log.info("cleanup of %s: %d files, %.3f GB (free %.2f -> %.2f GB)", store.root, len(result.removed),
             result.freed_bytes / 1e9, before, result.free_gb_after)
    return result
