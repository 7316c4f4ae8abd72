"""The night runner: a night's raw files -> calibration library -> quadrant products -> alerts -> archive.

`run_night` is what ``ztfsds run-night`` calls. For each night, in date order:

1. raw files under ``raw_dir`` (when given) are linked into the data root's ``raw/`` layout;
2. the calibration library of the night is built from its bias and flat exposures (`build_library`) unless
   it exists; the calibrator catalogs of new fields are built (from the simulator's exports when the
   data root has them, else online);
3. the science exposures are processed by the executor (`run_exposures`): calibration, astrometry,
   photometry and subtraction in parallel, one task per raw CCD file;
4. the alerts and archive stages run in this process, quadrant by quadrant in exposure time order (so
   object ids and alert histories never depend on the executor or on the order workers finish);
5. the scheduled tasks that are due (`update_references`, `update_matchfiles`) and the nightly report
   (`ztfsds.ops.report.write_report`, when installed).

With neither ``raw_dir`` nor raw files under the root, `run_night` is the demo: it simulates a small
night with history (`simulate_demo`) and runs it end to end: the history nights through photometry,
then the references, then tonight's exposures with fake point sources injected after photometry
(`ztfsds.ops.inject`; the demo's small sky has too few simulated supernovae to count), so that the
summary and the report say how many of the injected transients the night recovered. Everything is
resumable: running a night again skips what is up to date (`ztfsds.ops.pipeline`) and finishes what is
not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from ..config import Config
from ..errors import ZTFSDSError
from ..products import ProductKey, ProductStore
from .executors import run_exposures
from .pipeline import SCIENCE_STAGES, STAGES, QuadrantResult, Stage, process_quadrant, record_results

__all__ = ["NightSummary", "run_night", "process_raw_files", "simulate_demo", "DEMO", "DEFAULT_ROOT"]

log = logging.getLogger(__name__)

#: Data root of the demo when none is given.
DEFAULT_ROOT = "ztfsds-data"

#: The demo night: fields, CCDs, quadrant size [px], history nights, exposures tonight, seed, the
#: reference's minimum number of epochs and worst seeing [arcsec] (relaxed from the defaults to fit the few
#: history nights), and the fakes injected per quadrant tonight (`ztfsds.ops.inject`).
DEMO = {"fields": (655,), "ccds": (13,), "size": 256, "history_nights": 8, "nexp": 2, "seed": 6,
        "min_epochs": 5, "max_seeing": 3.5, "fakes": 10, "filters": ("zr",), "night": "2020-09-24",
        "density_scale": 2.0}

_STATE = "ops/state.json"


@dataclasses.dataclass
class NightSummary:
    """What a night run did and where its products are.

    Attributes
    ----------
    root : pathlib.Path
        The data root.
    nights : list of str
        Nights processed (YYYYMMDD), history nights included.
    raw_files : int
        Raw science files considered.
    quadrants : int
        Quadrant-exposures considered.
    stages : dict
        ``{stage: Counter(status -> n)}``; status 'uptodate' counts stages skipped as already done.
    failures : list of tuple
        ``(quadrant, stage, status, message)`` of every quadrant that stopped ('failed' or 'error').
    references : list of str
        References built by this run.
    alerts_dir : pathlib.Path
        Alert tar files of the last night.
    alerts : int
        Alert packets of the last night in the archive.
    lightcurves : pathlib.Path or None
        The HATS lightcurve catalog (when matching ran).
    report : pathlib.Path or None
        The nightly report (when written).
    database : str
        The database URL.
    injected, recovered : int or None
        Transients of the last night (simulated ones and injected fakes, when the data root has their
        truth) brighter than a difference image's limit, and those with a candidate within 1.5 arcsec
        (`ztfsds.ops.report.transient_recovery`, the numbers the report shows).
    recovery : astropy.table.Table or None
        One row per such transient (`ztfsds.ops.report.transient_recovery`).
    wall_s, cpu_s : float
        Wall time of the run, and CPU time of the stages run (all workers) [s].
    quadrant_images : int
        Quadrant-exposures whose stages ran (for per-image costs).
    """

    root: Path
    nights: list[str] = dataclasses.field(default_factory=list)
    raw_files: int = 0
    quadrants: int = 0
    stages: dict = dataclasses.field(default_factory=dict)
    failures: list = dataclasses.field(default_factory=list)
    references: list = dataclasses.field(default_factory=list)
    alerts_dir: Path | None = None
    alerts: int = 0
    lightcurves: Path | None = None
    report: Path | None = None
    database: str = ""
    injected: int | None = None
    recovered: int | None = None
    recovery: object = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    quadrant_images: int = 0

    @property
    def ok(self) -> bool:
        """True when no quadrant failed."""
        return not self.failures

    def add(self, results: Sequence[QuadrantResult]) -> None:
        """Count pipeline results into the summary."""
        for res in results:
            for rec in res.records:
                self.stages.setdefault(rec.stage, Counter())[rec.status] += 1
                self.cpu_s += rec.cpu_s
            for name in res.uptodate:
                self.stages.setdefault(name, Counter())["uptodate"] += 1
            if res.records:
                self.quadrant_images += 1
            if res.status in ("failed", "error"):
                rec = next((r for r in res.records if r.stage == res.stopped_at), None)
                self.failures.append((res.quadrant, res.stopped_at, res.status, rec.message if rec else
                                      "up to date: failed earlier (see the jobs table)"))

    def lines(self) -> list[str]:
        """The summary as text lines (what the CLI prints)."""
        out = [f"data root: {self.root}", f"nights: {', '.join(self.nights) or '-'}; {self.raw_files} raw files, "
               f"{self.quadrants} quadrant-exposures; wall {self.wall_s:.1f} s, stage CPU {self.cpu_s:.1f} s"]
        order = ["calib"] + [s for s in self.stages if s != "calib"]
        for stage in order:
            if stage in self.stages:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(self.stages[stage].items()))
                out.append(f"  {stage:9s} {counts}")
        if self.references:
            out.append(f"references built: {len(self.references)}")
        out.append(f"failures: {len(self.failures)}")
        for q, stage, status, message in self.failures[:20]:
            out.append(f"  {q} [{stage}] {status}: {message}")
        if self.injected is not None:
            out.append(f"transients: {self.recovered} of {self.injected} injected recovered")
        out.append(f"alerts: {self.alerts} in {self.alerts_dir}")
        out.append(f"lightcurves: {self.lightcurves or '-'}")
        out.append(f"report: {self.report or '-'}")
        out.append(f"database: {self.database}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


# -- state of the data root ----------------------------------------------------------------------------
def _read_state(store: ProductStore) -> dict:
    path = store.root / _STATE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(store: ProductStore, state: dict) -> None:
    from ..products import atomic_write

    path = store.root / _STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(state, indent=1, sort_keys=True))


# -- demo ---------------------------------------------------------------------------------------------
def simulate_demo(root, *, fields=None, ccds=None, size=None, history_nights=None, nexp=None, seed=None,
                  density_scale=None, min_epochs=None, fakes=None, progress: Callable[[int, int, str], None] | None = None):
    """Simulate the demo night under ``root`` (once: a root that has it is left alone).

    Parameters
    ----------
    root : path-like
        The data root.
    fields, ccds, size, history_nights, nexp, seed, density_scale, min_epochs, fakes : optional
        Override `DEMO`'s values.
    progress : callable, optional
        ``progress(done, total, name)`` per raw file.

    Returns
    -------
    dict
        The demo parameters used (also in ``<root>/ops/state.json``).
    """
    import datetime as dt

    from ..sim import simulate_night

    store = ProductStore(root)
    state = _read_state(store)
    if "demo" in state:
        return state["demo"]
    demo = dict(DEMO)
    for name, value in (("fields", fields), ("ccds", ccds), ("size", size), ("history_nights", history_nights),
                        ("nexp", nexp), ("seed", seed), ("density_scale", density_scale),
                        ("min_epochs", min_epochs), ("fakes", fakes)):
        if value is not None:
            demo[name] = value
    demo["fields"], demo["ccds"] = list(demo["fields"]), list(demo["ccds"])
    demo["filters"] = list(demo["filters"])
    simulate_night(store.root, fields=demo["fields"], ccds=demo["ccds"], nexp=demo["nexp"], filters=demo["filters"],
                   size=demo["size"], seed=demo["seed"], night=dt.date.fromisoformat(demo["night"]),
                   history_nights=demo["history_nights"], nbias=3, nflat=3, progress=progress,
                   density_scale=demo["density_scale"])
    state["demo"] = demo
    _write_state(store, state)
    return demo


# -- the night ----------------------------------------------------------------------------------------
def _link_raw(raw_dir: Path, store: ProductStore) -> list[Path]:
    """Hard-link (or copy) the raw files of ``raw_dir`` into the data root's layout; returns their paths."""
    import shutil

    from ..errors import ProductNameError

    out = []
    for path in sorted(raw_dir.rglob("ztf_*.fits*")):
        try:
            key = ProductKey.parse(path.name)
        except ProductNameError:
            continue
        if key.kind != "raw":
            continue
        dest = store.path(key)
        if dest.resolve() != path.resolve() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
        out.append(dest)
    return out


