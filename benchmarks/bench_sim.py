"""Simulator: one raw CCD (4 quadrants) of a science exposure, the budget is 4 s at full size.

There is no peer library that simulates ZTF raw data; the case records our time (the simulator issue's
speed target) and splits it into rendering and readout.
"""

import datetime as dt

import numpy as np

from ztfsds.bench import Case

SHAPES = {"full": None, "small": (256, 256)}


def _setup(size):
    from ztfsds import camera
    from ztfsds.sim import conditions, instrument, night

    shape = SHAPES[size] or camera.QUADRANT_SHAPE
    exposure = conditions.make_schedule([655], night=dt.date(2020, 9, 24), filters=("zr",), seed=3)[0]
    cam = instrument.make_camera(3, shape=shape, ccdids=[13])
    sky = night.sky_for_ccd(655, 13, seed=3, shape=shape)
    cam.flat(13, 1, "zr")  # one-off per CCD and filter: not part of an exposure's cost
    return exposure, cam, sky


def _raw_ccd(data):
    from ztfsds.sim import night

    exposure, cam, sky = data
    return night.simulate_exposure_ccd(exposure, 13, sky, cam, rng=np.random.default_rng(0))


def _readout_only(data):
    from ztfsds.sim import raw

    exposure, cam, sky = data
    electrons = {q: np.full(cam.shape, 900.0, np.float32) for q in (1, 2, 3, 4)}
    return raw.electrons_to_raw(electrons, 13, cam, "zr", rng=np.random.default_rng(0))


CASES = [
    Case(name="sim.raw_ccd", setup=_setup, ours=_raw_ccd,
         description="simulate one raw CCD of field 655 zr (sky to r = 24, 4 quadrants)", repeat=3),
    Case(name="sim.readout_ccd", setup=_setup, ours=_readout_only,
         description="camera readout of one CCD (flat, noise, CRs, crosstalk, non-linearity, ADC)", repeat=3),
]
