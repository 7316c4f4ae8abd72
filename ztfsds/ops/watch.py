"""The Virtual Pipeline Operator (VPO): a daemon that processes raw files as they arrive.

`watch` polls a raw directory. Each poll it links the new, complete raw files (size unchanged since the
previous poll) into the data root; for a night whose calibration library does not exist yet it builds it
first (from the bias and flat exposures, taken at the start of the night, with the science files seen so
far); then it submits the new science files to the executor (a process pool, or Dask with a scheduler)
and runs the alerts and archive stages on what finished, in time order.

SIGTERM (and SIGINT) stop it cleanly: no new file is started, the files in flight are finished and
recorded, and the function returns its `~ztfsds.ops.night.NightSummary`. Anything abandoned (a worker
killed with the daemon) left only temporary files (atomic writes): the next run picks it up.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from ..config import Config
from ..products import ProductKey, ProductStore
from .night import NightSummary, _ensure_catalogs, _ensure_library, _link_raw, process_raw_files
from .pipeline import STAGES
from .tasks import update_references

__all__ = ["watch"]

log = logging.getLogger(__name__)


def watch(raw_dir, root, *, config: Config | None = None, executor: str = "process", workers: int = 2,
          scheduler=None, poll_interval: float = 5.0, max_idle: float | None = None, stages=STAGES,
          progress=None, stop_event: threading.Event | None = None, qids=(1, 2, 3, 4)) -> NightSummary:
    """Process raw files as they arrive in ``raw_dir`` until SIGTERM, ``stop_event`` or ``max_idle``.

    Parameters
    ----------
    raw_dir : path-like
        Directory the raw files arrive in (any layout below it).
    root : path-like
        The data root.
    config : `~ztfsds.config.Config`, optional
    executor, workers, scheduler
        As in `ztfsds.ops.run_night`.
    poll_interval : float, optional
        Seconds between polls.
    max_idle : float, optional
        Stop after this many seconds without new files (None: run until stopped).
    stages : sequence of Stage, optional
        The pipeline.
    progress : callable, optional
        ``progress(phase, done, total, name)``.
    stop_event : threading.Event, optional
        Set it to stop (the signal handlers set it too, when installed from the main thread).
    qids : sequence of int, optional
        Quadrants processed after calibration.

    Returns
    -------
    NightSummary
    """
    from ..archive import connect, migrate

    config = config or Config()
    store = ProductStore(root)
    raw_dir = Path(raw_dir)
    stop = stop_event or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    db = connect(config.archive.database_url or None, store=store)
    migrate(db)
    summary = NightSummary(store.root, database=db.url)
    sizes: dict = {}
    seen: set = set()
    idle_since = time.monotonic()
    t0 = time.perf_counter()
    try:
        while not stop.is_set():
            ready = []
            for path in sorted(raw_dir.rglob("ztf_*.fits*")):
                if path in seen or ".tmp" in path.name:
                    continue
                size = path.stat().st_size
                if sizes.get(path) == size:
                    ready.append(path)
                sizes[path] = size
            if ready:
                idle_since = time.monotonic()
                seen.update(ready)
                _process_arrivals(ready, raw_dir, store, config, db, summary, executor, workers, scheduler, stages,
                                  progress, stop, qids)
            elif max_idle is not None and time.monotonic() - idle_since >= max_idle:
                break
            stop.wait(poll_interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        db.close()
    summary.wall_s = time.perf_counter() - t0
    log.info("VPO stopped: %d raw files processed", summary.raw_files)
    return summary


def _process_arrivals(paths, raw_dir, store, config, db, summary, executor, workers, scheduler, stages, progress,
                      stop, qids) -> None:
    linked = {p.name: p for p in _link_raw(raw_dir, store)}
    keys = [ProductKey.parse(p.name) for p in paths]
    science = [linked[k.filename] for k in keys if k.imgtype == "o" and k.filename in linked]
    nights = sorted({k.night for k in keys})
    for night in nights:
        mine = [p for p in science if ProductKey.parse(p.name).night == night]
        if not mine:
            continue  # calibration frames wait for the night's first science files
        if night not in summary.nights:
            summary.nights.append(night)
        _ensure_library(store, night, config)
        _ensure_catalogs(store, mine)
        phase = None if progress is None else (lambda d, t, n: progress("night", d, t, n))
        process_raw_files(mine, store, config, db, summary, executor=executor, workers=workers, scheduler=scheduler,
                          stages=stages, progress=phase, stop=stop.is_set, qids=tuple(qids))
        summary.references += [s.key for s in update_references(store, config, db=db) if s.ok]
        summary.alerts_dir = store.alerts_dir(night)
