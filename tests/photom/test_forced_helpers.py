"""The forced-photometry service's file format and its users' helpers, on a real IPAC output.

tests/data/forcedphotometry_req00108452_lc_trimmed.txt.gz: a real ZFPS output (RA 310.479125,
Dec 64.214619), trimmed to JD 2458850-2459150.
"""

from pathlib import Path

import numpy as np
import pytest

from ztfsds.errors import InputError
from ztfsds.photom.forced import (ZFPS_COLUMNS, baseline_correct, read_forced_photometry, rescale_uncertainties,
                                  to_magnitudes, write_forced_photometry)

REAL = Path(__file__).parents[1] / "data" / "forcedphotometry_req00108452_lc_trimmed.txt.gz"


@pytest.fixture(scope="module")
def real():
    return read_forced_photometry(REAL)


def test_reads_the_real_service_output(real):
    assert real.colnames == [name for name, _, _ in ZFPS_COLUMNS]
    assert len(real) == 513
    assert set(real["filter"]) <= {"ZTF_g", "ZTF_r", "ZTF_i"}
    assert real["field"][0] == 829 and real["ccdid"][0] == 15
    assert np.all(real["jd"] > 2458850) and np.all(real["jd"] < 2459150)
    assert real["forcediffimflux"].unit == "adu"
    # null entries become NaN, not -99999
    assert not np.any(np.asarray(real["forcediffimfluxunc"]) == -99999)


def test_write_read_round_trip(real, tmp_path):
    path = write_forced_photometry(real[:50], tmp_path / "fp.txt", ra=310.479125, dec=64.214619)
    back = read_forced_photometry(path)
    assert back.colnames == real.colnames
    for name in ("jd", "forcediffimflux", "forcediffimfluxunc", "zpdiff", "pid", "rfid"):
        a, b = np.asarray(real[name][:50], float), np.asarray(back[name], float)
        assert np.allclose(a, b, rtol=1e-9, equal_nan=True), name
    assert list(back["procstatus"]) == list(real["procstatus"][:50])


def test_baseline_correction_removes_reference_offset(real):
    """The fluxes of this position sit thousands of DN below zero on the r-band reference 829120258
    (the reference holds light the science images do not): with every epoch as baseline (jd_peak None)
    the epochs of every fcqfid/rfid group scatter about zero after the correction."""
    out = baseline_correct(real, min_epochs=10)
    pre = np.asarray([s.strip() for s in out["procstatus"]]) == "0"
    raw = np.asarray(real["forcediffimflux"], float)
    corr = np.asarray(out["forcediffimflux"], float)
    for g in np.unique(out["fcqfid"][pre]):
        rows = pre & (np.asarray(out["fcqfid"]) == g)
        if rows.sum() >= 10:
            assert abs(np.median(corr[rows])) < 1e-6 * max(1.0, abs(np.median(raw[rows])))
    assert np.nanmax(np.abs(np.asarray(out["baseline"]))) > 1000  # the offset was real and removed
    assert np.all(out["baseline_n"] >= 0)
    # with a peak in the middle of the data, only epochs outside the window make the baseline
    windowed = baseline_correct(real, jd_peak=2459001.8, min_epochs=1)
    assert np.max(windowed["baseline_n"]) < np.max(out["baseline_n"])


def test_uncertainty_rescaling(real):
    base = baseline_correct(real, min_epochs=10)
    out = rescale_uncertainties(base)
    assert np.max(out["unc_scale"]) > 1.2     # real data: the baseline scatters more than the errors say
    assert np.all(np.asarray(out["unc_scale"]) >= 1.0)
    ok = np.isfinite(np.asarray(base["forcediffimfluxunc"], float))
    ratio = np.asarray(out["forcediffimfluxunc"], float)[ok] / np.asarray(base["forcediffimfluxunc"], float)[ok]
    assert np.allclose(ratio, np.asarray(out["unc_scale"])[ok])
    chisq = rescale_uncertainties(base, method="chisq")
    assert np.all(np.asarray(chisq["unc_scale"]) >= 1.0)
    with pytest.raises(InputError):
        rescale_uncertainties(base, method="nope")


def test_magnitudes_and_limits(real):
    out = to_magnitudes(baseline_correct(real, min_epochs=10))
    det = np.asarray(out["detected"])
    assert det.sum() > 20 and (~det).sum() > 20
    mag = np.asarray(out["mag"])
    assert np.all((mag[det] > 12) & (mag[det] < 23))
    assert np.all(np.isnan(mag[~det]))
    lim = np.asarray(out["lim"])
    usable = np.isfinite(lim)
    assert np.all((lim[usable] > 17) & (lim[usable] < 23))
    # f_nu in uJy at the AB zero point: 1 DN at zpdiff 26.2 -> 10**(29 - 19.44 - 10.48) uJy
    row = np.nonzero(det)[0][0]
    expected = out["forcediffimflux"][row] * 10 ** (29 - 48.6 / 2.5 - 0.4 * out["zpdiff"][row])
    assert out["flux_ujy"][row] == pytest.approx(expected)


def test_not_a_forced_photometry_file(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("# nothing\n1 2 3\n")
    with pytest.raises(InputError, match="x.txt"):
        read_forced_photometry(p)
