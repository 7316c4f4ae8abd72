"""The real IPAC matchfile layout: read, write, round trip."""

import h5py
import pytest

from ztfsds.errors import InputError
from ztfsds.match import read_matchfile, write_matchfile
from ztfsds.match.matchfile import TABLE_NAMES, matchfile_name

REAL = ["ztf_000245_zr_c10_q1_match.pytable", "ztf_000269_zr_c10_q1_match.pytable"]


@pytest.fixture(params=REAL)
def real(request, test_data_dir):
    return test_data_dir / "match" / request.param


def test_read_real_matchfile(test_data_dir):
    mf = read_matchfile(test_data_dir / "match" / REAL[0])
    assert (mf.field, mf.ccdid, mf.qid, mf.rcid, mf.filterid) == (245, 10, 1, 36, 2)
    assert float(mf.attrs["referenceZeroPoint"]) == 27.0
    assert int(mf.attrs["referenceImageID"]) == 2450236
    assert [len(mf.table(n)) for n in TABLE_NAMES] == [5, 336, 10, 0, 0]
    first = mf.sourcedata[0]
    assert first["matchid"] == 0 and first["mag"] == pytest.approx(18.360065)
    assert first["hjd"] == pytest.approx(2458320.98462129)
    assert mf.sources["percentiles"].shape == (10, 12)
    assert mf.sources["nabovemeanbystd"].shape == (10, 3)
    assert mf.exposures["pcolor"][0] == "g-R" and mf.exposures["programpi"][0] == "Kulkarni"
    # the error-model coefficients are attributes of the sourcedata table
    assert mf.sourcedata.meta["A"] == pytest.approx(0.02110917230233589)
    assert set(mf.sourcedata.meta) >= {"A", "B", "C", "D"}
    assert matchfile_name(245, "zr", 10, 1) == REAL[0]


def test_round_trip_real(real, tmp_path):
    """IPAC's file read and written back: same values, types and attributes (PyTables bookkeeping too)."""
    mf = read_matchfile(real)
    out = write_matchfile(mf, tmp_path / real.name)
    back = read_matchfile(out)
    for name in TABLE_NAMES:
        a, b = mf.table(name).as_array(), back.table(name).as_array()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    with h5py.File(real) as h1, h5py.File(out) as h2:
        for obj in ("/", "/matches") + tuple(f"/matches/{n}" for n in TABLE_NAMES):
            a1, a2 = dict(h1[obj].attrs), dict(h2[obj].attrs)
            assert a1.keys() == a2.keys(), (obj, set(a1) ^ set(a2))
            for k in a1:
                assert repr(a1[k]) == repr(a2[k]), (obj, k)
        assert h2["/matches/sourcedata"].maxshape == (None,)


def test_round_trip_ours(calibrated, tmp_path):
    out = write_matchfile(calibrated, tmp_path / "ours.pytable")
    back = read_matchfile(out)
    for name in ("exposures", "sources", "sourcedata", "transientdata"):
        a, b = calibrated.table(name).as_array(), back.table(name).as_array()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert int(back.attrs["rcID"]) == calibrated.rcid


def test_bad_files(tmp_path):
    bad = tmp_path / "x.pytable"
    bad.write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_matchfile(bad)
    other = tmp_path / "y.pytable"
    with h5py.File(other, "w") as h5:
        h5.create_group("stuff")
    with pytest.raises(InputError, match="no /matches group"):
        read_matchfile(other)


def test_real_matchfile_as_previous(test_data_dir):
    """The excerpted real files list 5 of their 68 epochs: updating them fails with a clear error."""
    from ztfsds.match import match_epochs

    mf = read_matchfile(test_data_dir / "match" / REAL[0])
    with pytest.raises(InputError, match="absent from its exposures table"):
        match_epochs([], previous=mf)
