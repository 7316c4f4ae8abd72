"""Photometric calibration and limiting magnitudes on synthetic catalogs with a known answer."""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ztfsds.config import PhotomParams
from ztfsds.photom.photcal import (PHOTCAL_INFOBITS, empirical_limiting_magnitude, limiting_magnitude,
                                   photometric_calibration)
from ztfsds.products import InfoBits

ZP, K = 26.2851, 0.0792


def _catalogs(n=800, seed=3, zp=ZP, k=K, outliers=40):
    rng = np.random.default_rng(seed)
    ra = 150.0 + rng.uniform(-0.4, 0.4, n)
    dec = 30.0 + rng.uniform(-0.4, 0.4, n)
    r = rng.uniform(13.5, 20.5, n)
    gr = np.clip(rng.normal(0.7, 0.3, n), -0.3, 2.2)
    ps1 = Table({"objid": np.arange(n), "ra": ra, "dec": dec, "gmag": r + gr, "rmag": r, "imag": r - 0.3,
                 "e_gmag": np.full(n, 0.01), "e_rmag": np.full(n, 0.01), "e_imag": np.full(n, 0.01)})
    ztf = r - k * gr                                    # the passband's magnitude
    flux = 10 ** (-0.4 * (ztf - zp))
    sky_noise = 10 ** (-0.4 * (21.5 - zp)) / 5          # S/N 5 at 21.5
    ferr = np.sqrt(sky_noise**2 + flux / 6.0)
    meas = flux + rng.normal(0, ferr)
    # blends and variables: outliers of a few tenths of a mag
    bad = rng.choice(n, outliers, replace=False)
    meas[bad] *= 10 ** (-0.4 * rng.uniform(-0.8, 0.8, outliers))
    psfcat = Table({"ra": ra + rng.normal(0, 0.1 / 3600, n), "dec": dec + rng.normal(0, 0.1 / 3600, n),
                    "flux": meas, "sigflux": ferr, "flags": np.zeros(n, np.int32)})
    return psfcat, ps1


def test_zero_point_and_colour_term_recovered():
    psfcat, ps1 = _catalogs()
    res = photometric_calibration(psfcat, ps1, "zr")
    print(f"\nMAGZP {res.magzp:.4f} +- {res.magzpunc:.4f} (true {ZP}); CLRCOEFF {res.clrcoeff:.4f} "
          f"+- {res.clrcounc:.4f} (true {K}); rms {res.magzprms:.4f}; n {res.nmatches}")
    assert res.ok and res.infobits == 0
    assert res.magzp == pytest.approx(ZP, abs=0.005)
    assert res.clrcoeff == pytest.approx(K, abs=0.01)
    assert abs(res.magzp - ZP) < 4 * res.magzpunc + 1e-3
    assert 200 < res.nmatches < 800 and res.pcolor == "g - R"
    # ZPMED carries the colour term at the median colour, as the real header (26.336 vs 26.285)
    assert res.zpmed == pytest.approx(ZP + K * res.clrmed, abs=0.01)
    assert res.magzprms < 0.03


def test_header_cards_as_ipac():
    psfcat, ps1 = _catalogs()
    res = photometric_calibration(psfcat, ps1, "zr")
    h = fits.Header()
    h["INFOBITS"] = int(InfoBits.HIGH_PHOTCAL_RMS | InfoBits.ASTROM_FAILED)    # stale photcal bit
    res.update_header(h)
    for key in ("NMATCHES", "MAGZP", "MAGZPUNC", "MAGZPRMS", "CLRCOEFF", "CLRCOUNC", "ZPCLRCOV", "PCOLOR",
                "ZPMED", "ZPAVG", "ZPRMSALL", "CLRMED", "CLRAVG", "CLRRMS", "CALNOTE1"):
        assert key in h, key
    assert h["INFOBITS"] == int(InfoBits.ASTROM_FAILED)
    assert h.comments["MAGZP"] == "Magnitude zero point for PSF-photometry [mag]"
    assert str(h.cards["MAGZP"])  # fits in a card without a warning


def test_colour_of_zi_is_r_minus_i():
    psfcat, ps1 = _catalogs()
    res = photometric_calibration(psfcat, ps1, "zi")
    assert res.pcolor == "R - i" and res.ok


def test_too_few_matches_is_flagged():
    psfcat, ps1 = _catalogs(n=40, outliers=0)
    res = photometric_calibration(psfcat[:3], ps1, "zr")
    assert not res.ok
    assert res.infobits & int(InfoBits.PHOTCAL_FAILED)
    assert res.infobits & int(InfoBits.FEW_PHOTCAL_MATCHES)
    assert res.infobits & int(InfoBits.FEW_PHOTCAL_CALIBRATORS)
    assert res.infobits & ~PHOTCAL_INFOBITS == 0


def test_few_calibrators_bit_follows_params():
    psfcat, ps1 = _catalogs(n=300, outliers=0)
    res = photometric_calibration(psfcat, ps1, "zr", params=PhotomParams(min_calibrators=1000))
    assert res.ok and res.infobits == int(InfoBits.FEW_PHOTCAL_CALIBRATORS)


def test_limiting_magnitude_from_catalog_uncertainties():
    """Noisy fluxes with Eddington-biased faint detections: the limit is still the true S/N-5 magnitude."""
    rng = np.random.default_rng(0)
    zp, sky, gain = 26.3, 25.0, 6.0
    true = 10 ** (-0.4 * (rng.uniform(15, 23, 20000) - zp))
    err = np.sqrt(sky**2 + true / gain)
    meas = true + rng.normal(0, err)
    detected = meas / np.sqrt(sky**2 + np.clip(meas, 0, None) / gain) > 4.0     # a catalog: detections only
    flux, flux_err = meas[detected], np.sqrt(sky**2 + meas[detected] / gain)
    f5 = 0.5 * (25 / gain + math.sqrt((25 / gain) ** 2 + 100 * sky**2))
    expected = zp - 2.5 * math.log10(f5)
    assert limiting_magnitude(flux, flux_err, zp) == pytest.approx(expected, abs=0.02)
    assert math.isnan(limiting_magnitude(flux[:5], flux_err[:5], zp))
    assert math.isnan(limiting_magnitude(flux, flux_err, float("nan")))


def test_empirical_limit_matches_catalog_limit():
    # a faint source's PSF-fit flux error is bkg_rms * sqrt(NEA): both limits agree
    zp, rms, nea = 26.3, 6.0, 12.0
    flux5 = 5 * rms * math.sqrt(nea)
    assert empirical_limiting_magnitude(zp, rms, nea) == pytest.approx(zp - 2.5 * math.log10(flux5), abs=1e-9)
