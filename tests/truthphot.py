"""Aperture photometry of clean simulated stars against the truth (shared by the simulator and
calibration tests; not a test module).

Independent of the pipeline: photutils apertures, astropy Moffat2D wings of the neighbours, the true
sky plane of the truth header. A star is clean when no truth-mask (or product-mask) pixel lies within
``radius + 2`` px, no galaxy brighter than the noise lies within 25 px, and the wings of the other
sources put less than half a sigma into the aperture (that light is subtracted).
"""

import numpy as np
from astropy.modeling.models import Moffat2D
from photutils.aperture import CircularAperture, aperture_photometry


def moffat_in_aperture(fwhm, dx, dy, radius, beta=3.0):
    """Fractions of unit circular Moffats at offsets (dx, dy) inside a centred circle."""
    g = np.arange(-radius + 0.125, radius, 0.25)
    xx, yy = np.meshgrid(g, g)
    inside = np.hypot(xx, yy) < radius
    px, py = xx[inside], yy[inside]
    out = []
    for f, x0, y0 in zip(np.atleast_1d(fwhm), np.atleast_1d(dx), np.atleast_1d(dy)):
        gamma = f / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        out.append(float(Moffat2D((beta - 1.0) / (np.pi * gamma**2), x0, y0, gamma, beta)(px, py).sum() * 0.25**2))
    return np.array(out)


def clean_star_pulls(img, var, truth, hdr, mask, *, radius=10.0, product_mask=None, mag_range=(14.0, 19.0),
                     response=None, flat=None, pedestal=0.0):
    """(ratios, pulls, variance ratios) of the clean stars of one quadrant.

    ``img`` is the calibrated image [DN], ``var`` its variance image (or None), ``truth``/``hdr``/``mask``
    the truth table, header and MASK image of the quadrant. The truth is in incident electrons: a pixel
    detects ``response`` times them (the true flat; default 1) and the image holds detected electrons
    / (true gain x ``flat``), ``flat`` being the flat the image was divided by (default: the true flat,
    i.e. the image is in DN of the true gain with the response taken out). ``pedestal`` [image units]
    is added to the true sky (e.g. the crosstalk of the other amplifiers' sky when it is not removed).
    """
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    gain, rn = hdr["GAIN"], hdr["READNOI"]
    response = np.ones((ny, nx)) if response is None else np.asarray(response, float)
    flat = response if flat is None else np.asarray(flat, float)
    scale = response / (gain * flat)  # image units per incident electron
    u_, v_ = (xx - (nx - 1) / 2) / nx, (yy - (ny - 1) / 2) / ny
    sky_e = hdr["SKYE"] * (1.0 + hdr["SKYGRADX"] * u_ + hdr["SKYGRADY"] * v_)
    sky = sky_e * scale + pedestal
    edge = radius + 10
    stars = truth[(truth["kind"] == "star") & (truth["mag"] > mag_range[0]) & (truth["mag"] < mag_range[1])
                  & (truth["x"] > edge) & (truth["x"] < nx - 1 - edge) & (truth["y"] > edge)
                  & (truth["y"] < ny - 1 - edge)]
    ratios, pulls, var_ratios = [], [], []
    for s in stars:
        x0, y0 = float(s["x"]), float(s["y"])
        near = np.hypot(xx - x0, yy - y0) < radius + 2
        if mask[near].any() or (product_mask is not None and product_mask[near].any()):
            continue
        iy, ix = int(round(y0)), int(round(x0))
        k, det = scale[iy, ix], response[iy, ix]  # image units per incident e-, detected per incident
        true_dn = float(s["flux_e"]) * k
        # noise of the detected electrons (star + sky + read noise), in image units
        sigma = k / det * np.sqrt(float(s["flux_e"]) * det + np.pi * radius**2 * (sky_e[iy, ix] * det + rn**2))
        others = truth[(truth["source_id"] != s["source_id"]) & (np.hypot(truth["x"] - x0, truth["y"] - y0) < 40)]
        others = others[np.asarray(others["flux_e"]) * k > 0.02 * sigma]
        if np.any((others["kind"] == "galaxy") & (np.hypot(others["x"] - x0, others["y"] - y0) < 25)
                  & (np.asarray(others["flux_e"]) * k > sigma)):
            continue
        contamination = float(np.sum(np.asarray(others["flux_e"]) * k * moffat_in_aperture(
            np.asarray(others["fwhm"]), np.asarray(others["x"]) - x0, np.asarray(others["y"]) - y0, radius)))
        if contamination > 0.5 * sigma:
            continue
        ap = CircularAperture((x0, y0), r=radius)
        flux = float(aperture_photometry(img - sky, ap)["aperture_sum"][0]) - contamination
        expected = true_dn * float(moffat_in_aperture(float(s["fwhm"]), 0.0, 0.0, radius)[0])
        ratios.append(flux / expected)
        pulls.append((flux - expected) / sigma)
        if var is not None:
            var_ratios.append(float(aperture_photometry(var, ap)["aperture_sum"][0]) / sigma**2)
    return np.array(ratios), np.array(pulls), np.array(var_ratios)


def check_pulls(ratios, pulls, var_ratios=(), *, min_stars=20):
    """Assert that the measured fluxes scatter about the truth as the noise; print the figures."""
    z = np.asarray(pulls)
    line = f"\n{len(z)} stars: median measured/true {np.median(ratios):.4f}, pulls mean {z.mean():.2f} std {z.std():.2f}"
    if len(var_ratios):
        line += f"; aperture variance / true {np.median(var_ratios):.3f}"
    print(line)
    assert len(z) >= min_stars
    assert abs(float(np.median(ratios)) - 1.0) < 0.01
    assert 0.7 < np.std(z) < 1.3 and abs(np.median(z)) < 0.4
    if len(var_ratios):
        assert abs(np.median(var_ratios) - 1.0) < 0.05
