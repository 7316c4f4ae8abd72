"""Partitioned storage: layout, manifest, merging without duplicates, clear errors."""

import json

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import ICRS, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy_healpix import HEALPix

from ztfsds.catalogs import CatalogStore, query
from ztfsds.catalogs.healpix import INDEX_ORDER, PARTITION_ORDER, healpix_index
from ztfsds.errors import FITSFormatError, ProductNotFoundError
from ztfsds.products import ProductStore


def gaia_rows(ids, ra, dec, *, pm=0.0, mag=15.0):
    n = len(ids)
    return Table({"source_id": np.asarray(ids, dtype=np.int64), "ra": np.asarray(ra, float) * u.deg,
                  "dec": np.asarray(dec, float) * u.deg, "ra_error": np.full(n, 0.1) * u.mas,
                  "dec_error": np.full(n, 0.1) * u.mas, "pmra": np.full(n, pm) * u.mas / u.yr,
                  "pmdec": np.zeros(n) * u.mas / u.yr, "pmra_error": np.full(n, 0.1) * u.mas / u.yr,
                  "pmdec_error": np.full(n, 0.1) * u.mas / u.yr, "phot_g_mean_mag": np.full(n, mag) * u.mag})


def random_rows(seed, n, ra0=120.0, dec0=10.0, size=2.0, first_id=1):
    rng = np.random.default_rng(seed)
    return gaia_rows(np.arange(first_id, first_id + n), ra0 + rng.uniform(-size, size, n),
                     dec0 + rng.uniform(-size, size, n), pm=rng.normal(0, 50))


def test_layout_manifest_and_partitions(tmp_path):
    cat = CatalogStore(ProductStore(tmp_path).root)
    rows = random_rows(1, 3000)
    paths = cat.write("gaia", rows, provenance={"provider": "test", "key": "a"})
    m = cat.read_manifest("gaia")
    assert m.order == PARTITION_ORDER and m.index_order == INDEX_ORDER and m.id_column == "source_id"
    assert m.nrows == 3000 and len(m.pixels) == len(paths) > 4
    assert m.reference_epoch == 2016.0 and m.ref_epoch_range == [2016.0, 2016.0]
    assert m.sources["test:a"]["rows"] == 3000 and m.sources["test:a"]["built"]
    assert "healpix" in m.column_names and {"name": "ra", "unit": "deg", "dtype": "f8"} in m.columns
    raw = json.loads(cat.manifest_path("gaia").read_text())
    assert raw["kind"] == "gaia" and raw["format_version"] == 1
    for p in paths:
        assert p.is_relative_to(tmp_path / "catalogs" / "gaia" / "Norder=6")
        with fits.open(p) as h:
            hdr, data = h["CATALOG"].header, h["CATALOG"].data
            assert hdr["CATKIND"] == "gaia" and hdr["NROWS"] == len(data) == m.pixels[hdr["HPXPIX"]]
            assert np.all(np.diff(data["healpix"]) >= 0)
            assert np.all(data["healpix"] >> 16 == hdr["HPXPIX"])
            assert hdr["TUNIT2"] == "deg" and "DATASUM" in hdr
    everything = cat.read_all("gaia")
    np.testing.assert_array_equal(everything["source_id"], rows["source_id"])
    np.testing.assert_array_equal(everything["ra"], rows["ra"])


def test_rebuild_is_idempotent_and_merge_has_no_duplicates(tmp_path):
    cat = CatalogStore(tmp_path)
    a = random_rows(1, 2000, size=1.0)
    # b re-lists a's sources 1001-2000 (re-measured: 1 mas away) and adds 1000 new ones
    b = random_rows(2, 2000, ra0=121.0, size=1.0, first_id=1001)
    b[:1000] = a[1000:]
    b["ra"][:1000] += 1.0 / 3.6e6
    cat.write("gaia", a)
    first = cat.read_all("gaia")
    cat.write("gaia", a)
    again = cat.read_all("gaia")
    assert len(again) == 2000
    for name in first.colnames:
        np.testing.assert_array_equal(first[name], again[name])
    cat.write("gaia", b)
    merged = cat.read_all("gaia")
    assert len(merged) == 3000 == len(np.unique(merged["source_id"])) == cat.read_manifest("gaia").nrows
    # the newer rows won
    i = np.searchsorted(merged["source_id"], 1500)
    j = np.flatnonzero(b["source_id"] == 1500)[0]
    assert merged["ra"][i] == b["ra"][j]


