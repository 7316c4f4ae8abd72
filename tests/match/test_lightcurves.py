"""HATS lightcurve catalogs: the real DR5 layout, round trips, cones, updates."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ztfsds.errors import InputError
from ztfsds.match import lightcurve_table, read_dr_parquet, read_lightcurves, update_lightcurves, write_hats
from ztfsds.match.lightcurves import HEALPIX_COLUMN, PUBLIC_SCHEMA, read_hats_arrow


@pytest.fixture
def dr5(test_data_dir):
    return read_dr_parquet(test_data_dir / "match" / "ztf_000250_zg_c01_q1_dr5_excerpt.parquet")


def test_read_dr5_excerpt(dr5):
    assert dr5.num_rows == 300
    assert dr5.schema.names == PUBLIC_SCHEMA.names
    for field in PUBLIC_SCHEMA:
        assert dr5.schema.field(field.name).type.equals(field.type), field.name
    row = dr5.slice(0, 1).to_pylist()[0]
    assert row["objectid"] == 250101100000001 and row["fieldid"] == 250 and row["rcid"] == 0
    assert row["nepochs"] == len(row["hmjd"]) == 23 and row["catflags"][0] == 32768
    assert all(r["nepochs"] == len(r["mag"]) for r in dr5.select(["nepochs", "mag"]).to_pylist())


def test_dr5_round_trip(dr5, tmp_path):
    """Written as HATS (several partitions) and read back: every column and type unchanged."""
    path = write_hats(dr5, tmp_path / "dr5", max_rows=60)
    parts = (path / "partition_info.csv").read_text().splitlines()
    assert parts[0] == "Norder,Npix" and len(parts) - 1 >= 4
    files = sorted(p.relative_to(path).as_posix() for p in path.glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    assert len(files) == len(parts) - 1
    for line in parts[1:]:
        k, p = map(int, line.split(","))
        assert f"dataset/Norder={k}/Dir={10000 * (p // 10000)}/Npix={p}.parquet" in files
        ids = pq.read_table(path / f"dataset/Norder={k}/Dir={10000 * (p // 10000)}/Npix={p}.parquet",
                            columns=[HEALPIX_COLUMN]).column(0).to_numpy()
        assert np.all(ids >> (2 * (29 - k)) == p) and np.all(np.diff(ids) >= 0)
    props = dict(line.split("=", 1) for line in (path / "properties").read_text().splitlines() if "=" in line)
    assert props["hats_nrows"] == "300" and props["hats_col_ra"] == "objra" and props["dataproduct_type"] == "object"
    assert pq.read_metadata(path / "dataset" / "_metadata").num_rows == 300
    back = read_hats_arrow(path).sort_by("objectid")
    for name in dr5.column_names:
        assert back.schema.field(name).type.equals(dr5.schema.field(name).type), name
        assert back.column(name).combine_chunks().equals(dr5.column(name).combine_chunks()), name
    table = read_lightcurves(path)
    assert len(table) == 300 and table["mag"].dtype == object


def test_cone_and_ids(dr5, tmp_path):
    path = write_hats(dr5, tmp_path / "dr5", max_rows=40)
    ra = dr5.column("objra").to_numpy().astype(float)
    dec = dr5.column("objdec").to_numpy().astype(float)
    ra0, dec0, radius = float(np.median(ra)), float(np.median(dec)), 0.08
    cosd = (np.sin(np.radians(dec0)) * np.sin(np.radians(dec))
            + np.cos(np.radians(dec0)) * np.cos(np.radians(dec)) * np.cos(np.radians(ra - ra0)))
    expected = set(dr5.column("objectid").to_numpy()[cosd >= math.cos(math.radians(radius))])
    got = read_lightcurves(path, cone=(ra0, dec0, radius))
    assert 10 < len(expected) < 300 and set(got["objectid"]) == expected
    picked = [250101100000001, 250101100000005, 999]
    assert sorted(read_lightcurves(path, ids=picked)["objectid"]) == picked[:2]
    assert len(read_lightcurves(path, ids=[])) == 0
    with pytest.raises(InputError, match="no 'properties'"):
        read_lightcurves(tmp_path)


def test_matchfile_lightcurves_and_update(calibrated, tmp_path):
    table = lightcurve_table(calibrated)
    assert table.schema.names[:12] == PUBLIC_SCHEMA.names
    assert table.column_names[-1] == HEALPIX_COLUMN
    nep = table.column("nepochs").to_numpy()
    assert nep.sum() == len(calibrated.sourcedata)
    oid = table.column("objectid").to_numpy()
    # field * 10**12 + fid * 10**11 + ccdid * 10**9 + qid * 10**8 + (matchid + 1)
    assert np.all(oid // 10**8 == 6002083)
    with_data = np.unique(np.asarray(calibrated.sourcedata["matchid"]))
    assert np.array_equal(oid % 10**8 - 1, with_data)
    hmjd = table.column("hmjd").to_pylist()[0]
    assert np.all(np.diff(hmjd) > 0)
    path = tmp_path / "lc"
    update_lightcurves(path, table.slice(0, 5000))
    # a second quadrant-filter joins; re-sending the first replaces its rows instead of duplicating them
    other = table.slice(0, 50)
    other = other.set_column(other.schema.get_field_index("rcid"), "rcid", pa.array(np.full(50, 7, np.uint8)))
    update_lightcurves(path, other)
    update_lightcurves(path, table.slice(0, 1000))
    back = read_hats_arrow(path)
    rcid = back.column("rcid").to_numpy()
    assert np.count_nonzero(rcid == 7) == 50 and np.count_nonzero(rcid == calibrated.rcid) == 1000
    assert back.num_rows == 1050
