"""A small simulated night and its calibrator catalogs, shared by the catalog tests (built once)."""

import pytest

from ztfsds.catalogs import build_catalogs
from ztfsds.sim import simulate_night

#: Field 655, CCD 13, 256 x 256 px quadrants: the sky of the CCD (~0.6 deg around it) is exported.
NIGHT_KWARGS = dict(fields=[655], ccds=[13], nexp=1, filters=["zr"], size=256, seed=1, nbias=1, nflat=1)


@pytest.fixture(scope="session")
def sim_night(tmp_path_factory):
    """The simulated night (NightResult), with nothing built from it."""
    return simulate_night(tmp_path_factory.mktemp("catnight"), **NIGHT_KWARGS)


@pytest.fixture(scope="session")
def built_night(sim_night):
    """The simulated night with its 'gaia' and 'ps1' catalogs built (do not modify them)."""
    paths = build_catalogs(sim_night.root, [655])
    return sim_night, paths