def _science_raws(store: ProductStore, night: str | None = None) -> list[Path]:
    return [store.path(k) for k in store.keys("raw", night=night) if k.imgtype == "o"]


def _ensure_library(store: ProductStore, night: str, config: Config) -> None:
    from ..calib import build_library

    calibration = [k for k in store.keys("raw", night=night) if k.imgtype in ("b", "f")]
    if not calibration or any(True for _ in store.keys("cal", night=night)):
        return
    log.info("building the calibration library of %s from %d raw files", night, len(calibration))
    build_library(store, night, params=config.calib)


def _ensure_catalogs(store: ProductStore, raws: Sequence[Path]) -> None:
    from ..catalogs import build_catalogs

    state = _read_state(store)
    built = set(map(tuple, state.get("catalogs", [])))
    want = sorted({(ProductKey.parse(p.name).field, ProductKey.parse(p.name).ccdid) for p in raws} - built)
    if not want:
        return
    provider = "sim" if (store.root / "sim" / "catalogs").is_dir() else "online"
    for field in sorted({f for f, _ in want}):
        ccds = [c for f, c in want if f == field]
        try:
            build_catalogs(store, [field], ccds=ccds, provider=provider)
        except ZTFSDSError as exc:
            log.error("calibrator catalogs of field %d: %s (its quadrants will fail astrometry)", field, exc)
            continue
        built.update((field, c) for c in ccds)
    state = _read_state(store)
    state["catalogs"] = sorted(map(list, built))
    _write_state(store, state)