def test_source_moving_across_a_partition_edge_is_not_duplicated(tmp_path):
    hp = HEALPix(nside=2**PARTITION_ORDER, order="nested", frame=ICRS())
    corner = hp.boundaries_skycoord(4000, step=1)[0, 0]  # a corner of pixel 4000
    ra, dec = corner.ra.deg, corner.dec.deg
    cat = CatalogStore(tmp_path)
    offsets = [(-1e-4, 0.0), (1e-4, 0.0), (0.0, 1e-4), (0.0, -1e-4)]
    pix = []
    for dra, ddec in offsets:
        cat.write("gaia", gaia_rows([7], [ra + dra], [dec + ddec]))
        pix.append(int(healpix_index([ra + dra], [dec + ddec], PARTITION_ORDER)[0]))
        every = cat.read_all("gaia")
        assert len(every) == 1 and every["ra"][0] == pytest.approx(ra + dra)
    assert len(set(pix)) >= 2  # it did cross
    m = cat.read_manifest("gaia")
    assert m.nrows == 1 and list(m.pixels) == [pix[-1]] and cat.pixels_on_disk("gaia") == [pix[-1]]


def test_missing_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(ProductNotFoundError, match=r"no 'ps1' calibrator catalog.*catalogs build"):
        query(tmp_path, "ps1", SkyCoord(10 * u.deg, 20 * u.deg), 1 * u.deg)
    cat = CatalogStore(tmp_path)
    assert cat.kinds() == [] and not cat.exists("gaia")
    with pytest.raises(ProductNotFoundError, match="partition not found"):
        cat.read_partition("gaia", 12)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_partition_names_the_file(tmp_path, damage):
    cat = CatalogStore(tmp_path)
    paths = cat.write("gaia", random_rows(3, 500, size=0.2))
    victim = paths[0]
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[-2880 + 100] ^= 0xFF  # a byte in the table data
    elif damage == "truncate":
        data = data[: len(data) - 2880]
    else:
        data = bytearray(b"not a fits file" * 300)
    victim.write_bytes(bytes(data))
    center = SkyCoord(120 * u.deg, 10 * u.deg)
    with pytest.raises(FITSFormatError, match=str(victim).replace("[", r"\[").replace("]", r"\]")):
        query(cat, "gaia", center, 1 * u.deg)


def test_partition_with_the_wrong_header_is_refused(tmp_path):
    cat = CatalogStore(tmp_path)
    paths = cat.write("gaia", random_rows(3, 200, size=0.2))
    p = paths[0]
    with fits.open(p) as h:
        h[1].header["HPXPIX"] = 1
        h.writeto(p, overwrite=True, checksum=True)
    with pytest.raises(FITSFormatError, match="HPXPIX=1"):
        cat.read_all("gaia")


def test_remove(tmp_path):
    cat = CatalogStore(tmp_path)
    cat.write("gaia", random_rows(3, 200))
    assert cat.kinds() == ["gaia"]
    cat.remove("gaia")
    assert cat.kinds() == [] and cat.pixels_on_disk("gaia") == []


def test_partition_cache_sees_rewrites(tmp_path):
    writer = CatalogStore(tmp_path)
    writer.write("gaia", random_rows(3, 300, size=0.2))
    reader = CatalogStore(tmp_path, cache_mb=100)
    center = SkyCoord(120 * u.deg, 10 * u.deg)
    first = query(reader, "gaia", center, 1 * u.deg)
    assert len(reader._cache) > 0
    again = query(reader, "gaia", center, 1 * u.deg)
    np.testing.assert_array_equal(first["source_id"], again["source_id"])
    writer.write("gaia", random_rows(4, 300, size=0.2, first_id=1000))
    assert len(query(reader, "gaia", center, 1 * u.deg)) == len(first) + 300
    tiny = CatalogStore(tmp_path, cache_mb=1e-6)
    query(tiny, "gaia", center, 1 * u.deg)
    assert len(tiny._cache) == 1  # bounded (the newest partition stays)
