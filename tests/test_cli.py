"""The ztfsds command line."""

import subprocess
import sys

import pytest

from ztfsds import __version__
from ztfsds.cli import EXIT_INPUT_ERROR, EXIT_NOT_IMPLEMENTED, main

COMMANDS = ["simulate-night", "run-night", "calib", "process", "refimg", "subtract", "forced-phot", "photom",
            "lightcurve", "alerts", "archive", "report", "bench", "config", "catalogs"]

NOT_BUILT = [["run-night"], ["process"], ["lightcurve"],
             ["alerts", "search"], ["archive", "init"], ["archive", "images"], ["report"]]


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("argv", [[c, "--help"] for c in COMMANDS] + [a + ["--help"] for a in NOT_BUILT])
def test_every_command_has_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize("argv", NOT_BUILT)
def test_unbuilt_commands_fail_loudly(argv, capsys):
    assert main(argv) == EXIT_NOT_IMPLEMENTED
    assert f"ztfsds {' '.join(argv)}: not implemented yet" in capsys.readouterr().err


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