def _last_status(db, names: Sequence[str]) -> dict:
    """{(quadrant, stage): status} of the last attempt of each stage of the given quadrants."""
    out = {}
    for name in names:
        for stage, status, _ in db.query("SELECT stage, status, attempt FROM jobs WHERE quadrant = ? "
                                         "ORDER BY attempt", (name,)):
            out[name, stage] = status
    return out


def _failed_earlier(db, raw: Path) -> bool:
    """A raw file whose calibration failed on its data (not retried by a night re-run)."""
    from .pipeline import quadrant_name

    rows = db.query("SELECT status FROM jobs WHERE quadrant = ? AND stage = 'calib' ORDER BY attempt DESC LIMIT 1",
                    (quadrant_name(ProductKey.parse(raw.name)),))
    return bool(rows) and rows[0][0] == "failed"


def process_raw_files(raws: Sequence[Path], store: ProductStore, config: Config, db, summary: NightSummary, *,
                      executor: str = "serial", workers: int = 2, scheduler=None, stages: Sequence[Stage] = STAGES,
                      science_only: bool = False, force: Sequence[str] = (), retry_failed: bool = False,
                      qids: Sequence[int] = (1, 2, 3, 4), progress=None, stop=None,
                      trace_memory: bool = False) -> list[QuadrantResult]:
    """Process raw science files: the science stages on the executor, then alerts and archive in time order.

    Parameters
    ----------
    raws : sequence of pathlib.Path
        Raw science files under the data root.
    store : `~ztfsds.products.ProductStore`
    config : `~ztfsds.config.Config`
    db : `~ztfsds.archive.db.Database`
        The database (jobs, ingestion).
    summary : NightSummary
        Counts are added to it.
    executor, workers, scheduler
        See `ztfsds.ops.executors.run_exposures`.
    stages : sequence of Stage, optional
        The pipeline (`ztfsds.ops.pipeline.STAGES`).
    science_only : bool, optional
        History epochs: calibration, astrometry, photometry and the archive only (no subtraction, no
        alerts).
    force : sequence of str, optional
        Stages to run even when up to date.
    retry_failed : bool, optional
        Also run raw files whose calibration failed earlier.
    qids : sequence of int, optional
        Quadrants to process.
    progress, stop, trace_memory
        See `run_exposures` and `ztfsds.ops.pipeline.measure`.

    Returns
    -------
    list of QuadrantResult
    """
    names = [s.name for s in stages]
    science = [n for n in names if n in SCIENCE_STAGES or not _stage(stages, n).needs_db]
    if science_only:
        science = [n for n in science if n not in ("subtract",)]
    todo = [p for p in raws if retry_failed or "calib" in force or not _failed_earlier(db, p)]
    results = run_exposures(todo, store.root, config, executor=executor, workers=workers, scheduler=scheduler,
                            progress=progress, stop=stop, stages=tuple(stages), only=("calib", *science),
                            force=tuple(force), qids=tuple(qids), trace_memory=trace_memory)
    # alerts and archive: here, in exposure time order
    archive = [n for n in names if _stage(stages, n).needs_db]
    if science_only:
        archive = [n for n in archive if n == "archive"]
    by_name = {r.quadrant: r for r in results}
    ready = sorted((r for r in results if r.key and r.status in ("ok",)), key=lambda r: (r.key, r.quadrant))
    if stop is None or not stop():
        for res in ready:
            process_quadrant(res.key, store, config, stages=stages, only=archive, force=force, db=db,
                             trace_memory=trace_memory, result=by_name[res.quadrant])
    record_results(db, results)
    summary.raw_files += len(raws)
    summary.quadrants += sum(1 for r in results if r.key)
    summary.add(results)
    return results


