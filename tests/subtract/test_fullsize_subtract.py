"""Subtraction of a full-size (3072 x 3080) simulated quadrant against the simulator's truth.

One field / CCD, 10 history nights + tonight's exposure (seed 11: tonight's seeing is poor, 3.9 px
against the reference's 2.4); calib -> astrom -> photom for every epoch, the reference from the
history nights only, 400 point sources injected into tonight's image, `run_subtract`. Measured: the
completeness at S/N >= 8, the injections' photometry, the bogus candidates surviving rb >= 0.5 (every
candidate that is not within 2 px of an injection or within 2.5 px of a variable star, supernova,
nuclear transient or asteroid of the truth table), D at the positions of static stars. About 10 min
on one core (the simulation of 11 full CCD exposures is most of it): ``pytest --slow``.
"""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from ztfsds.astrom import run_astrom
from ztfsds.calib import build_library, run_calib
from ztfsds.catalogs import build_catalogs
from ztfsds.config import Config, RefimgParams
from ztfsds.photom import run_photom
from ztfsds.photom.aperture import aperture_photometry
from ztfsds.photom.forced import psf_from_hdulist
from ztfsds.products import ProductKey, ProductStore, read_header, read_image
from ztfsds.refimg import build_reference
from ztfsds.sim import simulate_night
from ztfsds.sim.night import truth_path
from ztfsds.subtract import run_subtract
from ztfsds.subtract.fakes import inject_point_sources

QID = 3
CONFIG = Config(refimg=RefimgParams(min_epochs=6))


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("fullsub")
    result = simulate_night(root, fields=[655], ccds=[13], nexp=1, filters=["zr"], size=None, seed=11,
                            history_nights=10, nbias=3, nflat=3)
    store = ProductStore(root)
    build_library(store, "20200924")
    build_catalogs(store, [655], ccds=[13])
    raws = sorted(result.science, key=lambda p: p.name)
    keys = [ProductKey.parse(r.name).quadrant(QID, "sciimg") for r in raws]
    for raw, key in zip(raws[:-1], keys[:-1]):
        assert all(s.ok for s in run_calib(raw, store))
        assert run_astrom(key, store).ok
        run_photom(key, store)
    # the reference from the history nights only
    assert build_reference(store, 655, 13, QID, "zr", CONFIG).ok
    raw, key = raws[-1], keys[-1]
    assert all(s.ok for s in run_calib(raw, store))
    assert run_astrom(key, store).ok
    run_photom(key, store)
    sci, hdr = read_image(store.path(key))
    with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
        psf = psf_from_hdulist(hdul)
    rng = np.random.default_rng(3)
    ny, nx = sci.shape
    x, y = rng.uniform(40, nx - 41, 400), rng.uniform(40, ny - 41, 400)
    flux = 10 ** (-0.4 * (rng.uniform(17.5, 21.8, 400) - hdr["MAGZP"]))
    store.write_fits(key, fits.PrimaryHDU(inject_point_sources(sci, psf, x, y, flux, gain=hdr["GAIN"], rng=rng), hdr))
    status = run_subtract(key, store, CONFIG)
    assert status.ok, str(status)
    truth = Table.read(truth_path(store, ProductKey.parse(raw.name)), hdu=f"Q{QID}")
    return store, key, Table({"x": x, "y": y, "flux": flux}), truth


