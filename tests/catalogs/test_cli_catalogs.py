"""``ztfsds catalogs build`` on a simulated night."""

import astropy.units as u

from ztfsds import camera
from ztfsds.catalogs import query
from ztfsds.cli import main
from ztfsds.sim import simulate_night


def test_catalogs_build_command(tmp_path, capsys):
    simulate_night(tmp_path, fields=[655], ccds=[13], nexp=1, size=64, seed=3, nbias=1, nflat=1)
    assert main(["catalogs", "build", "--fields", "655", "--data", str(tmp_path)]) == 0
    assert "catalog partitions" in capsys.readouterr().out
    centre = camera.nominal_wcs(655, 13, 3).pixel_to_world(1535.5, 1539.5)
    stars = query(tmp_path, "gaia", centre, 2.0 * u.arcmin)
    assert len(stars) > 10
    # an unknown provider is a clear error (exit 2), not a traceback
    assert main(["catalogs", "build", "--fields", "655", "--data", str(tmp_path), "--provider", "nope"]) == 2
