"""Operations: the per-quadrant pipeline, the night runner (VPO), executors, operator tasks.

- `ztfsds.ops.pipeline`: `process_exposure` (one raw CCD file: calib, then `process_quadrant` on each
  quadrant: astrom, photom, subtract, alerts, archive), `STAGES` and `Stage` (custom stages), the per-stage
  measurements (`measure`) and the jobs table (`record_results`).
- `ztfsds.ops.executors`: `run_exposures` on 'serial', 'process' (a process pool) or 'dask'.
- `ztfsds.ops.night`: `run_night` (``ztfsds run-night``; the demo night when there is nothing to process)
  and `NightSummary`.
- `ztfsds.ops.inject`: `inject_stage`, fake point sources injected after photometry (the demo's yardstick).
- `ztfsds.ops.tasks`: `retry_failures`, `reprocess`, `disk_usage`, `cleanup`, and the scheduled
  `update_references` and `update_matchfiles`.
- `ztfsds.ops.watch`: `watch`, the daemon that processes raw files as they arrive.
- `ztfsds.ops.report`: `write_report`, the nightly HTML report, and `summarize_night` / `transient_recovery`,
  its numbers (the night runner's recovered vs injected transients come from there).
"""

from .executors import EXECUTORS, run_exposures
from .inject import fakes_path, inject_fakes, inject_stage
from .night import DEFAULT_ROOT, DEMO, NightSummary, process_raw_files, run_night, simulate_demo
from .pipeline import (
    ARCHIVE_STAGES,
    SCIENCE_STAGES,
    STAGES,
    QuadrantResult,
    Stage,
    StageRecord,
    alerts_available,
    measure,
    process_exposure,
    process_quadrant,
    quadrant_name,
    record_results,
)
from .tasks import (
    CleanupResult,
    DiskUsage,
    cleanup,
    disk_usage,
    is_archived,
    reprocess,
    retry_failures,
    update_matchfiles,
    update_references,
)
from .watch import watch

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
    "EXECUTORS",
    "run_exposures",
    "NightSummary",
    "run_night",
    "process_raw_files",
    "simulate_demo",
    "inject_stage",
    "inject_fakes",
    "fakes_path",
    "DEMO",
    "DEFAULT_ROOT",
    "retry_failures",
    "reprocess",
    "DiskUsage",
    "disk_usage",
    "CleanupResult",
    "cleanup",
    "is_archived",
    "update_references",
    "update_matchfiles",
    "watch",
]
