"""Simulated epoch catalogs shared by the match tests (built once per session)."""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from ztfsds.match import calibrate, match_epochs
from ztfsds.match.synthetic import synthetic_epochs
from ztfsds.sim.sky import make_sky

FIELD, CCDID, QID, FILTERCODE = 600, 8, 3, "zr"
QUADRANT = dict(field=FIELD, ccdid=CCDID, qid=QID, filtercode=FILTERCODE)


def survey_times(n, nights, seed):
    """``n`` exposure times [JD] on distinct random nights, at random times within an 8-hour night."""
    rng = np.random.default_rng(seed)
    night = np.sort(rng.choice(nights, n, replace=False))
    return 2458300.5 + night + rng.uniform(0.15, 0.45, n)


@pytest.fixture(scope="session")
def sky():
    # a low-latitude patch (b ~ 7 deg): ~50,000 stars, 59 variables
    return make_sky(SkyCoord(280.0, 10.0, unit="deg"), 0.3, seed=3, transient_window=(2458300, 2458600))


@pytest.fixture(scope="session")
def survey(sky):
    """100 epochs over 300 nights with 0.03 mag zero-point errors and 0.2 % outliers."""
    return synthetic_epochs(sky, FILTERCODE, survey_times(100, 300, seed=1), seed=2, field=FIELD, ccdid=CCDID,
                            qid=QID)


@pytest.fixture(scope="session")
def matched(survey):
    return match_epochs(survey.epochs, reference=survey.reference, **QUADRANT)


@pytest.fixture(scope="session")
def calibrated(matched):
    return calibrate(matched)


@pytest.fixture(scope="session")
def small_survey():
    """40 epochs of a small patch with a shallow reference (so that new objects form)."""
    sky = make_sky(SkyCoord(280.0, 10.0, unit="deg"), 0.08, seed=3, transient_window=(2458300, 2458400))
    return synthetic_epochs(sky, FILTERCODE, survey_times(40, 100, seed=1), seed=2, ref_depth=0.0, field=FIELD,
                            ccdid=CCDID, qid=QID)
