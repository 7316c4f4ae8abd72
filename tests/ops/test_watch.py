"""The VPO daemon (`ztfsds.ops.watch`) in a subprocess: it processes the raw files dropped into its
directory while it runs, stops cleanly on SIGTERM (exit 0, what it recorded is consistent), and a
second run finishes whatever the first left in flight, recording nothing twice."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ztfsds
from ztfsds.archive import connect, job_status
from ztfsds.ops import quadrant_name, watch
from ztfsds.products import ProductKey, ProductStore

from .conftest import QIDS, TONIGHT, tonight_raws

_DAEMON = ("import sys; from ztfsds.ops import watch; "
           "s = watch(sys.argv[1], sys.argv[2], executor='serial', poll_interval=0.3, qids=(3,)); "
           "print('VPO', s.raw_files, 'raw files')")


def _drop(src, raw_dir):
    """Copy a file in as a sensor would: under a temporary name, then renamed."""
    tmp = raw_dir / (src.name + ".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, raw_dir / src.name)


def _archived(store, names):
    if not store.database_path.exists():
        return 0
    with connect(store=store) as db:
        # the alerts stage ingests the quadrant (the archive stage is then up to date)
        return sum(1 for n in names if db.query("SELECT 1 FROM jobs WHERE quadrant = ? AND stage IN ('alerts', "
                                               "'archive') AND status = 'ok'", (n,)))


@pytest.mark.slow
def test_watch_processes_arrivals_and_stops_on_sigterm(copy_prepared, tmp_path):
    root, result = copy_prepared()
    store = ProductStore(root)
    src = ProductStore(result.root)
    raws = tonight_raws(result)
    # the daemon's data root has the history only: tonight's raw files arrive in raw_dir
    for p in raws:
        store.path(ProductKey.parse(p.name)).unlink()
    cal = [p for p in result.calibration if ProductKey.parse(p.name).night == TONIGHT]
    for p in cal:
        store.path(ProductKey.parse(p.name)).unlink(missing_ok=True)
    raw_dir = tmp_path / "incoming"
    raw_dir.mkdir()
    names = [quadrant_name(ProductKey.parse(p.name).quadrant(3)) for p in raws]
    # the daemon imports the same ztfsds as this suite (not a source tree in the working directory,
    # whose extensions may not be built: CI runs from the checkout with the package installed)
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(Path(ztfsds.__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", _DAEMON, str(raw_dir), str(root)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()[0]
        for p in cal + raws[:2]:  # the calibration frames first, then two exposures
            _drop(src.path(ProductKey.parse(p.name)), raw_dir)
        deadline = time.monotonic() + 120
        while _archived(store, names[:2]) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.5)
        assert _archived(store, names[:2]) == 2
        _drop(src.path(ProductKey.parse(raws[2].name)), raw_dir)  # arrives; SIGTERM as it may be in flight
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(out[-2000:])
    assert proc.returncode == 0, out[-3000:]
    assert "VPO" in out
    with connect(store=store) as db:
        for n in names[:2]:
            jobs = job_status(db, quadrant=n)
            assert set(jobs["stage"]) >= {"calib", "astrom", "photom", "subtract", "alerts"}
            assert set(jobs["status"]) == {"ok"} and set(jobs["attempt"]) == {1}
        before = db.query("SELECT COUNT(*) FROM jobs")[0][0]
    # a second run (in process, until idle) finishes the third exposure, records nothing twice
    summary = watch(raw_dir, root, executor="serial", poll_interval=0.2, max_idle=1.0, qids=QIDS)
    print(summary)
    with connect(store=store) as db:
        for n in names:
            jobs = job_status(db, quadrant=n)
            assert set(jobs["status"]) == {"ok"} and set(jobs["attempt"]) == {1}, jobs
            assert "alerts" in set(jobs["stage"])
        assert db.query("SELECT COUNT(*) FROM jobs")[0][0] >= before
        assert db.query("SELECT COUNT(*) FROM quadimages")[0][0] == 4 + 3
