"""References and subtraction end to end on a simulated field: 10 history nights + 2 exposures.

raw -> calib -> astrom -> photom for every epoch of one quadrant; `build_reference` from the epochs;
point sources injected into the last exposure; `run_subtract`; the candidates against the injections.
"""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ztfsds.astrom import run_astrom
from ztfsds.calib import build_library, run_calib
from ztfsds.catalogs import build_catalogs
from ztfsds.config import Config, RefimgParams
from ztfsds.photom import run_photom
from ztfsds.photom.forced import psf_from_hdulist
from ztfsds.products import ProductKey, ProductStore, read_header, read_image
from ztfsds.refimg import build_reference, reference_synopsis
from ztfsds.sim import simulate_night
from ztfsds.subtract import run_subtract
from ztfsds.subtract.fakes import inject_point_sources

SIZE = 512
NIGHT = "20200924"
QID = 3
CONFIG = Config(refimg=RefimgParams(min_epochs=8))


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    root = tmp_path_factory.mktemp("subtract")
    result = simulate_night(root, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=6,
                            history_nights=10, nbias=3, nflat=3)
    store = ProductStore(root)
    build_library(store, NIGHT)
    build_catalogs(store, [655], ccds=[13])
    keys = []
    for raw in result.science:
        assert all(s.ok for s in run_calib(raw, store))
        key = ProductKey.parse(raw.name).quadrant(QID, "sciimg")
        assert run_astrom(key, store).ok
        run_photom(key, store)
        keys.append(key)
    status = build_reference(store, 655, 13, QID, "zr", CONFIG)
    return result, store, keys, status


def test_reference_built(field):
    _, store, keys, status = field
    assert status.ok, str(status)
    ref_key = keys[0].reference("refimg")
    h = read_header(store.path(ref_key))
    assert h["NFRAMES"] >= 8 and h["MAGZP"] == 27.0 and h["RFID"] == 655120250 + 0
    for suffix in ("refunc", "refcov", "refmsk", "refimgpsf", "refpsfcat", "refsexcat"):
        assert store.exists(ref_key.with_suffix(suffix)), suffix
    # deeper than any single epoch, by about 2.5 log10(sqrt(N)) for similar epochs
    single = max(read_header(store.path(k)).get("MAGLIM", 0) for k in keys)
    print(f"\nreference: {status}; best single-epoch MAGLIM {single}")
    assert h["MAGLIM"] > single + 0.5
    cov, _ = read_image(store.path(ref_key.with_suffix("refcov")))
    assert np.median(cov) >= 0.8 * h["NFRAMES"]
    syn = reference_synopsis(store)
    assert len(syn) == 1 and syn["nframes"][0] == h["NFRAMES"]


def _inject(store, key, rng, n=80):
    """Point sources spanning S/N ~3-40 on the difference image, away from the edges; returns the table."""
    sci, hdr = read_image(store.path(key))
    with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
        psf = psf_from_hdulist(hdul)
    x = rng.uniform(40, SIZE - 41, n)
    y = rng.uniform(40, SIZE - 41, n)
    mag = rng.uniform(17.5, 21.8, n)
    flux = 10 ** (-0.4 * (mag - hdr["MAGZP"]))
    new = inject_point_sources(sci, psf, x, y, flux, gain=hdr["GAIN"], rng=rng)
    store.write_fits(key, fits.PrimaryHDU(new, hdr))
    return Table({"x": x, "y": y, "flux": flux, "mag": mag})


@pytest.fixture(scope="module")
def subtracted(field):
    _, store, keys, _ = field
    key = keys[-1]
    fakes = _inject(store, key, np.random.default_rng(3))
    status = run_subtract(key, store, CONFIG)
    return store, key, fakes, status


def test_subtraction_products(subtracted):
    store, key, _, status = subtracted
    assert status.ok, str(status)
    for suffix in ("scimrefdiffimg", "diffimgpsf", "diffimgvar", "diffimgmsk", "candidates"):
        assert store.exists(key.with_suffix(suffix)), suffix
    h = read_header(store.path(key.with_suffix("scimrefdiffimg")))
    assert h["RFID"] == 655120250 and h["NFRAMREF"] >= 8 and 18 < h["DIFFMLIM"] < 23
    assert h["DRBVERSN"] == "d6_m7" and h["RBVERSN"]
    with fits.open(store.path(key.with_suffix("candidates"))) as hdul:
        assert hdul["CUTOUTS"].data.shape[1:] == (3, 63, 63)
        assert hdul["CUTOUTS"].data.shape[0] == len(hdul["CANDIDATES"].data)


