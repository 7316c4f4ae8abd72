"""The nightly report on a small synthetic night: its numbers, partial nights, and rendering in Chromium.

The night: 4 quadrant-images of field 655 (3 with a difference image and candidates carrying cutouts,
1 without a reference), jobs with a data failure, an infrastructure error that a retry fixed and a
corrupt raw file, alert packets, and simulator truth with 2 detectable transients of which 1 has a
candidate on it.
"""

import datetime as dt
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from archive.synth import JD0, write_candidates, write_quadrant, write_reference
from ztfsds.archive import connect, ingest_candidates, ingest_quadrant, ingest_reference, migrate, record_job, \
    upsert_rows
from ztfsds.ops.report import cause_of, report_path, summarize_night, write_report
from ztfsds.products import ProductKey, ProductStore, candid

NIGHT = "20200924"
T0 = dt.datetime(2020, 9, 24, 10, 0, 0, tzinfo=dt.timezone.utc)
SEEING = [1.8, 2.0, 2.2, 2.6]
STAGES = ("calib", "astrom", "photom", "subtract")


def _iso(seconds):
    return (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _add_cutouts(store, key, n, seed):
    """Append a CUTOUTS HDU (n, 3, 63, 63) to a candidates product: a Gaussian on noise per stamp."""
    path = store.path(key.with_suffix("candidates"))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:63, :63]
    star = 500.0 * np.exp(-((xx - 31) ** 2 + (yy - 31) ** 2) / 8.0)
    cubes = rng.normal(100.0, 5.0, (n, 3, 63, 63)).astype(np.float32)
    cubes[:, 0] += star
    cubes[:, 2] += star - 100.0
    with fits.open(path) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul] + [fits.ImageHDU(cubes, name="CUTOUTS")])
    store.write_fits(key.with_suffix("candidates"), hdus)


