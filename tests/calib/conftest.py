"""A simulated night shared by the calibration tests (built once per session)."""

import pytest

from ztfsds.sim import simulate_night

#: CCD 13, 512 x 512 px quadrants, 20 biases, 10 dome flats at 50,000 e-, one exposure each of three
#: dense fields (enough bright stars to measure the crosstalk).
NIGHT_KWARGS = dict(fields=[655, 656, 657], ccds=[13], nexp=1, filters=["zr"], size=512, seed=1,
                    nbias=20, nflat=10, flat_level=50000.0, density_scale=3.0)


@pytest.fixture(scope="session")
def calib_night(tmp_path_factory):
    return simulate_night(tmp_path_factory.mktemp("calibnight"), **NIGHT_KWARGS)