@pytest.mark.slow
def test_fullsize_completeness_photometry_and_bogus(night):
    store, key, fakes, truth = night
    cands = Table.read(store.path(key.with_suffix("candidates")), hdu="CANDIDATES")
    h = read_header(store.path(key.with_suffix("scimrefdiffimg")))
    ny, nx = h["NAXIS2"], h["NAXIS1"]
    with fits.open(store.path(key.with_suffix("diffimgpsf"))) as hdul:
        psf_d = psf_from_hdulist(hdul).stamp(nx / 2, ny / 2)
    snr = np.asarray(fakes["flux"]) / (h["DIFSIGMA"] * math.sqrt(1.0 / np.sum(psf_d**2)))
    pos = cands[cands["isdiffpos"] == "t"]
    tree = cKDTree(np.column_stack([pos["xpos"], pos["ypos"]]))
    d, j = tree.query(np.column_stack([fakes["x"], fakes["y"]]))
    found = d < 1.5
    ratio = np.where(found, np.asarray(pos["flux"])[j] / fakes["flux"], np.nan)
    bright = snr >= 8
    # the truth's real variability, and the injections, by position on tonight's image
    w = WCS(read_header(store.path(key)))
    kind = np.char.strip(np.asarray(truth["kind"]).astype(str))
    real_kind = np.isin(kind, ["variable", "supernova", "nuclear", "asteroid"])
    tx, ty = w.all_world2pix(np.asarray(truth["ra"])[real_kind], np.asarray(truth["dec"])[real_kind], 0)
    cxy = np.column_stack([cands["xpos"], cands["ypos"]])
    near_fake = cKDTree(np.column_stack([fakes["x"], fakes["y"]])).query(cxy)[0] < 2.0
    near_real = cKDTree(np.column_stack([tx, ty])).query(cxy)[0] < 2.5 if real_kind.any() else np.zeros(len(cands), bool)
    bogus = ~near_fake & ~near_real & ~np.asarray(cands["onstreak"]).astype(bool)
    rb = np.asarray(cands["rb"])
    print(f"\n{len(cands)} candidates; {bright.sum()} injections at S/N >= 8: {found[bright].mean():.4f} "
          f"recovered; flux ratio (S/N > 20) median {np.nanmedian(ratio[snr > 20]):.4f}; bogus {bogus.sum()}, "
          f"with rb >= 0.5: {np.sum(bogus & (rb >= 0.5))}; injections recovered with rb >= 0.5: "
          f"{np.mean(rb[near_fake] >= 0.5):.3f}")
    assert bright.sum() >= 150
    assert found[bright].mean() >= 0.95
    assert abs(np.nanmedian(ratio[snr > 20]) - 1.0) < 0.01
    assert np.sum(bogus & (rb >= 0.5)) < 10
    assert np.mean(rb[near_fake] >= 0.5) >= 0.9


@pytest.mark.slow
def test_fullsize_static_stars_leave_no_flux(night):
    """D at the static stars of tonight's psfcat (S/N > 100, far from injections): below 0.5 % of their
    flux in 8 px apertures, in every third of the quadrant (the ZOGY tiles' PSFs, the reference's
    flux scale and the co-add's star profiles)."""
    store, key, fakes, _ = night
    diff = read_image(store.path(key.with_suffix("scimrefdiffimg")))[0]
    cat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
    cat = cat[(cat["flags"] == 0) & (cat["snr"] > 100)]
    far = cKDTree(np.column_stack([fakes["x"], fakes["y"]])).query(np.column_stack([cat["x"], cat["y"]]))[0] > 15
    cat = cat[far]
    ap = aperture_photometry(np.nan_to_num(diff).astype(np.float32), np.asarray(cat["x"]), np.asarray(cat["y"]), (8.0,))
    r = np.asarray(ap["flux_aper"])[:, 0] / np.asarray(cat["flux"])
    x, y = np.asarray(cat["x"]), np.asarray(cat["y"])
    thirds = [np.median(r[(x >= a * 1024) & (x < (a + 1) * 1024) & (y >= b * 1027) & (y < (b + 1) * 1027)])
              for a in range(3) for b in range(3)]
    print(f"\n{len(cat)} static stars: D / flux in 8 px apertures, median {np.median(r):+.4f}; per ninth of the "
          f"quadrant {np.round(thirds, 4)}")
    assert len(cat) > 500
    assert abs(np.median(r)) < 0.005
    assert np.max(np.abs(thirds)) < 0.01
