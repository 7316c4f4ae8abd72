"""The ztfsds command line."""

import subprocess
from pathlib import Path
import sys

import pytest

from ztfsds import __version__
from ztfsds.cli import EXIT_INPUT_ERROR, main

COMMANDS = ["simulate-night", "run-night", "calib", "process", "refimg", "subtract", "forced-phot", "photom",
            "lightcurve", "alerts", "archive", "report", "bench", "config", "catalogs", "match", "reprocess",
            "retry", "cleanup"]

GROUP_COMMANDS = [["alerts", "search"], ["alerts", "ingest"], ["archive", "init"], ["archive", "images"],
                  ["archive", "ingest"], ["archive", "serve"]]


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("argv", [[c, "--help"] for c in COMMANDS] + [a + ["--help"] for a in GROUP_COMMANDS])
def test_every_command_has_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage" in capsys.readouterr().out


def test_archive_and_alert_commands(tmp_path, capsys):
    """archive init / ingest / images and alerts ingest / search on a fresh data root, with real ZTF
    packets: the same public API as the Python calls."""
    root = tmp_path / "root"
    assert main(["archive", "init", "--data", str(root)]) == 0
    assert "schema version" in capsys.readouterr().out
    assert main(["archive", "ingest", "--data", str(root)]) == 0
    assert "ingested 0 quadrant images" in capsys.readouterr().out
    assert main(["archive", "images", "--data", str(root), "--ra", "10", "--dec", "20"]) == 0
    capsys.readouterr()
    packets = sorted((Path(__file__).parent / "data" / "alerts_real").glob("v3.3_*.avro"))
    assert main(["alerts", "ingest", *map(str, packets), "--data", str(root)]) == 0
    assert f"ingested {len(packets)} alert packets" in capsys.readouterr().out
    from ztfsds.alerts import read_alerts

    first = next(iter(read_alerts(packets[0])))
    assert main(["alerts", "search", "--data", str(root), "--objectid", first["objectId"], "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert str(first["candid"]) in out and first["objectId"] in out
    c = first["candidate"]
    assert main(["alerts", "search", "--data", str(root), "--ra", str(c["ra"]), "--dec", str(c["dec"]),
                 "--radius", "1", "--format", "csv"]) == 0
    assert str(first["candid"]) in capsys.readouterr().out
    assert main(["alerts", "search", "--data", str(root), "--ra", "10"]) != 0


def test_lightcurve_command(tmp_path, capsys):
    """'ztfsds lightcurve' with IRSA parameters on a HATS catalog made from the real DR5 excerpt."""
    from ztfsds.match.lightcurves import read_dr_parquet, write_hats

    root = tmp_path / "root"
    table = read_dr_parquet(Path(__file__).parent / "data" / "match" / "ztf_000250_zg_c01_q1_dr5_excerpt.parquet")
    write_hats(table, root / "match" / "lightcurves" / "ztf_dr5", name="ztf_dr5")
    oid = int(table.column("objectid")[0].as_py())
    png = tmp_path / "lc.png"
    assert main(["lightcurve", "--data", str(root), "--id", str(oid), "--collection", "ztf_dr5",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("oid,") and len(lines) > 10 and all(line.startswith(str(oid)) for line in lines[1:])
    assert png.stat().st_size > 5000
    assert main(["lightcurve", "--data", str(root), "--pos", "CIRCLE 1000 0 1", "--collection", "ztf_dr5"]) != 0


def test_report_command_on_an_empty_night(tmp_path, capsys):
    assert main(["report", "--night", "20200924", "--data", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ") and Path(out.split()[-1]).is_file()


def test_version_and_entry_point():
    out = subprocess.run([sys.executable, "-m", "ztfsds", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == f"ztfsds {__version__}"


def test_config_show_and_check(tmp_path, capsys):
    good = tmp_path / "params.toml"
    good.write_text("[calib]\noverscan_poly_order = 2\n")
    assert main(["--config", str(good), "config", "show"]) == 0
    shown = capsys.readouterr().out
    assert "overscan_poly_order = 2" in shown and "[subtract]" in shown
    # what 'config show' prints is itself a valid parameter file
    again = tmp_path / "shown.toml"
    again.write_text(shown)
    assert main(["config", "check", str(again)]) == 0
    assert "ok (configuration hash" in capsys.readouterr().out


def test_bad_config_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[astrom]\ndetect_treshold = 4\n")
    assert main(["--config", str(bad), "config", "show"]) == EXIT_INPUT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("ztfsds: error: ") and str(bad) in err and "did you mean 'detect_threshold'" in err
    assert "Traceback" not in err


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
