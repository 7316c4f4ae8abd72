"""The operations table: one row per (quadrant, stage, attempt) with status, timing and memory.

The night runner records each stage it runs on a quadrant-exposure here (`record_job`), and operators
query it (`job_status`): which quadrants failed at which stage, how long each stage took, peak memory.

Examples
--------
>>> from ztfsds.archive import connect, migrate
>>> db = connect("sqlite:///:memory:"); _ = migrate(db)
>>> record_job(db, "ztf_20200924431759_000655_zr_c13_o_q3", "calib", "ok", elapsed_s=0.4)
>>> record_job(db, "ztf_20200924431759_000655_zr_c13_o_q3", "astrom", "failed", message="no stars")
>>> job_status(db, status="failed")["stage"].tolist()
['astrom']
"""

from __future__ import annotations

import datetime
import socket

from astropy.table import Table

from .ingest import upsert_rows

__all__ = ["record_job", "job_status"]

_COLUMNS = ("quadrant", "stage", "status", "message", "elapsed_s", "peak_mem_mb", "started", "finished", "attempt",
            "host", "cpu_s")


def record_job(db, quadrant: str, stage: str, status: str, *, message: str = "", elapsed_s: float | None = None,
               peak_mem_mb: float | None = None, started: str | None = None, finished: str | None = None,
               attempt: int = 1, host: str | None = None, cpu_s: float | None = None) -> None:
    """Insert or update the row of one stage run on one quadrant.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    quadrant : str
        The quadrant-exposure (a product name or key string).
    stage : str
        'calib', 'astrom', 'photom', 'subtract', 'alerts', ...
    status : str
        'running', 'ok', 'failed', 'skipped'.
    message : str, optional
        What happened (the error, for a failure).
    elapsed_s : float, optional
        Wall-clock time of the stage [s].
    peak_mem_mb : float, optional
        Peak resident memory of the worker [MB].
    started, finished : str, optional
        ISO times (UTC); ``finished`` defaults to now for a status other than 'running'.
    attempt : int, optional
        1 for the first run, 2 for the first retry...
    host : str, optional
        Worker host (default this machine's name).
    cpu_s : float, optional
        CPU time of the stage (user + system) [s].
    """
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if finished is None and status != "running":
        finished = now
    row = (str(quadrant), stage, status, message, elapsed_s, peak_mem_mb, started or (now if status == "running" else None),
           finished, int(attempt), host or socket.gethostname(), cpu_s)
    upsert_rows(db, "jobs", _COLUMNS, [row], keep=("started",))


def job_status(db, *, quadrant: str | None = None, stage: str | None = None, status: str | None = None) -> Table:
    """Rows of the operations table, filtered, by quadrant, stage and attempt.

    Returns
    -------
    `~astropy.table.Table`
    """
    clauses, params = [], []
    for column, value in (("quadrant", quadrant), ("stage", stage), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return db.query_table(f"SELECT {', '.join(_COLUMNS)} FROM jobs{where} ORDER BY quadrant, stage, attempt", params)
