"""Executors: the same per-exposure function (`ztfsds.ops.pipeline.process_exposure`) run serially, on a
local process pool, or on Dask.

- ``'serial'``: in this process, one raw file after the other (debugging, tests, profiling).
- ``'process'``: a `concurrent.futures.ProcessPoolExecutor` of ``workers`` processes. A worker that dies
  (killed by the OOM killer, a segfault, ``os._exit``) breaks the pool and every file in flight with it:
  those files are run again one at a time, each alone in a fresh one-process pool, so that only the file
  that kills its worker by itself is blamed; it is recorded as a ``'worker'`` error and submitted again
  ``OpsParams.retries`` times. The files not yet started go to a fresh pool.
- ``'dask'``: `dask.distributed`: ``scheduler`` is a scheduler address (``tcp://host:8786``), a
  ``distributed.Client`` or a ``LocalCluster``. Each raw file is one task (``pure=False``); a task whose
  worker died more than Dask's ``allowed-failures`` times comes back as ``KilledWorker`` and is
  recorded as a ``'worker'`` error.

Workers ignore SIGINT and SIGTERM: the runner that owns them decides when to stop (`run_exposures` takes
a ``stop`` callable; when it turns true no new file is submitted and the ones in flight are finished).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import signal
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

from .pipeline import QuadrantResult, StageRecord, _utcnow, process_exposure, quadrant_name

__all__ = ["EXECUTORS", "run_exposures"]

log = logging.getLogger(__name__)

#: Executor names.
EXECUTORS = ("serial", "process", "dask")


def _ignore_signals() -> None:  # pool initializer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _worker_error(raw, message: str) -> list[QuadrantResult]:
    from ..products import ProductKey

    name = quadrant_name(ProductKey.parse(str(raw).rsplit("/", 1)[-1]))
    now = _utcnow()
    rec = StageRecord(name, "worker", "error", message, started=now, finished=now)
    return [QuadrantResult(name, "", [rec], stopped_at="worker", status="error")]


def run_exposures(raws: Sequence, root, config, *, executor: str = "serial", workers: int = 2, scheduler=None,
                  progress: Callable[[int, int, str], None] | None = None, stop: Callable[[], bool] | None = None,
                  retries: int | None = None, **kwargs) -> list[QuadrantResult]:
    """Run `process_exposure` on raw files with an executor and collect the results.

    Parameters
    ----------
    raws : sequence of path-like
        Raw science files (paths).
    root : path-like
        The data root.
    config : `~ztfsds.config.Config`
    executor : {'serial', 'process', 'dask'}, optional
    workers : int, optional
        Processes of the local pool (and of a LocalCluster started for ``'dask'`` without a scheduler).
    scheduler : str or distributed.Client or distributed.LocalCluster, optional
        The Dask cluster.
    progress : callable, optional
        ``progress(done, total, name)`` after each raw file.
    stop : callable, optional
        Polled between files: when it returns True, nothing new is started; files in flight finish.
    retries : int, optional
        Resubmissions of a file whose worker died (default ``config.ops.retries``).
    **kwargs
        Passed to `process_exposure` (``stages``, ``only``, ``force``, ``trace_memory``).

    Returns
    -------
    list of QuadrantResult
        In the order the files finished (callers sort).
    """
    if executor not in EXECUTORS:
        from ..errors import ConfigError

        raise ConfigError(f"executor {executor!r}: must be one of {EXECUTORS}")
    retries = config.ops.retries if retries is None else retries
    root = str(root)
    raws = [str(r) for r in raws]
    total = len(raws)
    results: list[QuadrantResult] = []
    stop = stop or (lambda: False)

    count = [0]

    def finish(raw, res):
        count[0] += 1
        results.extend(res)
        if progress is not None:
            progress(count[0], total, raw.rsplit("/", 1)[-1])

    if executor == "serial" or not raws:
        for raw in raws:
            if stop():
                break
            finish(raw, process_exposure(raw, root, config, **kwargs))
        return results
    if executor == "process":
        _run_pool(raws, root, config, workers, retries, stop, finish, results.extend, kwargs)
    else:
        _run_dask(raws, root, config, workers, scheduler, stop, finish, kwargs)
    return results


def _run_pool(raws, root, config, workers, retries, stop, finish, note, kwargs) -> None:
    pending = list(raws)
    suspects: list = []  # files in flight when a pool broke: each runs again alone, to find the culprit
    tries = {r: 0 for r in raws}
    while (pending or suspects) and not stop():
        alone = bool(suspects)
        if alone:
            queue = [suspects.pop(0)]
        else:
            queue, pending = list(pending), []
        broken = False
        with cf.ProcessPoolExecutor(max_workers=1 if alone else workers, initializer=_ignore_signals) as pool:
            futures = {}

            def top_up():
                while queue and len(futures) < 2 * workers and not stop():
                    raw = queue.pop(0)
                    futures[pool.submit(process_exposure, raw, root, config, **kwargs)] = raw

            def lost(raw, message):
                log.error("%s: %s", raw, message)
                if not alone:  # any of the files in flight may have killed it: not counted against them
                    suspects.append(raw)
                    return
                tries[raw] += 1
                if tries[raw] <= retries:
                    suspects.append(raw)
                    note(_worker_error(raw, message + "; submitted again"))
                else:
                    finish(raw, _worker_error(raw, message))

            top_up()
            while futures:
                finished, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    raw = futures.pop(fut)
                    try:
                        finish(raw, fut.result())
                    except BrokenProcessPool:
                        broken = True
                        lost(raw, "a worker process died with this raw file in flight")
                    except Exception as exc:  # noqa: BLE001 - an unpicklable result, a bug: record it
                        finish(raw, _worker_error(raw, f"{type(exc).__name__}: {exc}"))
                if broken:
                    for fut, raw in list(futures.items()):
                        futures.pop(fut)
                        lost(raw, "a worker process died with this raw file in flight")
                    break
                top_up()
            pending.extend(queue)  # not started: left by a broken pool or a stop request
        if broken:
            log.warning("process pool broken: %d file(s) run again alone, %d pending", len(suspects), len(pending))


def _run_dask(raws, root, config, workers, scheduler, stop, finish, kwargs) -> None:
    from distributed import Client, LocalCluster, as_completed

    own_cluster = own_client = None
    if scheduler is None:
        own_cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        scheduler = own_cluster
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        client = own_client = Client(scheduler)
    try:
        futures = {}
        for raw in raws:
            if stop():
                break
            futures[client.submit(process_exposure, raw, root, config, pure=False, **kwargs)] = raw
        for fut in as_completed(list(futures)):
            raw = futures[fut]
            try:
                finish(raw, fut.result())
            except Exception as exc:  # noqa: BLE001 - KilledWorker, a bug: recorded, the night goes on
                finish(raw, _worker_error(raw, f"{type(exc).__name__}: {exc}"))
            fut.release()
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
