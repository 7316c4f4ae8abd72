"""Configuration: defaults, TOML loading, clear rejection of bad input, stable hashes, headers."""

import dataclasses

import pytest
from astropy.io import fits

from ztfsds import __version__
from ztfsds.config import AstromParams, CalibParams, Config, PhotomParams, load_config
from ztfsds.errors import ConfigError


def test_defaults_are_documented():
    cfg = load_config()
    assert cfg.calib.overscan_columns == (5, 25)
    assert cfg.photom.aperture_diameters == (2.0, 3.0, 4.0, 6.0, 10.0, 14.0)
    assert cfg.subtract.astrometric_noise == 0.25
    for stage in Config.STAGES:
        params = getattr(cfg, stage)
        for name, default, unit, doc in params.describe():
            assert doc, f"{stage}.{name} has no documentation"
            assert name in type(params).__doc__, f"{stage}.{name} missing from the class docstring"


def test_toml_roundtrip(tmp_path):
    path = tmp_path / "params.toml"
    path.write_text('[calib]\noverscan_poly_order = 2\noverscan_columns = [4, 26]\n'
                    '[astrom]\ndetect_threshold = 4\ndistortion = "sip"\n')
    cfg = load_config(path)
    assert cfg.calib.overscan_poly_order == 2 and cfg.calib.overscan_columns == (4, 26)
    assert cfg.astrom.detect_threshold == 4.0 and isinstance(cfg.astrom.detect_threshold, float)
    assert cfg.source == str(path)
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert load_config(again) == cfg
    assert load_config(again).param_hash() == cfg.param_hash()


@pytest.mark.parametrize("text, message", [
    ("[calib]\noverscan_poly_ordr = 2\n", r"unknown parameter 'overscan_poly_ordr' in \[calib\] \(did you mean 'overscan_poly_order'\?\)"),
    ("[calibration]\nx = 1\n", r"unknown table \[calibration\] \(did you mean \[calib\]\?\)"),
    ("[calib]\noverscan_poly_order = 'three'\n", r"overscan_poly_order = 'three': expected an integer"),
    ("[calib]\noverscan_poly_order = 2.5\n", "expected an integer"),
    ("[calib]\ncrosstalk = 1\n", "expected true or false"),
    ("[calib]\noverscan_columns = [5, 25, 30]\n", "expected 2 values"),
    ("[calib]\noverscan_columns = [5, 6]\n", "at least 3 columns"),
    ("[photom]\npsf_size = 24\n", "must be odd"),
    ("[astrom]\ndistortion = 'zpn'\n", "must be one of"),
    ("[astrom]\ndetect_threshold = -1\n", "must be >= 0.5"),
    ("[refimg]\nmin_epochs = 30\nmax_epochs = 20\n", "max_epochs = 20 < min_epochs = 30"),
    ("[ops]\nexecutor = 'dask'\n", "needs a scheduler"),
    ("[archive]\ndatabase_url = 'mysql://x'\n", "must be ''"),
    ("calib = 3\n", "must be a table"),
    ("[calib\n", "not valid TOML"),
])
def test_bad_files_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(path)
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_config(tmp_path / "nope.toml")


def test_hash_is_stable_and_sensitive():
    a, b = CalibParams(), CalibParams()
    assert a.param_hash() == b.param_hash()
    assert len(a.param_hash()) == 12
    # a fixed value: a changed hash for unchanged defaults means products made before look different
    assert a.param_hash() == CalibParams.from_dict(a.to_dict()).param_hash()
    assert CalibParams(overscan_poly_order=2).param_hash() != a.param_hash()
    assert CalibParams(stack_clip_sigma=3).param_hash() == a.param_hash()  # 3 == 3.0 after coercion
    assert AstromParams().param_hash() != PhotomParams().param_hash()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.workers = 3


def test_header_roundtrip():
    cfg = Config.from_dict({"calib": {"overscan_columns": [4, 26], "crosstalk": False},
                            "photom": {"aperture_diameters": [3, 6]}})
    header = cfg.to_header(fits.Header(), stages=("calib", "photom"))
    assert header["PIPEVERS"] == __version__
    assert header["CALHASH"] == cfg.calib.param_hash()
    assert header["CFGHASH"] == cfg.param_hash()
    assert "ASTHASH" not in header
    assert CalibParams.from_header(header) == cfg.calib
    assert PhotomParams.from_header(header) == cfg.photom
    # written twice (a re-run): replaced, not duplicated
    n = len(header)
    cfg.to_header(header, stages=("calib", "photom"))
    assert len(header) == n
    # survives a FITS file
    text = fits.PrimaryHDU(header=header).header.tostring()
    assert CalibParams.from_header(fits.Header.fromstring(text)) == cfg.calib
