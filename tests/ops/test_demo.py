"""The demo night (``ztfsds run-night`` with no arguments) end to end under a fresh root: references,
subtraction, fakes injected and mostly recovered, alerts for the recovered ones, report, in < 5 min."""

import tarfile
import time

import pytest

from ztfsds.ops import alerts_available, run_night
from ztfsds.products import ProductStore


@pytest.mark.slow
def test_demo_night(tmp_path):
    t0 = time.perf_counter()
    summary = run_night(tmp_path / "ztfsds-data")
    wall = time.perf_counter() - t0
    print("\n" + str(summary))
    assert wall < 300
    assert summary.references and summary.stages["subtract"]["ok"] == 8
    assert summary.injected >= 40 and summary.recovered >= 0.6 * summary.injected
    assert summary.report is not None and summary.report.exists()
    rec = summary.recovery[summary.recovery["recovered"]]
    assert len(rec) == summary.recovered
    if alerts_available():
        tars = sorted(ProductStore(summary.root).alerts_dir("20200924").glob("*.tar"))
        assert len(tars) == 8 and summary.alerts > 0
        n = 0
        for p in tars:
            with tarfile.open(p) as tar:
                n += sum(1 for m in tar.getmembers() if m.name.endswith(".avro"))
        assert n == summary.alerts
