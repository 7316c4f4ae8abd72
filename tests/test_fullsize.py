"""Full-size (3072x3080 quadrant) runs of the foundation's kernels; run with ``pytest --slow``."""

import numpy as np
import pytest

from ztfsds import camera
from ztfsds._ext import reference
from ztfsds.stats import clipped_stack


@pytest.mark.slow
def test_fullsize_bias_stack_matches_reference():
    """20 full-size bias frames with cosmic rays: the Cython combine equals the numpy reference."""
    ny, nx = camera.QUADRANT_SHAPE
    rng = np.random.default_rng(7)
    cube = rng.normal(500.0, 9.0 / 6.0, size=(20, ny, nx)).astype(np.float32)
    hits = rng.integers(0, cube.size, 20 * 3000)
    cube.reshape(-1)[hits] += 5000.0
    result = clipped_stack(cube, combine="median", workers=2)
    assert result.data.shape == (ny, nx)
    assert abs(float(np.median(result.data)) - 500.0) < 0.01
    assert float(result.data.max()) < 520.0  # no cosmic ray survives
    rows = slice(1000, 1040)
    ref = reference.clipped_stack(cube[:, rows], combine="median")
    np.testing.assert_allclose(result.data[rows], ref[0], rtol=1e-5)
