"""Benchmarks of `ztfsds.stats`: the master-bias stack and the overscan rows.

Every implementation does the same job: 3-sigma clipping about the median with the 1.4826 MAD scale, at
most 5 rounds, then the median of the survivors. Ours runs on one thread (``workers=1``).
"""

import numpy as np

from ztfsds.bench import Case
from ztfsds.stats import clipped_rows, clipped_stack

#: (frames, rows, columns) of a bias stack; 'full' is one ZTF readout quadrant.
STACK_SHAPES = {"full": (20, 3080, 3072), "small": (20, 256, 256)}
#: (rows, columns) of an overscan strip
STRIP_SHAPES = {"full": (3080, 30), "small": (256, 30)}
CLIP = dict(sigma_lower=3.0, sigma_upper=3.0, maxiters=5)


def bias_stack(size: str) -> np.ndarray:
    """Bias frames: 1000 ADU + 5 ADU noise, with ~0.05% of pixels hit by 50-500 sigma cosmic rays."""
    rng = np.random.default_rng(20180317)
    nframe, ny, nx = STACK_SHAPES[size]
    cube = np.empty((nframe, ny, nx), dtype=np.float32)
    for frame in cube:      # frame by frame, without float64 temporaries of the whole stack
        rng.standard_normal(out=frame, dtype=np.float32)
        frame *= 5.0
        frame += 1000.0
        hits = rng.integers(0, ny * nx, size=ny * nx // 2000)
        frame.flat[hits] += rng.uniform(250.0, 2500.0, size=hits.size).astype(np.float32)
    return cube


def overscan_strip(size: str) -> np.ndarray:
    """An overscan strip: a bias level drifting along the rows, 5 ADU noise, a few hot values."""
    rng = np.random.default_rng(20180318)
    ny, nx = STRIP_SHAPES[size]
    strip = 1000.0 + 3.0 * np.sin(np.arange(ny) / 300.0)[:, None] + rng.normal(0.0, 5.0, (ny, nx))
    hits = rng.integers(0, ny * nx, size=ny * nx // 200)
    strip.flat[hits] += rng.uniform(100.0, 5000.0, size=hits.size)
    return strip.astype(np.float32)


# --- the master-bias stack ------------------------------------------------------------------------

def stack_ours(cube):
    return clipped_stack(cube, combine="median", workers=1, **CLIP).data


def stack_ccdproc_clipped(cube):
    import ccdproc
    from astropy.nddata import CCDData
    from astropy.stats import mad_std

    combiner = ccdproc.Combiner([CCDData(frame, unit="adu") for frame in cube])
    combiner.sigma_clipping(low_thresh=3.0, high_thresh=3.0, func=np.ma.median, dev_func=mad_std)
    return combiner.median_combine()


def stack_ccdproc_median(cube):
    import ccdproc
    from astropy.nddata import CCDData

    return ccdproc.Combiner([CCDData(frame, unit="adu") for frame in cube]).median_combine()


def stack_astropy(cube):
    from astropy.stats import sigma_clip

    clipped = sigma_clip(cube, axis=0, cenfunc="median", stdfunc="mad_std", masked=False, **CLIP)
    return np.nanmedian(clipped, axis=0)


def stack_numpy(cube):
    from ztfsds._ext import reference

    return reference.clipped_stack(cube, combine="median", **CLIP)[0]


# --- the overscan rows ----------------------------------------------------------------------------

def rows_ours(strip):
    return clipped_rows(strip, combine="median", workers=1, **CLIP).data


def rows_astropy(strip):
    from astropy.stats import sigma_clip

    clipped = sigma_clip(strip, axis=1, cenfunc="median", stdfunc="mad_std", masked=False, **CLIP)
    return np.nanmedian(clipped, axis=1)


def rows_numpy(strip):
    from ztfsds._ext import reference

    return reference.clipped_rows(strip, combine="median", **CLIP)[0]


CASES = [
    Case(
        name="calib.stack_median20",
        description="clipped median of 20 bias frames of one quadrant (3080x3072 float32)",
        setup=bias_stack,
        ours=stack_ours,
        peers={
            "ccdproc (clip+median)": stack_ccdproc_clipped,
            "ccdproc (median only)": stack_ccdproc_median,
            "astropy sigma_clip": stack_astropy,
            "numpy reference": stack_numpy,
        },
    ),
    Case(
        name="calib.overscan_rows",
        description="clipped median of each row of a 3080x30 overscan strip",
        setup=overscan_strip,
        ours=rows_ours,
        peers={"astropy sigma_clip": rows_astropy, "numpy reference": rows_numpy},
        repeat=20,
    ),
]
