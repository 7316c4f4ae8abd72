"""The astrometric solution of one quadrant: asterism match from a bad prior, cubic TPV fit, QA.

The data are stars on the WCS that SCAMP fitted to a real ZTF quadrant (the TPV header in
``tests/data/real_sciimg_header.txt``): 3000 reference stars (a real quadrant has ~3300 astrometric
matches, ASTROMN), detections of 80 % of them with 0.03 px of noise plus 20 % spurious ones, and a
TAN prior 2' and 0.5 deg off. Ours (`ztfsds.astrom.solve_wcs`) does the whole job: the asterism
match from the prior, four rounds of cross-match and clipped cubic fit, the TPV header and the QA.

No installed library does the same job. The peers each do one part of it, so their ratio is a
comparison of that part against our whole:

* ``astroalign`` (if installed): ``find_transform`` between the detections and the reference stars
  projected with the prior: the triangle match only.
* ``astropy fit_wcs_from_points``: the SIP fit (degree 3, the same cubic) given the true pairs:
  the fit only, without matching or clipping.
"""

from pathlib import Path

import numpy as np

from ztfsds.bench import Case

HEADER = Path(__file__).resolve().parent.parent / "tests" / "data" / "real_sciimg_header.txt"
SIZES = {"full": ((3072, 3080), 3000), "small": ((256, 256), 60)}


def _setup(size):
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    from ztfsds.camera import tangent_deproject

    (nx, ny), n = SIZES[size]
    truth = WCS(fits.Header.fromtextfile(HEADER))
    if size == "small":
        truth.wcs.crpix = truth.wcs.crpix - [(3072 - nx) // 2, (3080 - ny) // 2]
        truth.pixel_shape = (nx, ny)
        truth.wcs.set()
    rng = np.random.default_rng(20200924)
    x, y = rng.uniform(-0.5, nx - 0.5, n), rng.uniform(-0.5, ny - 0.5, n)
    mag = 14.0 + 7.0 * rng.power(2.0, n)
    ra, dec = truth.all_pix2world(x, y, 0)
    ref = Table({"ra": ra, "dec": dec, "ra_error": np.full(n, 0.5), "dec_error": np.full(n, 0.5),
                 "phot_g_mean_mag": mag})
    keep = np.flatnonzero(rng.random(n) > 0.2)
    ns = len(keep) // 5
    det = Table({"x": np.r_[x[keep] + rng.normal(0, 0.03, len(keep)), rng.uniform(0, nx - 1, ns)],
                 "y": np.r_[y[keep] + rng.normal(0, 0.03, len(keep)), rng.uniform(0, ny - 1, ns)],
                 "flux": 10 ** (-0.4 * (np.r_[mag[keep], 14.0 + 7.0 * rng.power(2.0, ns)] - 25.0)),
                 "x_err": np.full(len(keep) + ns, 0.03), "y_err": np.full(len(keep) + ns, 0.03)})
    prior = WCS(naxis=2)
    prior.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    prior.wcs.crpix = truth.wcs.crpix
    prior.wcs.crval = tangent_deproject(1.2 / 60, 1.6 / 60, *truth.wcs.crval)
    t = np.radians(0.5)
    prior.wcs.cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ truth.wcs.cd
    prior.pixel_shape = (nx, ny)
    prior.wcs.set()
    pairs = (det["x"][: len(keep)], det["y"][: len(keep)], ra[keep], dec[keep])
    return det, ref, prior, pairs


def solve_ours(data):
    from ztfsds.astrom.solve import solve_wcs

    det, ref, prior, _ = data
    result = solve_wcs(det, ref, prior)
    if not result.ok:
        raise RuntimeError(result.message)
    return result


def astroalign_match(data):
    import astroalign

    det, ref, prior, _ = data
    order = np.argsort(-np.asarray(det["flux"]))[:60]
    px, py = prior.all_world2pix(ref["ra"], ref["dec"], 0)
    ref_order = np.argsort(np.asarray(ref["phot_g_mean_mag"]))[:90]
    return astroalign.find_transform(np.column_stack([det["x"][order], det["y"][order]]),
                                     np.column_stack([px[ref_order], py[ref_order]]))


def astropy_fit(data):
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import fit_wcs_from_points

    _, _, prior, (x, y, ra, dec) = data
    return fit_wcs_from_points((np.asarray(x), np.asarray(y)), SkyCoord(ra, dec, unit="deg"),
                               proj_point=SkyCoord(*prior.wcs.crval, unit="deg"), projection="TAN", sip_degree=3)


CASES = [
    Case(
        name="astrom.solve",
        description="astrometric solution of a quadrant (3000 stars, 20% missing, 20% spurious, prior 2' and "
                    "0.5 deg off): asterism match, clipped cubic TPV fit, QA; peers do only a part of it",
        setup=_setup,
        ours=solve_ours,
        peers={"astroalign find_transform (match only)": astroalign_match,
               "astropy fit_wcs_from_points SIP 3 (fit only)": astropy_fit},
        repeat=5,
    ),
]
