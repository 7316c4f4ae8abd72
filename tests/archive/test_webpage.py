"""The archive's web page in headless Chromium (playwright) against a real server: search by position and by
name, the lightcurve plot, image and alert cutouts, a partner token; a screenshot of each."""

from pathlib import Path

import pytest

from archive.service_data import CALTECH, CENTRE, NOW_JD, TOKENS, running, shared_archive
from ztfsds.archive.service import create_app

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="headless browser tests need Debian's chromium at /usr/bin/chromium "
                                       "('apt-get install -y chromium')")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    archive = shared_archive(tmp_path_factory)
    with running(create_app(archive["root"], tokens=TOKENS, now_jd=NOW_JD)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1100, "height": 1400}, base_url=url)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/")
    yield page
    context.close()
    assert not errors, errors          # no JavaScript exception


def _search(page, text, radius=None, token=None):
    page.fill("#query", text)
    if radius is not None:
        page.fill("#radius", str(radius))
    if token is not None:
        page.fill("#token", token)
    page.click("#search")
    page.wait_for_selector("body[data-state=done]", timeout=20_000)


def _loaded(page, selector):
    """naturalWidth of every <img> matching the selector."""
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete ? e.naturalWidth : 0)")


def _screenshot(page, path):
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return len(data)


def test_search_by_position(page, tmp_path):
    assert page.title() == "ztfsds archive"
    _search(page, f"{CENTRE[0]} {CENTRE[1]}", radius=10)
    assert page.get_attribute("#status", "class") != "error", page.inner_text("#status")
    assert _loaded(page, "#lcplot") == [800]                # the PNG plot, 800 x 450
    summary = page.inner_text("#lc-summary")
    assert "object(s)" in summary and int(summary.split()[0]) >= 1
    assert _loaded(page, "img.image-cutout") == [256, 256]  # the two public images only
    assert _loaded(page, "img.alert-cutout") == [256] * 3   # ZTF18aaxjdyr: science, template, difference
    assert "ZTF18aaxjdyr" in page.inner_text("#alerts")
    size = _screenshot(page, tmp_path / "position.png")
    assert size > 100_000, size


def test_search_by_name_and_with_a_token(page, tmp_path):
    _search(page, "ZTF18aaxjdyr", token=CALTECH)
    assert page.get_attribute("#status", "class") != "error", page.inner_text("#status")
    assert _loaded(page, "#lcplot") == [800]
    assert _loaded(page, "img.image-cutout") == [256] * 4   # the partner sees the proprietary images too
    assert len(_loaded(page, "img.alert-cutout")) == 3
    assert _screenshot(page, tmp_path / "name.png") > 100_000
    # a lightcurve id
    oid = page.evaluate("fetch('/lightcurves?POS=CIRCLE+%s+%s+0.003&FORMAT=CSV').then(r => r.text())"
                        % CENTRE).splitlines()[1].split(",")[0]
    _search(page, oid, token="")
    assert _loaded(page, "#lcplot") == [800] and page.inner_text("#lc-summary").startswith("1 object(s)")
    # nonsense: a message, no plot
    _search(page, "not a position")
    assert page.get_attribute("#status", "class") == "error" and "ra dec" in page.inner_text("#status")
    assert _loaded(page, "#lcplot") == [0]