def _stage(stages, name):
    return next(s for s in stages if s.name == name)


def run_night(root=None, *, raw_dir=None, night: str | None = None, config: Config | None = None,
              executor: str | None = None, workers: int | None = None, scheduler=None, watch: bool = False,
              progress: Callable[[str, int, int, str], None] | None = None, stages: Sequence[Stage] = STAGES,
              force: Sequence[str] = (), report: bool = True, match: bool | None = None,
              trace_memory: bool = False, poll_interval: float = 5.0, max_idle: float | None = None,
              qids: Sequence[int] = (1, 2, 3, 4)) -> NightSummary:
    """Run a night end to end (the demo when there is nothing to process).

    Parameters
    ----------
    root : path-like, optional
        The data root (default ``./ztfsds-data``).
    raw_dir : path-like, optional
        Directory of raw files (science, bias and flat CCD files with ZTF names, any layout below it); they
        are linked into ``root``. Without it, the raw files already under ``root`` are processed, and when
        there are none the demo night is simulated first (`simulate_demo`).
    night : str, optional
        Only this night (YYYYMMDD); default every night with raw science files, in date order.
    config : `~ztfsds.config.Config`, optional
        Parameters (the ``ops`` set gives the executor defaults, the retries and the disk policy).
    executor : {'serial', 'process', 'dask'}, optional
        Default ``config.ops.executor`` ('process'); 'dask' when a ``scheduler`` is given.
    workers : int, optional
        Local worker processes (default ``config.ops.workers``).
    scheduler : str or distributed.Client or LocalCluster, optional
        Dask scheduler (default ``config.ops.scheduler``).
    watch : bool, optional
        Run as the VPO daemon on ``raw_dir`` (`ztfsds.ops.watch.watch`) until SIGTERM (or ``max_idle``).
    progress : callable, optional
        ``progress(phase, done, total, name)``: phase 'simulate', 'history', 'night', 'tasks'.
    stages : sequence of Stage, optional
        The per-quadrant pipeline (`ztfsds.ops.pipeline.STAGES`; custom stages may be inserted).
    force : sequence of str, optional
        Stages to re-run even when up to date ('all' for all).
    report : bool, optional
        Write the nightly report at the end (when `ztfsds.ops.report` is installed).
    match : bool, optional
        Update matchfiles and lightcurves at the end: True always, False never, None when due
        (`update_matchfiles`; always in the demo).
    trace_memory : bool, optional
        Per-stage peak memory from tracemalloc (see `ztfsds.ops.pipeline.measure`).
    poll_interval, max_idle : float, optional
        Watch mode: seconds between polls of ``raw_dir``; stop after this many idle seconds (None: never).
    qids : sequence of int, optional
        Quadrants processed after calibration (default all four).

    Returns
    -------
    NightSummary
    """
    from ..archive import connect, migrate
    from .tasks import update_matchfiles, update_references

    t0 = time.perf_counter()
    config = config or Config()
    store = ProductStore(root if root is not None else DEFAULT_ROOT)
    store.root.mkdir(parents=True, exist_ok=True)
    if scheduler is None and config.ops.scheduler:
        scheduler = config.ops.scheduler
    executor = executor or ("dask" if scheduler is not None else config.ops.executor)
    workers = workers or config.ops.workers
    if watch:
        from .watch import watch as _watch

        if raw_dir is None:
            raise ZTFSDSError("watch mode needs the raw directory to poll (raw_dir)")
        return _watch(raw_dir, store.root, config=config, executor=executor, workers=workers, scheduler=scheduler,
                      poll_interval=poll_interval, max_idle=max_idle, stages=stages, progress=progress, qids=qids)

    def phase(name):
        if progress is None:
            return None
        return lambda done, total, item: progress(name, done, total, item)

    demo = None
    if raw_dir is not None:
        _link_raw(Path(raw_dir), store)
    elif not _science_raws(store) or "demo" in _read_state(store):
        demo = simulate_demo(store.root, progress=phase("simulate"))
        config = dataclasses.replace(config, refimg=dataclasses.replace(
            config.refimg, min_epochs=min(config.refimg.min_epochs, demo["min_epochs"]),
            max_epochs=max(demo["min_epochs"], config.refimg.max_epochs),
            max_seeing=max(config.refimg.max_seeing, demo.get("max_seeing", 0.0))))

    db = connect(config.archive.database_url or None, store=store)
    migrate(db)
    summary = NightSummary(store.root, database=db.url)
    kw = dict(executor=executor, workers=workers, scheduler=scheduler, stages=stages, force=force,
              trace_memory=trace_memory, qids=tuple(qids))
    try:
        nights = sorted({k.night for k in store.keys("raw") if k.imgtype == "o"})
        if night is not None:
            nights = [n for n in nights if n == night]
            if not nights:
                raise ZTFSDSError(f"{store.root}: no raw science files of night {night}")
        if demo is not None:
            tonight = demo["night"].replace("-", "")
            history = [n for n in nights if n < tonight]
            for n in nights:
                _ensure_library(store, n, config)
            raws = [p for n in history for p in _science_raws(store, n)]
            _ensure_catalogs(store, raws + _science_raws(store, tonight))
            process_raw_files(raws, store, config, db, summary, science_only=True, progress=phase("history"), **kw)
            summary.references += [s.key for s in update_references(store, config, db=db) if s.ok]
            nights_run = [tonight]
            if demo.get("fakes") and not any(s.name == "inject" for s in stages):
                kw["stages"] = _with_fakes(stages, demo["fakes"], demo["seed"])
        else:
            nights_run = nights
            # every calibration library first: a night without calibration frames uses the nearest one
            for n in sorted({k.night for k in store.keys("raw") if k.imgtype in ("b", "f")}):
                _ensure_library(store, n, config)
        for n in nights_run:
            _ensure_library(store, n, config)
            raws = _science_raws(store, n)
            _ensure_catalogs(store, raws)
            process_raw_files(raws, store, config, db, summary, progress=phase("night"), **kw)
            if demo is None:
                summary.references += [s.key for s in update_references(store, config, db=db) if s.ok]
        summary.nights = nights
        last = nights_run[-1] if nights_run else None
        if last is not None:
            summary.alerts_dir = store.alerts_dir(last)
            summary.alerts = _count_alerts(db, last)
        if match or (match is None and demo is not None):
            statuses = update_matchfiles(store, config, force=True)
        elif match is None:
            statuses = update_matchfiles(store, config)
        else:
            statuses = []
        paths = [p for s in statuses for p in s.outputs if "lightcurves" in str(p)]
        lc = store.match_dir / "lightcurves"
        summary.lightcurves = Path(paths[0]) if paths else (lc if lc.exists() else None)
        if last is not None:
            _night_report(summary, store, last, db, write=report)
    finally:
        db.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


