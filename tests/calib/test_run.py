"""The calibration stage end to end: a simulated night's own calibration frames -> library -> products.

Unlike test_apply.py (calibration from the camera truth) and test_library.py (library against the truth),
here the quadrant products are made exactly as a night run makes them -- `build_library` then
`run_calib` -- and compared with the truth: masks, star fluxes, headers; plus re-runs, damaged input
and the command line.
"""

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from truthphot import check_pulls, clean_star_pulls

from ztfsds.calib import build_library, run_calib
from ztfsds.cli import main
from ztfsds.products import MaskBits, ProductKey, ProductStore, read_image
from ztfsds.sim import truth_path

SIZE = 512
NIGHT = "20200924"


@pytest.fixture(scope="module")
def night(calib_night):
    """The shared night (tests/calib/conftest.py): library from its own frames, then run_calib."""
    store = ProductStore(calib_night.root)
    build_library(store, NIGHT)
    statuses = {p.name: run_calib(p, store) for p in calib_night.science}
    return calib_night, store, statuses


def _truth(night_result, raw_path, qid):
    with fits.open(truth_path(ProductStore(night_result.root), ProductKey.parse(raw_path.name))) as hdul:
        return Table(hdul[f"Q{qid}"].data), hdul[f"Q{qid}"].header, hdul[f"MASK{qid}"].data


