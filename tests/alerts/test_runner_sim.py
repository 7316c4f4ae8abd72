"""Acceptance (issue 8): the history of an object in a simulated multi-night run holds exactly its earlier
detections and limits. Simulated field (10 history nights + 2 exposures, 320 px quadrant) through calib ->
astrom -> photom -> reference -> subtract; a transient injected into some epochs; run_alerts in time order."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from ztfsds.alerts import read_alerts, validate
from ztfsds.alerts.runner import known_asteroids_path, run_alerts
from ztfsds.astrom import run_astrom
from ztfsds.calib import build_library, run_calib
from ztfsds.catalogs import build_catalogs
from ztfsds.config import Config, RefimgParams
from ztfsds.photom import run_photom
from ztfsds.photom.forced import psf_from_hdulist
from ztfsds.products import ProductKey, ProductStore, read_image
from ztfsds.refimg import build_reference
from ztfsds.sim import simulate_night
from ztfsds.subtract import run_subtract
from ztfsds.subtract.fakes import inject_point_sources

SIZE = 320
NIGHT = "20200924"
CONFIG = Config(refimg=RefimgParams(min_epochs=8))
XY = (161.3, 150.6)


@pytest.mark.slow
def test_history_in_simulated_multi_night_run(tmp_path):
    result = simulate_night(tmp_path, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=6,
                            history_nights=10, nbias=3, nflat=3)
    store = ProductStore(tmp_path)
    assert known_asteroids_path(store).is_file()
    build_library(store, NIGHT)
    build_catalogs(store, [655], ccds=[13])
    keys = []
    for raw in result.science:
        assert all(s.ok for s in run_calib(raw, store))
        key = ProductKey.parse(raw.name).quadrant(3, "sciimg")
        assert run_astrom(key, store).ok
        run_photom(key, store)
        keys.append(key)
    assert build_reference(store, 655, 13, 3, "zr", CONFIG).ok
    jds = [float(store.read_header(k)["OBSJD"]) for k in keys]
    order = np.argsort(jds)
    keys = [keys[i] for i in order][-6:]          # the last 6 epochs (within 30 days of the last)
    jds = sorted(jds)[-6:]
    detected = [True, False, True, True, False, True]
    # the transient at a fixed sky position (each exposure's pointing differs)
    r, d = WCS(store.read_header(keys[0])).all_pix2world([XY[0]], [XY[1]], 0)
    ra, dec = float(r[0]), float(d[0])
    for key, det in zip(keys, detected):
        if det:
            sci, hdr = read_image(store.path(key))
            with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
                psf = psf_from_hdulist(hdul)
            flux = 10 ** (-0.4 * (18.5 - hdr["MAGZP"]))
            x, y = WCS(hdr).all_world2pix([ra], [dec], 0)
            new = inject_point_sources(sci, psf, x, y, [flux], gain=hdr["GAIN"], rng=np.random.default_rng(1))
            store.write_fits(key, fits.PrimaryHDU(new, hdr))
        assert run_subtract(key, store, CONFIG).ok
    packets = []
    for key in keys:
        status = run_alerts(key, store, CONFIG)
        assert status.ok, str(status)
        packets.append(list(read_alerts(status.outputs[0])))
    for pk in packets:
        for p in pk:
            validate(p)

    def at(pk):
        out = [p for p in pk if np.hypot((p["candidate"]["ra"] - ra) * np.cos(np.radians(dec)),
                                         p["candidate"]["dec"] - dec) * 3600 < 1.5 and p["candidate"]["isdiffpos"] == "t"]
        return out[0] if out else None

    mine = [at(pk) for pk in packets]
    assert [m is not None for m in mine] == detected
    assert len({m["objectId"] for m in mine if m is not None}) == 1
    last = mine[-1]
    prv = last["prv_candidates"]
    det = sorted(r["candid"] for r in prv if r["candid"] is not None)
    assert det == sorted(m["candid"] for m in mine[:-1] if m is not None)
    lim = sorted(r["pid"] for r in prv if r["candid"] is None)
    assert lim == sorted(pk[0]["candidate"]["pid"] for pk, d in zip(packets[:-1], detected[:-1]) if not d)
    assert all(jds[-1] - 30 <= r["jd"] < jds[-1] for r in prv)
    c = last["candidate"]
    assert c["ndethist"] == sum(detected) and c["ncovhist"] >= len(keys)
    assert len(last["fp_hists"]) == len(keys) - 1
    print(f"\nlast packet of {last['objectId']}: {len(det)} detections, {len(lim)} limits, "
          f"{len(last['fp_hists'])} fp_hists, sgscore1 {c['sgscore1']}, distpsnr1 {c['distpsnr1']}")
