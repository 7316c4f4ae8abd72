"""Test data of the alert tests: a realistic synthetic quadrant (candidates table, headers, cutouts) on the
real WCS of a ZTF quadrant, and the real packets of tests/data/alerts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

DATA = Path(__file__).parents[1] / "data"
ALERT_DATA = DATA / "alerts"


def real_packet_paths() -> list[Path]:
    return sorted(ALERT_DATA.glob("*.avro"))


def synthetic_quadrant(n: int = 40, seed: int = 1, *, size: int = 63):
    """A candidates table as run_subtract writes it (0-based positions), the science header (the real
    field-655 quadrant's, WCS included), the difference header and (n, 3, size, size) cutouts."""
    rng = np.random.default_rng(seed)
    sci = fits.Header.fromtextfile(DATA / "real_sciimg_header.txt")
    sci["MEDSKY"] = (157.7, "median sky [DN]")
    sci["SKYSIG"] = (6.56, "robust sky sigma [DN]")
    diff = sci.copy()
    for key, value in (("RFID", 655120250), ("NFRAMREF", 20), ("RFJDSTRT", 2458200.5), ("RFJDEND", 2458300.5),
                       ("DIFFMLIM", 20.62), ("RBVERSN", "ztfsds_rb_v1"), ("DRBVERSN", "d6_m7")):
        diff[key] = value
    t = Table()
    t["tblid"] = np.arange(n, dtype=np.int32)
    x = rng.uniform(-0.4, 3071.4, n)
    y = rng.uniform(-0.4, 3079.4, n)
    x[0], y[0] = 0.0, 1539.5     # on the first pixel column
    t["xpos"], t["ypos"] = x, y
    t["isdiffpos"] = np.where(rng.uniform(size=n) < 0.7, "t", "f")
    t["scorr"] = rng.uniform(5, 60, n)
    flux = rng.uniform(200, 20000, n)
    t["flux"], t["sigflux"] = flux, np.sqrt(flux / 6.0 + 900.0)
    t["magpsf"] = 26.285 - 2.5 * np.log10(flux)
    t["sigmapsf"] = 1.0857 * t["sigflux"] / flux
    t["chipsf"] = rng.uniform(0.5, 3, n)
    t["magap"] = t["magpsf"] + rng.normal(0, 0.05, n)
    t["sigmagap"] = t["sigmapsf"] * 1.3
    t["magapbig"] = t["magap"] + 0.02
    t["sigmagapbig"] = t["sigmagap"] * 1.2
    t["magdiff"] = t["magap"] - t["magpsf"]
    t["aimage"] = rng.uniform(0.6, 1.2, n)
    t["bimage"] = t["aimage"] * rng.uniform(0.8, 1.0, n)
    t["elong"] = t["aimage"] / t["bimage"]
    t["fwhm"] = rng.uniform(1.5, 3.5, n)
    t["nbad"] = rng.integers(0, 3, n).astype(np.int32)
    t["nneg"] = rng.integers(0, 6, n).astype(np.int32)
    t["sumrat"] = rng.uniform(0.7, 1.0, n)
    t["mindtoedge"] = np.minimum.reduce([x, y, 3071 - x, 3079 - y])
    t["distnr"] = rng.uniform(0.05, 40, n)
    t["distnr"][3] = np.nan          # no reference source at all
    t["magnr"] = rng.uniform(14, 22, n)
    t["sigmagnr"] = rng.uniform(0.01, 0.2, n)
    t["chinr"] = rng.uniform(0.5, 2, n)
    t["sharpnr"] = rng.uniform(-0.2, 0.2, n)
    t["onstreak"] = np.zeros(n, bool)
    t["rb"] = rng.uniform(0, 1, n).astype(np.float32)
    t["drb"] = rng.uniform(0, 1, n).astype(np.float32)
    t["magpsf"][5] = np.nan          # a failed PSF fit
    stamps = rng.normal(0.0, 6.5, (n, 3, size, size)).astype(np.float32)
    stamps[:, 0] += 157.7
    stamps[0, :, :, :31] = np.nan    # the first candidate's stamps run off the image
    return t, sci, diff, stamps
