"""Source matching and relative photometry of one quadrant-filter: 40 epochs x ~20,000 sources.

``match.match_relphot``: `ztfsds.match.match_epochs` (every epoch's PSF catalog against the ~28,000
reference sources within 1.5", new objects from the unmatched detections) then `ztfsds.match.calibrate`
(per-epoch offsets from the ensemble of constant stars by iterated weighted least squares, the
matchfile's per-object statistics, variable flags and Lomb-Scargle periods). The epochs are drawn by
`ztfsds.match.synthetic.synthetic_epochs` from a simulated low-latitude sky (0.35 deg radius, ~21,000
detections per epoch, 0.03 mag zero-point errors, 0.2 % outliers); the setup is not timed. The peer is
what a user would otherwise write for the matching alone: astropy's ``match_to_catalog_sky`` of each
epoch against the reference (no new objects, no one-detection-per-object rule, no calibration).
``match.hats_write``: the lightcurves of that matchfile written as a HATS catalog.
"""

import numpy as np

from ztfsds.bench import Case


def _times(n, nights, seed):
    rng = np.random.default_rng(seed)
    night = np.sort(rng.choice(nights, n, replace=False))
    return 2458300.5 + night + rng.uniform(0.15, 0.45, n)


def setup(size):
    from astropy.coordinates import SkyCoord

    from ztfsds.match.synthetic import synthetic_epochs
    from ztfsds.sim.sky import make_sky

    radius, nepoch = (0.35, 40) if size == "full" else (0.08, 10)
    sky = make_sky(SkyCoord(280.0, 10.0, unit="deg"), radius, seed=3, transient_window=(2458300, 2458600))
    return synthetic_epochs(sky, "zr", _times(nepoch, 3 * nepoch, seed=1), seed=2)


def ours(syn):
    from ztfsds.match import calibrate, match_epochs

    return calibrate(match_epochs(syn.epochs, reference=syn.reference, field=600, ccdid=8, qid=3,
                                  filtercode="zr"))


def astropy_xmatch(syn):
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ref = SkyCoord(np.asarray(syn.reference["ra"]), np.asarray(syn.reference["dec"]), unit="deg")
    matched = 0
    for cat, _ in syn.epochs:
        idx, sep, _ = SkyCoord(np.asarray(cat["ra"]), np.asarray(cat["dec"]), unit="deg").match_to_catalog_sky(ref)
        matched += int(np.count_nonzero(sep < 1.5 * u.arcsec))
    return matched


def setup_hats(size):
    return ours(setup(size))


def hats_write(mf):
    import tempfile

    from ztfsds.match import lightcurve_table, write_hats

    with tempfile.TemporaryDirectory() as tmp:
        write_hats(lightcurve_table(mf), f"{tmp}/lc")


CASES = [
    Case(name="match.match_relphot", setup=setup, ours=ours, peers={"astropy-xmatch": astropy_xmatch},
         description="match + relative photometry, 40 epochs x ~21k sources", repeat=3),
    Case(name="match.hats_write", setup=setup_hats, ours=hats_write,
         description="HATS lightcurve catalog of one matchfile", repeat=3),
]