def test_injected_sources_recovered(subtracted):
    """Completeness >= 95 % for injections of S/N >= 8 on D; their PSF photometry unbiased to < 1 %."""
    store, key, fakes, _ = subtracted
    cands = Table.read(store.path(key.with_suffix("candidates")), hdu="CANDIDATES")
    h = read_header(store.path(key.with_suffix("scimrefdiffimg")))
    with fits.open(store.path(key.with_suffix("diffimgpsf"))) as hdul:
        psf_d = psf_from_hdulist(hdul).stamp(SIZE / 2, SIZE / 2)
    nea = 1.0 / float(np.sum(psf_d**2))
    snr = np.asarray(fakes["flux"]) / (h["DIFSIGMA"] * math.sqrt(nea))
    pos = cands[cands["isdiffpos"] == "t"]
    found = np.zeros(len(fakes), bool)
    ratio = np.full(len(fakes), np.nan)
    for i, f in enumerate(fakes):
        d = np.hypot(pos["xpos"] - f["x"], pos["ypos"] - f["y"])
        if len(d) and d.min() < 1.5:
            found[i] = True
            ratio[i] = pos["flux"][np.argmin(d)] / f["flux"]
    bright = snr >= 8
    mid = (snr >= 5) & (snr < 8)
    print(f"\n{bright.sum()} injections at S/N >= 8: {found[bright].mean():.3f} recovered; "
          f"flux ratio (S/N > 20) median {np.nanmedian(ratio[snr > 20]):.4f} scatter {np.nanstd(ratio[snr > 20]):.4f}; "
          f"S/N 5-8: {found[mid].sum()} of {mid.sum()}")
    assert bright.sum() >= 30
    assert found[bright].mean() >= 0.95
    # real-bogus on the recovered injections and on everything else
    near = np.array([np.min(np.hypot(fakes["x"] - c["xpos"], fakes["y"] - c["ypos"])) < 1.5 for c in cands])
    rb, drb = np.asarray(cands["rb"]), np.asarray(cands["drb"])
    print(f"rb of recovered injections: median {np.median(rb[near]):.3f}, {np.mean(rb[near] >= 0.5):.3f} >= 0.5; "
          f"other candidates: {len(cands) - near.sum()}, {int(np.sum(rb[~near] >= 0.5))} with rb >= 0.5; "
          f"drb medians {np.median(drb[near]):.3f} / {np.median(drb[~near]) if (~near).any() else float('nan'):.3f}")
    assert np.all((rb >= 0) & (rb <= 1)) and np.all((drb >= 0) & (drb <= 1))
    assert np.mean(rb[near & (np.asarray(cands["scorr"]) >= 8)] >= 0.5) >= 0.95
    assert abs(np.nanmedian(ratio[snr > 20]) - 1.0) < 0.01


def test_difference_noise_around_static_stars(subtracted):
    """D / sigma(D) over the cores of static stars of S/N 20-100 scatters as noise (brighter ones leave
    residuals of ~1 % of their flux: interpolation and PSF-model errors)."""
    store, key, fakes, _ = subtracted
    diff = read_image(store.path(key.with_suffix("scimrefdiffimg")))[0]
    var = read_image(store.path(key.with_suffix("diffimgvar")))[0]
    psfcat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
    stars = psfcat[(psfcat["flags"] == 0) & (psfcat["snr"] > 20) & (psfcat["snr"] < 100)
                   & (psfcat["x"] > 10) & (psfcat["x"] < SIZE - 11) & (psfcat["y"] > 10) & (psfcat["y"] < SIZE - 11)]
    far = [np.min(np.hypot(fakes["x"] - s["x"], fakes["y"] - s["y"])) > 10 for s in stars]
    stars = stars[np.array(far, bool)]
    z = []
    for s in stars:
        ix, iy = int(round(s["x"])), int(round(s["y"]))
        box = (diff[iy - 2:iy + 3, ix - 2:ix + 3] / np.sqrt(var[iy - 2:iy + 3, ix - 2:ix + 3])).ravel()
        z.extend(box[np.isfinite(box)])
    z = np.array(z)
    robust = 1.4826 * np.median(np.abs(z - np.median(z)))
    print(f"\n{len(stars)} static stars: D/sigma over their 5x5 cores: mean {z.mean():+.3f}, median "
          f"{np.median(z):+.3f}, std {z.std():.3f}, robust std {robust:.3f}")
    assert len(stars) >= 20
    # robust: the sky has variable stars (1 % of them) and blends the catalog did not split
    assert abs(np.median(z)) < 0.2 and 0.8 < robust < 1.3


def test_no_reference_is_a_clear_failure(field, tmp_path):
    _, store, keys, _ = field
    other = ProductStore(tmp_path)
    for suffix in ("sciimg", "mskimg", "varimg", "sciimgpsf"):
        dst = other.path(keys[0].with_suffix(suffix))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(store.path(keys[0].with_suffix(suffix)).read_bytes())
    status = run_subtract(keys[0], other)
    assert not status.ok and "no reference" in status.message


def test_too_few_epochs(field, tmp_path):
    _, store, _, _ = field
    status = build_reference(store, 655, 13, QID, "zr", Config(refimg=RefimgParams(min_epochs=40, max_epochs=40)))
    assert not status.ok and "40" in status.message


def test_subtract_any_pair_command(subtracted, tmp_path):
    """'ztfsds subtract --pair SCIIMG REFIMG' on bare files (no PSF products beside them: fitted on the
    images), as for IRSA downloads: the injected sources are found again."""
    from ztfsds.cli import main

    store, key, fakes, _ = subtracted
    sci = tmp_path / "in" / key.filename
    ref = tmp_path / "in" / key.reference("refimg").filename
    sci.parent.mkdir()
    sci.write_bytes(store.path(key).read_bytes())
    (sci.parent / key.with_suffix("mskimg").filename).write_bytes(store.path(key.with_suffix("mskimg")).read_bytes())
    ref.write_bytes(store.path(key.reference("refimg")).read_bytes())
    assert main(["subtract", "--pair", str(sci), str(ref), "--out", str(tmp_path / "out")]) == 0
    cands = Table.read(next((tmp_path / "out").glob("*_candidates.fits")), hdu="CANDIDATES")
    pos = cands[cands["isdiffpos"] == "t"]
    bright = np.asarray(fakes["mag"]) < 20.0
    found = [np.min(np.hypot(pos["xpos"] - f["x"], pos["ypos"] - f["y"])) < 1.5 for f in fakes[bright]]
    print(f"\n--pair: {len(cands)} candidates; {np.mean(found):.2f} of {bright.sum()} injections brighter than 20")
    assert np.mean(found) >= 0.9
    assert main(["subtract", "--pair", str(sci)]) != 0
