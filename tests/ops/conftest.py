"""A small simulated night with its history processed and references built, shared by the ops tests.

One field, one CCD at 256 px (twice the default star density, so that the small quadrants have enough
PSF and calibration stars), quadrant 3 only after calibration; four history nights processed night by
night (the references need three good epochs here), then tonight's three exposures left for the tests.
"""

import dataclasses
import shutil

import pytest

from ztfsds.config import Config
from ztfsds.ops import run_night
from ztfsds.products import ProductKey, ProductStore
from ztfsds.sim import simulate_night

SIZE = 256
QIDS = (3,)
TONIGHT = "20200924"


def small_config(**ops) -> Config:
    """Defaults, with references from 3 epochs of seeing up to 4" (the few history nights)."""
    config = Config()
    return dataclasses.replace(config, refimg=dataclasses.replace(config.refimg, min_epochs=3, max_seeing=4.0),
                               ops=dataclasses.replace(config.ops, **ops))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """(root, NightResult): history processed and the quadrant-3 reference built; tonight untouched."""
    root = tmp_path_factory.mktemp("ops-prepared") / "root"
    result = simulate_night(root, fields=[655], ccds=[13], nexp=3, filters=["zr"], size=SIZE, seed=11,
                            history_nights=4, nbias=2, nflat=2, density_scale=2.0)
    store = ProductStore(root)
    history = sorted({ProductKey.parse(p.name).night for p in result.science} - {TONIGHT})
    for night in history:
        run_night(root, night=night, executor="serial", qids=QIDS, report=False, match=False,
                  config=small_config())
    ref = ProductKey.parse(result.science[-1].name).quadrant(3).reference("refimg")
    assert store.exists(ref), "the shared fixture could not build its reference"
    return root, result


def tonight_raws(result):
    """Tonight's raw science files, in time order."""
    return sorted(p for p in result.science if ProductKey.parse(p.name).night == TONIGHT)


@pytest.fixture
def copy_prepared(prepared, tmp_path):
    """A fresh copy of the prepared root: ``copy_prepared(name) -> (root, result)``."""
    src, result = prepared

    def make(name="root"):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst, result
    return make
