"""Per-exposure calibration of a raw quadrant: ztfsds against ccdproc doing the same steps.

The frame is a simulated raw quadrant (sky, stars, cosmic rays, defects, non-linearity, bias) with its
overscan strip, and the calibration from the simulated camera's truth. Both implementations do:
floating bias from the overscan (per-row level, Legendre fit of order 3 along the rows), master bias,
saturation flags, non-linearity, variance, flat field, bad-pixel mask, cosmic-ray flags. The peer
uses ccdproc's ``subtract_overscan`` (row medians of columns 5-25 and a ``Legendre1D(3)`` model),
``subtract_bias``, numpy for the non-linearity and the saturation flags, ``create_deviation``,
``flat_correct`` and ``cosmicray_lacosmic`` (astroscrappy's L.A.Cosmic) with ``niter=1``: one
detection pass, like ours (its default of 4 passes takes about 3x longer). Ours runs on one thread
(``workers=1``); its crosstalk step is not timed here (ccdproc has none) but is in ``calib.ccd``.
"""

import numpy as np

from ztfsds.bench import Case

SHAPES = {"full": None, "small": (256, 256)}
SATURATION_MARGIN = 0.98


def _setup(size):
    from ztfsds import camera
    from ztfsds.calib import CCDCalibration, QuadrantCalibration
    from ztfsds.sim.instrument import make_camera
    from ztfsds.sim.optics import render_sources
    from ztfsds.sim.raw import electrons_to_raw

    shape = SHAPES[size] or camera.QUADRANT_SHAPE
    cam = make_camera(3, shape=shape, ccdids=[13])
    rng = np.random.default_rng(20200924)
    ny, nx = shape
    electrons = {}
    nstar = int(3000 * ny * nx / (3080 * 3072))
    for q in camera.QIDS:
        e = np.full(shape, 900.0, np.float32)
        render_sources(shape, rng.uniform(0, nx, nstar), rng.uniform(0, ny, nstar),
                       10 ** rng.uniform(3.5, 6.5, nstar), fwhm=2.0, out=e)
        electrons[q] = e
    quads, overscans, _ = electrons_to_raw(electrons, 13, cam, "zr", rng=np.random.default_rng(0))
    quadrants = {}
    for q in camera.QIDS:
        ch = cam.channel(13, q)
        flat = cam.response(13, q, "zr")
        flat[flat <= 0] = 1.0
        quadrants[q] = QuadrantCalibration(
            ccdid=13, qid=q, filtercode="zr", bias=cam.bias_structure(13, q), flat=flat,
            bpm=cam.defects(13, q).astype(np.int16), gain=ch.gain, read_noise=ch.read_noise,
            nonlin_a=ch.nonlin_a, nonlin_b=ch.nonlin_b,
            saturation=camera.ADC_MAX - ch.bias_level - ch.bias_offset)
    ccdcal = CCDCalibration(ccdid=13, filtercode="zr", night="20200924", quadrants=quadrants,
                            crosstalk=cam.crosstalk(13))
    return quads, overscans, ccdcal


def quadrant_ours(data):
    from ztfsds.calib.apply import calibrate_quadrant
    from ztfsds.config import CalibParams

    quads, overscans, ccdcal = data
    return calibrate_quadrant(quads[1], overscans[1], ccdcal.quadrants[1], params=CalibParams(workers=1))


def quadrant_ccdproc(data):
    import astropy.units as u
    import ccdproc
    from astropy.modeling.models import Legendre1D
    from astropy.nddata import CCDData

    from ztfsds.camera import ADC_MAX

    quads, overscans, ccdcal = data
    qcal = ccdcal.quadrants[1]
    raw = quads[1]
    ccd = CCDData(raw.astype(np.float32), unit="adu")
    ccd = ccdproc.subtract_overscan(ccd, overscan=CCDData(overscans[1][:, 5:25].astype(np.float32), unit="adu"),
                                    overscan_axis=1, median=True, model=Legendre1D(3))
    ccd = ccdproc.subtract_bias(ccd, CCDData(qcal.bias, unit="adu"))
    x = ccd.data
    saturated = (raw >= ADC_MAX) | (x >= SATURATION_MARGIN * qcal.saturation)
    ccd.data = x / (qcal.nonlin_a * x * x + qcal.nonlin_b * x + 1.0)
    ccd = ccdproc.create_deviation(ccd, gain=qcal.gain * u.electron / u.adu, readnoise=qcal.read_noise * u.electron)
    ccd = ccdproc.flat_correct(ccd, CCDData(qcal.flat, unit=""), norm_value=1.0)
    ccd.mask = (qcal.bpm != 0) | saturated
    return ccdproc.cosmicray_lacosmic(ccd, sigclip=5.0, objlim=5.0, gain=qcal.gain, readnoise=qcal.read_noise,
                                      satlevel=np.inf, niter=1, gain_apply=False)


def ccd_ours(data):
    from ztfsds.calib.apply import calibrate_ccd
    from ztfsds.config import CalibParams

    quads, overscans, ccdcal = data
    return calibrate_ccd(quads, overscans, ccdcal, params=CalibParams(workers=1))


CASES = [
    Case(
        name="calib.quadrant",
        description="calibrate one raw quadrant (3080x3072 + 3080x30 overscan): overscan, bias, saturation, "
                    "non-linearity, variance, flat, bad pixels, cosmic rays",
        setup=_setup,
        ours=quadrant_ours,
        peers={"ccdproc (lacosmic niter=1)": quadrant_ccdproc},
        repeat=3,
    ),
    Case(
        name="calib.ccd",
        description="calibrate the four quadrants of a raw CCD, with crosstalk removal",
        setup=_setup,
        ours=ccd_ours,
        repeat=3,
    ),
]
