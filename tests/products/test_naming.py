"""ProductKey: exact ZTF file names, parsed and formatted."""

import pytest

from ztfsds.errors import ProductNameError
from ztfsds.products import ProductKey, ProductStore

# every example name of DESIGN.md section 4 and ZTF_REFERENCE.md section 3.1, plus the real sample files
NAMES = [
    "ztf_20180317184502_000600_zr_c08_o_q3_sciimg.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_mskimg.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_psfcat.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_sexcat.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_scimrefdiffimg.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_scimrefdiffimg.fits.fz",
    "ztf_20180317184502_000600_zr_c08_o_q3_diffimgpsf.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_candidates.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_sciimgdao.psf",
    "ztf_20180317184502_000600_zr_c08_o_q3_sciimgdaopsfcent.fits",
    "ztf_20180317184502_000600_zr_c08_o_q3_sciimlog.txt",
    "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits",
    "ztf_20200924431759_000655_zr_c13_o_q3_mskimg.fits",
    "ztf_000600_zr_c08_q3_refimg.fits",
    "ztf_000600_zr_c08_q3_refunc.fits",
    "ztf_000600_zr_c08_q3_refcov.fits",
    "ztf_000600_zr_c08_q3_refpsfcat.fits",
    "ztf_000600_zr_c08_q3_refsexcat.fits",
    "ztf_20200924431759_000655_zr_c13_o.fits.fz",
    "ztf_20200924431759_000655_zr_c13_o.fits",
    "ztf_20200924120000_000000_OO_c13_b.fits.fz",
    "ztf_20200924125000_000000_zr_c13_f.fits.fz",
    "ztf_20200924_OO_c13_q3_bias.fits",
    "ztf_20200924_OO_c13_q3_biasunc.fits",
    "ztf_20200924_zr_c13_q3_hifreqflat.fits",
    "ztf_20200924_zr_c13_q3_hifreqflatunc.fits",
]


@pytest.mark.parametrize("name", NAMES)
def test_roundtrip(name):
    key = ProductKey.parse(name)
    assert key.filename == name
    assert str(key) == name
    assert ProductKey.parse("/some/dir/" + name) == key


def test_fields_of_a_science_name():
    key = ProductKey.parse("ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits")
    assert (key.kind, key.field, key.filtercode, key.fid, key.ccdid, key.qid) == ("sci", 655, "zr", 2, 13, 3)
    assert key.rcid == 50
    assert key.night == "20200924"
    assert key.nid == 1362
    assert key.expid == 136243175
    assert key.pid() == 1362431755015


def test_constructors_match_parse():
    key = ProductKey.science("20180317184502", 600, "zr", 8, 3, "sciimg")
    assert key.filename == NAMES[0]
    raw = ProductKey.raw("20200924431759", 655, "zr", 13, ext=".fits.fz")
    assert raw.filename == "ztf_20200924431759_000655_zr_c13_o.fits.fz"
    assert raw.quadrant(3).filename == "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"
    assert ProductKey.calibration("20200924", "OO", 13, 3, "bias").filename == "ztf_20200924_OO_c13_q3_bias.fits"
    assert key.reference("refpsfcat").filename == "ztf_000600_zr_c08_q3_refpsfcat.fits"


@pytest.mark.parametrize("name", [
    "ztf_2018031718450_000600_zr_c08_o_q3_sciimg.fits",   # 13-digit exposure id
    "ztf_20180317184502_000600_zq_c08_o_q3_sciimg.fits",  # unknown filter
    "ztf_20180317184502_000600_zr_c08_o_q5_sciimg.fits",  # quadrant 5
    "ztf_20180317184502_000600_zr_c17_o_q3_sciimg.fits",  # ccd 17
    "ztf_20180317184502_000600_zr_c08_o_q3_sciimg.fit",   # extension
    "sciimg.fits",
])
def test_bad_names(name):
    with pytest.raises(ProductNameError, match="not a ZTF product file name|invalid ProductKey"):
        ProductKey.parse(name)


def test_bad_keys():
    with pytest.raises(ProductNameError, match="qid"):
        ProductKey.science("20180317184502", 600, "zr", 8, 7)
    with pytest.raises(ProductNameError, match="raw CCD files"):
        ProductKey("raw", "zr", 8, 3, 600, "20180317184502")
    with pytest.raises(ProductNameError, match="no single rcid"):
        ProductKey.raw("20180317184502", 600, "zr", 8).rcid


def test_store_layout(tmp_path):
    store = ProductStore(tmp_path)
    rel = {name: store.relpath(ProductKey.parse(name)).as_posix() for name in NAMES}
    assert rel[NAMES[0]] == f"sci/2018/0317/184502/{NAMES[0]}"
    assert rel["ztf_000600_zr_c08_q3_refimg.fits"] == "ref/000600/zr/c08/q3/ztf_000600_zr_c08_q3_refimg.fits"
    assert rel["ztf_20200924431759_000655_zr_c13_o.fits.fz"] == (
        "raw/2020/0924/431759/ztf_20200924431759_000655_zr_c13_o.fits.fz")
    assert rel["ztf_20200924_OO_c13_q3_biasunc.fits"] == (
        "cal/2020/0924/bias/OO/c13/q3/ztf_20200924_OO_c13_q3_biasunc.fits")
    assert store.database_path == tmp_path / "ztfsds.sqlite"
    assert store.alerts_dir("20200924") == tmp_path / "alerts" / "20200924"