def _count_alerts(db, night: str) -> int:
    try:
        rows = db.query("SELECT COUNT(*) FROM alert_packets a JOIN candidates c ON a.candid = c.candid "
                        "JOIN quadimages q ON c.pid = q.pid JOIN exposures e ON q.expid = e.expid WHERE e.night = ?",
                        (night,))
    except ZTFSDSError:
        return 0
    return int(rows[0][0]) if rows else 0


def _with_fakes(stages: Sequence[Stage], n: int, seed: int) -> tuple[Stage, ...]:
    """The stages with fake injection (`ztfsds.ops.inject.inject_stage`) before the subtraction."""
    from .inject import inject_stage

    names = [s.name for s in stages]
    at = names.index("subtract") if "subtract" in names else len(names)
    return tuple(stages[:at]) + (inject_stage(n, seed=seed),) + tuple(stages[at:])


def _night_report(summary: NightSummary, store: ProductStore, night: str, db, *, write: bool) -> None:
    """Recovered vs injected transients from the report's numbers (`summarize_night`), and the report."""
    try:
        from .report import summarize_night, write_report
    except ImportError:
        log.info("no nightly report: ztfsds.ops.report is not installed")
        return
    try:
        night_summary = summarize_night(store, night, db=db)
        if night_summary.recovery is not None:
            summary.recovery = night_summary.recovery
            summary.injected, summary.recovered = night_summary.injected, night_summary.recovered
        if write:
            summary.report = write_report(store, night, db=db, summary=night_summary)
    except Exception as exc:  # noqa: BLE001 - the report must never fail the night
        log.error("nightly report of %s failed: %s", night, exc)