def _truth(store, key, rows):
    """A simulator truth file for the raw file of ``key`` with one table (``Q<qid>``)."""
    raw = ProductKey.raw(key.filefracday, key.field, key.filtercode, key.ccdid)
    t = Table(rows=rows, names=("source_id", "kind", "ra", "dec", "mag", "on_image"),
              dtype=(np.int64, "U9", float, float, float, bool))
    hdu = fits.table_to_hdu(t)
    hdu.name = f"Q{key.qid}"
    path = store.root / "sim" / "truth" / NIGHT / (raw.filename[:-5] + "_truth.fits")
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def _make_night(root, *, with_db=True):
    store = ProductStore(root)
    keys, cands = [], {}
    for k, seeing in enumerate(SEEING):
        key = write_quadrant(store, 300.0 + 0.05 * k, 40.0, JD0 + 0.01 * k, seeing=seeing, maglim=20.5 + 0.1 * k,
                             magzp=26.3 - 0.05 * k, seed=k)
        keys.append(key)
        if k < 3:  # the last quadrant has no reference: no subtraction
            xy = np.array([[20.0 + 10 * j, 30.0 + 7 * j] for j in range(4 + k)])
            cands[k] = write_candidates(store, key, xy, seed=k)
            _add_cutouts(store, key, len(xy), k)
    write_reference(store, keys[0], 300.0, 40.0)
    # the truth: on quadrant 0 a transient on candidate 2 (mag 19 < diffmaglim 20.5: recovered), one
    # 40" away from every candidate (missed), one too faint (not detectable), a star, one off the image;
    # on quadrant 3 (not subtracted) one more transient
    w = WCS(store.read_header(keys[0]))
    ra0, dec0 = (float(v) for v in w.all_pix2world(40.0, 44.0, 0))
    _truth(store, keys[0], [(11, "supernova", ra0 + 0.3 / 3600, dec0, 19.0, True),
                            (12, "nuclear", ra0, dec0 + 40.0 / 3600, 19.5, True),
                            (13, "supernova", ra0 + 60.0 / 3600, dec0, 21.0, True),
                            (14, "star", ra0, dec0, 15.0, True),
                            (15, "supernova", ra0 - 60.0 / 3600, dec0, 18.0, False)])
    w3 = WCS(store.read_header(keys[3]))
    _truth(store, keys[3], [(21, "supernova", *(float(v) for v in w3.all_pix2world(60.0, 60.0, 0)), 18.5, True)])
    if not with_db:
        return store, keys, cands, None
    db = connect(store=store)
    migrate(db)
    for k, key in enumerate(keys):
        ingest_quadrant(db, store, key)
        if k in cands:
            ingest_candidates(db, store, key)
    ingest_reference(db, store, keys[0])
    # jobs: quadrant k starts at 60 k s; each stage takes 10 s wall and 2 s CPU
    for k, key in enumerate(keys):
        name = key.filename[: -len("_sciimg.fits")]
        for j, stage in enumerate(STAGES):
            start = 60 * k + 10 * j
            if k == 1 and stage == "astrom":
                record_job(db, name, stage, "failed", message="/data/sci/x.fits: no stars matched (12 found) "
                           "[cpu=2.000s]", elapsed_s=10.0, started=_iso(start), finished=_iso(start + 10))
                break
            if k == 2 and stage == "photom":  # an error, then a successful retry: not a failure
                record_job(db, name, stage, "error", message="database locked [cpu=0.500s]", elapsed_s=1.0,
                           started=_iso(start), finished=_iso(start + 1))
                record_job(db, name, stage, "ok", message="[cpu=2.000s]", elapsed_s=10.0, started=_iso(start),
                           finished=_iso(start + 10), attempt=2)
                continue
            if k == 3 and stage == "subtract":
                record_job(db, name, stage, "skipped", message="no reference [cpu=0.000s]", elapsed_s=0.0,
                           started=_iso(start), finished=_iso(start))
                continue
            record_job(db, name, stage, "ok", message="done [cpu=2.000s]", elapsed_s=10.0, started=_iso(start),
                       finished=_iso(start + 10), peak_mem_mb=100.0 + k)
    raw = ProductKey.raw(keys[0].filefracday, 655, "zr", 14)
    record_job(db, raw.filename[:-5], "calib", "failed", message=f"{store.path(raw)}: truncated FITS file "
               "[cpu=0.010s]", elapsed_s=0.1, started=_iso(5), finished=_iso(6))
    # a job of another night is not counted
    record_job(db, "ztf_20200925399999_000655_zr_c13_o_q3", "astrom", "failed", message="other night",
               started="2020-09-25T10:00:00+00:00", finished="2020-09-25T10:00:10+00:00")
    # alerts: one packet per positive candidate of quadrants 0 and 1
    rows = []
    for k in (0, 1):
        pid = keys[k].pid()
        for j in range(len(cands[k])):
            rows.append((candid(pid, j, "t"), JD0 + 0.01 * k, float(cands[k]["rb"][j]),
                         float(cands[k]["drb"][j]), b""))
    upsert_rows(db, "alert_packets", ("candid", "jd", "rb", "drb", "packet"), rows)
    return store, keys, cands, db


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    store, keys, cands, db = _make_night(tmp_path_factory.mktemp("night"))
    path = write_report(store, NIGHT, db=db)
    summary = summarize_night(store, NIGHT, db=db)
    yield store, keys, cands, db, path, summary
    db.close()


def test_summary_numbers(night):
    store, keys, cands, db, path, s = night
    assert path == report_path(store, NIGHT) == store.root / "reports" / f"ztfsds_{NIGHT}_report.html"
    assert (s.quadrants, s.exposures, s.subtracted) == (4, 4, 3)
    assert len(s.candidates) == 4 + 5 + 6
    assert (s.alerts, s.alert_source) == (9, "database")
    np.testing.assert_allclose(np.sort(s.images["seeing"]), SEEING)
    # failures: the astrom failure and the corrupt raw file; the retried error and the other night are not
    assert s.failed == 2
    assert sorted(s.failures["stage"]) == ["astrom", "calib"]
    row = s.failures[s.failures["stage"] == "astrom"][0]
    assert row["cause"] == "<file>: no stars matched (N found)" and row["count"] == 1
    st = {r["stage"]: r for r in s.stages}
    assert (st["photom"]["n"], st["photom"]["ok"], st["photom"]["failed"]) == (3, 3, 0)
    assert st["subtract"]["skipped"] == 1 and st["calib"]["failed"] == 1
    assert st["calib"]["peak_mem_mb"] == pytest.approx(103.0)
    # CPU per quadrant-image: 8, 4 (stopped at astrom), 8, 6 (subtraction skipped) s
    assert s.core_s_per_image == pytest.approx(6.5)
    # 4 quadrant-images finished between the first start (0 s) and the last end (210 s: q3 skipped its subtraction)
    assert s.throughput_per_hour == pytest.approx(4 / (210 / 3600))
    np.testing.assert_allclose(np.sort(s.quadrant_time_s), [1.0, 20.0, 30.0, 40.0, 40.0])
    # latency: 10:00 + 40 s after an exposure at JD0 (09:36 UT)
    assert s.latency_h[0] == pytest.approx((24 * 60 + 40) / 3600.0, abs=2e-3)
    # QA sample: 6 candidates spanning drb, highest first, with their cutouts
    assert len(s.cutouts) == 6
    drb = [c["drb"] for c in s.cutouts]
    assert drb == sorted(drb, reverse=True)
    assert drb[0] == pytest.approx(float(s.candidates["drb"].max()))
    assert s.cutouts[0]["science"].shape == (63, 63) and s.cutouts[0]["science"][31, 31] > 500