def test_every_quadrant_calibrated(night):
    result, store, statuses = night
    for name, sts in statuses.items():
        assert [s.ok for s in sts] == [True] * 4, [str(s) for s in sts]
        for s in sts:
            assert s.infobits == 0 and len(s.outputs) == 3
    key = ProductKey.parse(result.science[0].name).quadrant(3, "sciimg")
    sci, hdr = read_image(store.path(key))
    msk, mhdr = read_image(store.path(key.with_suffix("mskimg")))
    var, _ = read_image(store.path(key.with_suffix("varimg")))
    assert sci.dtype == np.float32 and msk.dtype == np.int16 and var.dtype == np.float32
    assert sci.shape == msk.shape == var.shape == (SIZE, SIZE)
    for card in ("CIDBIAS", "CIDHIFLT", "CIDBPM", "GAIN", "READNOI", "SATURATE", "INFOBITS", "CALHASH",
                 "PIPEVERS", "OBSJD", "FIELDID", "EXPID", "RCID", "BIT00", "MEDSKY"):
        assert card in hdr, card
    assert hdr["CIDBIAS"] == f"ztf_{NIGHT}_OO_c13_q3_bias.fits"
    assert hdr["RCID"] == 50 and hdr["QID"] == 3
    # the sub-array's place in the full quadrant, for the astrometric prior
    assert (hdr["LTV1"], hdr["LTV2"]) == (-((3072 - SIZE) // 2), -((3080 - SIZE) // 2))
    assert "BIT08" in mhdr and mhdr["BIT08"] == 8


def test_gain_and_masks_against_truth(night):
    result, store, _ = night
    recall, false = [], []
    for raw in result.science:
        for qid in (1, 2, 3, 4):
            _, thdr, tmask = _truth(result, raw, qid)
            key = ProductKey.parse(raw.name).quadrant(qid, "sciimg")
            msk, hdr = read_image(store.path(key.with_suffix("mskimg")))
            assert hdr["AMPGAIN"] == pytest.approx(thdr["GAIN"], rel=0.02)
            assert hdr["READNOI"] == pytest.approx(thdr["READNOI"], rel=0.03)
            # static defects (dead, low/high response) and saturation: hot pixels need more exposures
            bits = int(MaskBits.DEAD | MaskBits.LOW_RESPONSIVITY | MaskBits.HIGH_RESPONSIVITY | MaskBits.SATURATED)
            true = (tmask & bits) != 0
            recall.append((true & (msk != 0)).sum() / max(true.sum(), 1))
            clean = tmask == 0
            flagged = (msk & bits) != 0
            false.append((flagged & clean).sum() / clean.sum())
    print(f"\nstatic defects + saturation recall {np.min(recall):.4f} (min), false {np.max(false):.2e} (max)")
    assert np.min(recall) >= 0.99
    assert np.max(false) < 1e-3


@pytest.fixture(scope="module")
def sparse_night(night, tmp_path_factory):
    """Two exposures of the same camera and night at the normal star density (the shared night is 3x
    denser, for the crosstalk, and has few isolated stars), calibrated with the shared night's library."""
    from ztfsds.sim import simulate_night

    from .conftest import NIGHT_KWARGS

    root = tmp_path_factory.mktemp("sparse")
    kwargs = dict(NIGHT_KWARGS, fields=[655], nexp=2, density_scale=1.0, nbias=1, nflat=1)
    result = simulate_night(root, **kwargs)
    shutil.copytree(night[0].root / "cal", root / "cal")
    store = ProductStore(root)
    for raw in result.science:
        assert all(s.ok for s in run_calib(raw, store))
    return result, store


def test_star_fluxes_within_noise(sparse_night):
    """Aperture fluxes of clean stars on the products, less the true sky, against the true fluxes."""
    from ztfsds.sim.instrument import make_camera

    from .conftest import NIGHT_KWARGS

    result, store = sparse_night
    camera = make_camera(NIGHT_KWARGS["seed"], shape=(SIZE, SIZE), ccdids=[13])
    ratios, pulls, var_ratios = [], [], []
    for raw in result.science:
        for qid in (1, 2, 3, 4):
            truth, thdr, tmask = _truth(result, raw, qid)
            key = ProductKey.parse(raw.name).quadrant(qid, "sciimg")
            sci, hdr = read_image(store.path(key))
            msk, _ = read_image(store.path(key.with_suffix("mskimg")))
            var, _ = read_image(store.path(key.with_suffix("varimg")))
            # the image is detected electrons / (gain x the library's flat): predict it from the truth
            # (true response and gain) and the flat the product names
            flat, _ = read_image(store.path(ProductKey.parse(hdr["CIDHIFLT"])))
            r, p, v = clean_star_pulls(sci, var, truth, thdr, tmask, product_mask=msk != 0,
                                       response=camera.flat(13, qid, "zr"), flat=flat)
            ratios.extend(r)
            pulls.extend(p)
            var_ratios.extend(v)
    check_pulls(ratios, pulls, var_ratios)


def test_rerun_is_idempotent(night):
    result, store, statuses = night
    raw = result.science[0]
    key = ProductKey.parse(raw.name).quadrant(2, "sciimg")
    before = read_image(store.path(key))[0].copy()
    again = run_calib(raw, store)
    assert all(s.ok for s in again)
    assert np.array_equal(read_image(store.path(key))[0], before)
    assert not list(store.path(key).parent.glob("*.tmp*"))


def test_damaged_raw_fails_only_its_quadrants(night, tmp_path):
    result, store, _ = night
    raw = result.science[1]
    with fits.open(raw) as hdul:
        hdul[3].data = hdul[3].data[:, :100]  # quadrant 3 has the wrong shape
        damaged = tmp_path / raw.name
        hdul.writeto(damaged)
    statuses = run_calib(damaged, store)
    assert [s.ok for s in statuses] == [True, True, False, True]
    assert raw.name in statuses[2].message and "shape" in statuses[2].message


def test_missing_calibration_is_a_clear_failure(night, tmp_path):
    result, _, _ = night
    empty = ProductStore(tmp_path / "empty")
    statuses = run_calib(result.science[0], empty)
    assert len(statuses) == 1 and not statuses[0].ok
    assert "bias" in statuses[0].message or "calibration" in statuses[0].message


def test_truncated_raw_file(night, tmp_path):
    result, store, _ = night
    raw = result.science[2]
    cut = tmp_path / raw.name
    data = raw.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    statuses = run_calib(cut, store)
    assert not all(s.ok for s in statuses)
    assert all(raw.name in s.message for s in statuses if not s.ok)


def test_command_line(night, tmp_path, capsys):
    result, _, _ = night
    root = tmp_path / "cli"
    shutil.copytree(result.root / "raw", root / "raw")
    assert main(["calib", "build", "--night", NIGHT, "--data", str(root)]) == 0
    assert "calibration products" in capsys.readouterr().out
    assert main(["calib", "apply", str(next((root / "raw").rglob("*_o.fits"))), "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == 4
    assert len(list((root / "sci").rglob("*_sciimg.fits"))) == 4
