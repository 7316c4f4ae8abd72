"""Realism against the real IPAC quadrant ztf_20200924431759_000655_zr_c13_o_q3 (full size, slow).

The real image (field 655, zr, CCD 13 q3, b = -17.5, airmass 1.02, moon down, 30 s) measured with
sep 1.4 (default background, 5 sigma on the global RMS): median 157.7 DN, robust sigma 6.56 DN,
7,741 sources; bright-star FWHM ~1.9 px. Here a simulated quadrant under the same conditions is
calibrated by independent code (overscan rows, published non-linearity, the true flat) and measured
the same way. Open: a Moffat or Gaussian fit to the real image's r 14.5-16 stars gives 1.2-1.3 px
(close to its header SEEING 1.24), not the ~1.9 px quoted in the simulator issue; which estimator the
1.9 px came from is for the photometry issue to settle.

The simulated camera has the measured ZTF gain and read noise (5.8 e-/DN, 10.3 e-; the headers say the
nominal 6 and 9): with the same sky brightness and zero point the simulated quadrant's robust noise is
5.97 DN (-9 %), its pixel-to-pixel noise 5.72 DN against the real 6.06 DN. The real image has more
white noise than sky + read noise at either gain explain; that remainder is not modelled.
"""

import dataclasses
import datetime as dt

import numpy as np
import pytest

from ztfsds import camera
from ztfsds.sim import conditions, instrument, night, optics

REAL_MEDIAN = 157.7
REAL_ROBUST_SIGMA = 6.56
REAL_SEP_COUNT = 7741
REAL_MAGZP = 26.285


@pytest.fixture(scope="module")
def simulated_q3():
    exposure = conditions.make_schedule([655], night=dt.date(2020, 9, 24), filters=("zr",), seed=3,
                                        weather="clear")[0]
    sky_mag = REAL_MAGZP - 2.5 * np.log10(REAL_MEDIAN / camera.PIXEL_SCALE.value**2)
    # seeing such that the delivered PSF at the quadrant centre is the real image's 1.9 px
    per_arcsec = float(np.asarray(optics.psf_params(13, 3, 1535.5, 1539.5, 1.0, 1.02).fwhm))
    exposure = dataclasses.replace(exposure, airmass=1.02, seeing=1.9 / per_arcsec, sky_mag=sky_mag,
                                   zp=REAL_MAGZP, transparency=1.0, sky_gradient=(0.0, 0.0))
    cam = instrument.make_camera(3, ccdids=[13])
    sky = night.sky_for_ccd(655, 13, seed=3)
    quads, overs, truth, _ = night.simulate_exposure_ccd(exposure, 13, sky, cam, rng=np.random.default_rng(1))
    raw = quads[3].astype(np.float32)
    bias = np.median(overs[3][:, 5:25].astype(np.float32), axis=1)[:, None]
    a, b = camera.nonlinearity_coefficients(13, 3, dt.date(2020, 9, 24))
    image = (camera.linearize(raw - bias, a, b) / cam.flat(13, 3, "zr")).astype(np.float32)
    return image, truth[3]


@pytest.mark.slow
def test_median_sky(simulated_q3):
    image, _ = simulated_q3
    assert abs(np.median(image) / REAL_MEDIAN - 1) < 0.10


@pytest.mark.slow
def test_robust_noise(simulated_q3):
    image, _ = simulated_q3
    med = np.median(image)
    sigma = 1.4826 * np.median(np.abs(image - med))
    assert abs(sigma / REAL_ROBUST_SIGMA - 1) < 0.10


@pytest.mark.slow
def test_sep_source_count(simulated_q3):
    sep = pytest.importorskip("sep")
    image, _ = simulated_q3
    bkg = sep.Background(image)
    objects = sep.extract(image - bkg, 5.0, err=bkg.globalrms)
    assert abs(len(objects) / REAL_SEP_COUNT - 1) < 0.25