def test_transients_recovered(night):
    *_, s = night
    r = s.recovery
    by = {int(x["source_id"]): x for x in r}
    assert sorted(by) == [11, 12, 13, 21]  # the star and the off-image one are not transients on the image
    assert bool(by[11]["recovered"]) and by[11]["ndetected"] == 1
    assert not by[12]["recovered"] and by[12]["ndetectable"] == 1
    assert by[13]["ndetectable"] == 0  # 21.0 mag, fainter than diffmaglim 20.5
    assert by[21]["nepochs"] == 0  # on an image without a difference image
    assert (s.recovered, s.injected) == (1, 2)


def _text(page):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_page_content(night):
    *_, path, s = night
    page = path.read_text()
    text = _text(page)
    assert "4 exposures, 4 quadrant-images processed, 3 subtracted" in text
    assert "2 failed jobs" in text and "15 candidates, 9 alerts" in text
    assert "recovered 1 of 2 injected transients" in text
    assert "no stars matched" in text and "truncated FITS file" in text
    assert "core-seconds per quadrant-image [s] 6.50" in text
    assert f"throughput [quadrant-images / hour] {4 / (210 / 3600):.1f}" in text
    assert "median seeing [arcsec] 2.10" in text
    assert page.count("<img ") == 5 and page.count("data:image/png;base64,") == 5
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_partial_nights(tmp_path):
    # nothing at all: no database, no products
    empty = ProductStore(tmp_path / "empty")
    text = _text(write_report(empty, NIGHT).read_text())
    assert "0 exposures, 0 quadrant-images processed" in text and "no simulator truth" in text
    assert "no archive database" in text
    # products but no database: the images and candidates come from the products
    store, keys, cands, _ = _make_night(tmp_path / "nodb", with_db=False)
    s = summarize_night(store, NIGHT)
    assert (s.quadrants, s.subtracted, len(s.candidates), s.failed) == (4, 3, 15, 0)
    assert (s.recovered, s.injected) == (1, 2)
    assert len(s.cutouts) == 6
    # a database without this night's images (another night), and no truth
    shutil.rmtree(store.root / "sim")
    db = connect(f"sqlite:///{tmp_path / 'other.sqlite'}")
    migrate(db)
    page = write_report(store, "20200925", db=db, out=tmp_path / "r.html").read_text()
    assert "0 quadrant-images processed" in _text(page) and page.count("<img ") == 0
    db.close()


def test_cause_groups_alike_failures():
    a = cause_of("/data/raw/2020/0924/x_c01_o.fits: truncated after 2880 bytes")
    b = cause_of("/data/raw/2020/0924/y_c02_o.fits: truncated after 5760 bytes")
    assert a == b == "<file>: truncated after N bytes"
    assert cause_of("ztf_20200924399999_000655_zr_c13_o_q3 has 3 stars") == "<product> has N stars"
    assert cause_of("") == "(no message)"


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")
def test_renders_in_headless_chromium(night, tmp_path):
    from matplotlib.image import imread
    from playwright.sync_api import sync_playwright

    *_, path, _ = night
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
            title = page.title()
            headline = page.inner_text("#headline")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert title == f"ztfsds night {NIGHT}"
    assert "recovered 1 of 2" in headline
    assert len(images) == 5
    for complete, width, alt in images:
        assert complete and width > 200, alt
    png = imread(shot)
    assert png.shape[1] == 1100 and png.shape[0] > 2500  # the whole page, plots included
    assert shot.stat().st_size > 50_000
    assert float(np.std(png[..., :3])) > 0.05  # not a blank page
