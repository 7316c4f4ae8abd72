"""The ``ztfsds`` command line: thin Typer commands over the public API.

Each command parses its options, calls the same public function a notebook would call, and reports.
Commands whose stage is not built yet exit with status 3 and say so: never a fake success.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .config import Config, load_config
from .errors import ZTFSDSError

__all__ = ["app", "main"]

#: Exit status of a command whose stage is not built yet.
EXIT_NOT_IMPLEMENTED = 3
#: Exit status of a run stopped by bad input or configuration (a ZTFSDSError).
EXIT_INPUT_ERROR = 2

app = typer.Typer(
    name="ztfsds",
    help="ZTF Science Data System: raw exposures to calibrated images, difference images, alerts and "
         "lightcurves.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _State:
    """What the global options set, handed to commands through the click context."""

    def __init__(self, config: Config):
        self.config = config


def _version_callback(value: bool):
    if value:
        typer.echo(f"ztfsds {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML parameter file "
                                          "(one table per stage; see 'ztfsds config show')."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
):
    """Global options, before the command: ztfsds [--config FILE] [-v] COMMAND ..."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = _State(load_config(config))


# -- stages not built yet: the names and help the later issues fill ---------------------------------
calib_app = typer.Typer(help="Instrumental calibration: build the calibration library, apply it.",
                        no_args_is_help=True)
refimg_app = typer.Typer(help="Reference images: build co-adds, coverage synopsis.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alert packets: search the alert archive.", no_args_is_help=True)
archive_app = typer.Typer(help="The database: initialise, ingest, query images.", no_args_is_help=True)
_GROUPS = {"": app, "calib": calib_app, "refimg": refimg_app, "alerts": alerts_app, "archive": archive_app}
for _group_name, _group in _GROUPS.items():
    if _group_name:
        app.add_typer(_group, name=_group_name)

#: (group name, command, help, what is missing, the issue that builds it)
_PENDING = [
    ("", "run-night", "Process a night end to end (with no arguments: a simulated demo night under "
     "./ztfsds-data).", "the night runner", "operations"),
    ("", "process", "Run the science pipeline (calib, astrom, photom, subtract, alerts) on quadrant-exposures.",
     "the per-quadrant pipeline", "operations"),
    ("", "lightcurve", "Lightcurves with the IRSA lightcurve service's parameters (ID, POS, BANDNAME, ...).",
     "lightcurves", "archive"),
    ("alerts", "search", "Search alerts by objectId, cone, time, magnitude and real-bogus score.",
     "the alert archive", "alerts"),
    ("archive", "init", "Create or migrate the database schema.", "the database", "archive"),
    ("archive", "images", "Find images covering a position, or by field/CCD/quadrant/filter/time.",
     "the database", "archive"),
    ("", "report", "Write the nightly summary report (HTML with plots).", "the nightly report", "operations"),
]


def _pending_command(command: str, what: str, issue: str):
    def pending():
        typer.echo(f"ztfsds {command}: not implemented yet ({what} arrives with the {issue} issue).", err=True)
        raise typer.Exit(EXIT_NOT_IMPLEMENTED)

    return pending


for _group_name, _name, _help, _what, _issue in _PENDING:
    _full = f"{_group_name} {_name}".strip()
    _GROUPS[_group_name].command(_name, help=_help)(_pending_command(_full, _what, _issue))


# -- built ------------------------------------------------------------------------------------------
def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None


@app.command("simulate-night")
def simulate_night_cmd(
    out: Path = typer.Option(Path("ztfsds-data"), "--out", help="Data root to write under."),
    fields: str = typer.Option("655", "--fields", help="Comma-separated ZTF field ids."),
    ccds: str = typer.Option("13", "--ccds", help="Comma-separated CCD ids (1-16), or 'all'."),
    nexp: int = typer.Option(1, "--nexp", min=1, help="Visits per field and filter tonight."),
    filters: str = typer.Option("zr", "--filters", help="Comma-separated filters (zg, zr, zi)."),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="Quadrant side for small test data "
                                       "(default: the real 3080x3072)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (everything is deterministic given it)."),
    night: str = typer.Option("2020-09-24", "--night", help="UT date of the night, YYYY-MM-DD."),
    history_nights: int = typer.Option(0, "--history-nights", min=0, help="Earlier nights for references."),
    compress: bool = typer.Option(False, "--compress", help="Write Rice-compressed .fits.fz raw files."),
):
    """Simulate a raw ZTF night (science and calibration exposures) with truth tables."""
    import datetime as dt

    from .sim import simulate_night

    try:
        date = dt.date.fromisoformat(night)
    except ValueError:
        raise typer.BadParameter(f"--night must be YYYY-MM-DD, got {night!r}") from None
    ccd_ids = list(range(1, 17)) if ccds.strip() == "all" else _int_list(ccds, "--ccds")
    with typer.progressbar(length=1, label="simulating", show_pos=True) as bar:
        def progress(done, total, name):
            bar.length = total
            bar.update(1)

        result = simulate_night(out, fields=_int_list(fields, "--fields"), ccds=ccd_ids, nexp=nexp,
                                filters=[f.strip() for f in filters.split(",") if f.strip()], size=size,
                                seed=seed, night=date, history_nights=history_nights, compress=compress,
                                progress=progress)
    typer.echo(f"wrote {len(result.science)} science and {len(result.calibration)} calibration raw files "
               f"under {result.root / 'raw'} in {result.elapsed:.1f} s; truth under {result.root / 'sim'}")


@app.command("bench", context_settings={"allow_extra_args": False})
def bench(
    path: Optional[Path] = typer.Option(None, "--path", help="Benchmarks directory (default ./benchmarks)."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only cases whose name contains this."),
    repeat: Optional[int] = typer.Option(None, "--repeat", min=1, help="Timed runs per case (median)."),
    size: str = typer.Option("full", "--size", help="'full' (3072x3080 quadrants) or 'small'."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Where to write the JSON results."),
):
    """Time pipeline stages on full-size data side by side with the peer libraries; print ratios."""
    from . import bench as _bench

    argv = ["--size", size]
    if path is not None:
        argv += ["--path", str(path)]
    for name in only or []:
        argv += ["--only", name]
    if repeat is not None:
        argv += ["--repeat", str(repeat)]
    if json_path is not None:
        argv += ["--json", str(json_path)]
    raise typer.Exit(_bench.main(argv))


def _night_text(night: str) -> str:
    text = night.replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise typer.BadParameter(f"--night must be YYYYMMDD or YYYY-MM-DD, got {night!r}")
    return text


def _report(statuses) -> None:
    """Print each stage status; exit with status 1 (after saying how many) when any failed."""
    failed = 0
    for status in statuses:
        typer.echo(str(status))
        failed += not status.ok
    if failed:
        typer.echo(f"{failed} quadrant(s) failed", err=True)
        raise typer.Exit(1)


@calib_app.command("build")
def calib_build(
    ctx: typer.Context,
    night: str = typer.Option(..., "--night", help="Night of the calibration frames, YYYYMMDD."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root (raw/ in, cal/ out)."),
    ccds: Optional[str] = typer.Option(None, "--ccds", help="Comma-separated CCD ids (default: all found)."),
):
    """Build master biases, flats, bad-pixel masks, gains and crosstalk for a night's calibration frames."""
    from .calib import build_library
    from .products import ProductStore

    paths = build_library(ProductStore(data), _night_text(night),
                          ccds=None if ccds is None else _int_list(ccds, "--ccds"), params=ctx.obj.config.calib)
    typer.echo(f"wrote {len(paths)} calibration products under {Path(data) / 'cal'}")


@calib_app.command("apply")
def calib_apply(
    ctx: typer.Context,
    raw: List[Path] = typer.Argument(..., help="Raw CCD files (paths, or names found under --data)."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root (cal/ in, sci/ out)."),
):
    """Calibrate raw CCD files into sciimg, mskimg and varimg quadrant products."""
    from .calib import run_calib
    from .products import ProductStore

    store = ProductStore(data)
    _report(status for path in raw for status in run_calib(path, store, ctx.obj.config))


@app.command("photom")
def photom_cmd(
    ctx: typer.Context,
    sciimg: List[str] = typer.Argument(..., help="sciimg products (file names or paths under --data), "
                                       "calibrated and astrometrically solved."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
):
    """PSF model, PSF-fit and aperture catalogs, zero point and MAGLIM of science quadrants."""
    from .photom import run_photom
    from .products import ProductStore

    store = ProductStore(data)
    _report(run_photom(Path(name).name, store, ctx.obj.config) for name in sciimg)


def _positions(ra, dec, positions: Optional[Path]):
    import numpy as np

    if positions is not None:
        from astropy.table import Table

        try:
            table = Table.read(positions, format="ascii")
        except Exception as exc:  # astropy raises many kinds for an unreadable table
            raise typer.BadParameter(f"--positions {positions}: not a readable table ({exc})") from None
        if not {"ra", "dec"} <= set(table.colnames):
            raise typer.BadParameter(f"--positions {positions}: needs columns 'ra' and 'dec'")
        return np.asarray(table["ra"], float), np.asarray(table["dec"], float)
    if ra is None or dec is None:
        raise typer.BadParameter("give --ra and --dec, or --positions FILE")
    return np.array([ra]), np.array([dec])


@app.command("forced-phot")
def forced_phot_cmd(
    ra: Optional[float] = typer.Option(None, "--ra", help="Right ascension [deg]."),
    dec: Optional[float] = typer.Option(None, "--dec", help="Declination [deg]."),
    positions: Optional[Path] = typer.Option(None, "--positions", help="Table of many positions (columns ra, "
                                             "dec; any astropy ASCII format)."),
    jd_start: Optional[float] = typer.Option(None, "--jd-start", help="Earliest exposure [JD]."),
    jd_end: Optional[float] = typer.Option(None, "--jd-end", help="Latest exposure [JD]."),
    image: str = typer.Option("diff", "--image", help="'diff' (difference images, as the IPAC service) or "
                              "'sci' (science images)."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder: one forcedphotometry_<n>_lc.txt per "
                                       "position (default: print the first position's table)."),
    baseline: bool = typer.Option(False, "--baseline", help="Subtract the median baseline per fcqfid/rfid "
                                  "(every epoch is baseline: for non-varying positions)."),
):
    """Forced PSF photometry at fixed positions on every image of the data root (the ZFPS service)."""
    from .photom.forced import (baseline_correct, forced_photometry_service, forced_photometry_text,
                                write_forced_photometry)

    ras, decs = _positions(ra, dec, positions)
    table = forced_photometry_service(data, ras, decs, jd_start=jd_start, jd_end=jd_end, image=image)
    codes = table.meta.get("procstatus", [])
    if codes:
        typer.echo(f"request procstatus: {', '.join(str(c) for c in codes)}", err=True)
    if out is None:
        first = table[table["posid"] == 0]
        if baseline and len(first):
            first = baseline_correct(first, min_epochs=1)
        typer.echo(forced_photometry_text(first, ra=float(ras[0]), dec=float(decs[0]), jd_start=jd_start,
                                          jd_end=jd_end), nl=False)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for k in range(len(ras)):
            rows = table[table["posid"] == k]
            if baseline and len(rows):
                rows = baseline_correct(rows, min_epochs=1)
            write_forced_photometry(rows, out / f"forcedphotometry_{k:05d}_lc.txt", ra=float(ras[k]),
                                    dec=float(decs[k]), jd_start=jd_start, jd_end=jd_end)
        typer.echo(f"{len(table)} epochs for {len(ras)} position(s) in {out}")
    if not len(table):
        raise typer.Exit(1)


@refimg_app.command("build")
def refimg_build(
    ctx: typer.Context,
    field: int = typer.Option(..., "--field", help="ZTF field id."),
    ccd: int = typer.Option(..., "--ccd", help="CCD id (1-16)."),
    qid: Optional[str] = typer.Option(None, "--qid", help="Comma-separated quadrants (default: 1,2,3,4)."),
    filtercode: str = typer.Option("zr", "--filter", help="zg, zr or zi."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
):
    """Build reference images from the best epochs of a field/CCD/quadrant/filter."""
    from .products import ProductStore
    from .refimg import build_reference

    store = ProductStore(data)
    _report(build_reference(store, field, ccd, q, filtercode, ctx.obj.config)
            for q in (_int_list(qid, "--qid") if qid else [1, 2, 3, 4]))


@refimg_app.command("synopsis")
def refimg_synopsis(
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the table here (.csv, .ecsv, .html, ...)."),
):
    """Coverage and quality of every reference image of the data root (the weekly review)."""
    from .products import ProductStore
    from .refimg import reference_synopsis

    table = reference_synopsis(ProductStore(data))
    if out is not None:
        table.write(out, overwrite=True)
        typer.echo(f"{len(table)} references -> {out}")
    else:
        typer.echo("\n".join(table.pformat(max_lines=-1, max_width=-1)))


@app.command("subtract")
def subtract_cmd(
    ctx: typer.Context,
    sciimg: List[str] = typer.Argument(..., help="Science quadrants (sciimg names or paths under --data), or "
                                       "SCIIMG REFIMG file paths with --pair."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    pair: bool = typer.Option(False, "--pair", help="Subtract REFIMG from SCIIMG (any calibrated FITS images "
                              "with WCS, MAGZP and a PSF: ztfsds products or IRSA ones); write to --out."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --pair: output folder."),
):
    """ZOGY difference images and candidates for science quadrants (or for a SCIIMG REFIMG pair)."""
    from .products import ProductStore
    from .subtract import run_subtract

    if pair:
        from .subtract.pair import subtract_pair

        if len(sciimg) != 2:
            raise typer.BadParameter("--pair takes exactly two files: SCIIMG REFIMG")
        paths = subtract_pair(Path(sciimg[0]), Path(sciimg[1]), out or Path("."), config=ctx.obj.config)
        for p in paths:
            typer.echo(str(p))
        return
    store = ProductStore(data)
    _report(run_subtract(Path(name).name, store, ctx.obj.config) for name in sciimg)


catalogs_app = typer.Typer(help="Calibrator catalogs (Gaia-like, PS1-like): build, inspect.", no_args_is_help=True)
app.add_typer(catalogs_app, name="catalogs")


@catalogs_app.command("build")
def catalogs_build(
    fields: str = typer.Option(..., "--fields", help="Comma-separated ZTF field ids."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root (catalogs/ written there)."),
    ccds: Optional[str] = typer.Option(None, "--ccds", help="Comma-separated CCD ids (default: whole fields)."),
    kinds: str = typer.Option("gaia,ps1", "--kinds", help="Catalog kinds: gaia, ps1."),
    provider: str = typer.Option("sim", "--provider", help="'sim' (the simulator's exports under --data) or "
                                 "'online' (Gaia archive, VizieR PS1; needs the network)."),
    replace: bool = typer.Option(False, "--replace", help="Delete the existing catalogs of these kinds first."),
):
    """Build the HEALPix-partitioned calibrator catalogs of ZTF fields."""
    from .catalogs import build_catalogs

    paths = build_catalogs(data, _int_list(fields, "--fields"), provider=provider,
                           kinds=[k.strip() for k in kinds.split(",") if k.strip()],
                           ccds=None if ccds is None else _int_list(ccds, "--ccds"), replace=replace)
    typer.echo(f"wrote {len(paths)} catalog partitions under {Path(data) / 'catalogs'}")


config_app = typer.Typer(help="Parameter files: show the defaults, check a file.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(ctx: typer.Context):
    """Print the effective parameters (defaults, or --config FILE) as TOML, with their documentation."""
    typer.echo(ctx.obj.config.to_toml(), nl=False)


@config_app.command("check")
def config_check(file: Path = typer.Argument(..., help="TOML parameter file to validate.")):
    """Validate a parameter file: unknown keys, types and ranges; print its hash."""
    cfg = load_config(file)
    typer.echo(f"{file}: ok (configuration hash {cfg.param_hash()})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ztfsds`` script; returns the exit status.

    A `~ztfsds.errors.ZTFSDSError` (bad input file, bad parameter file) is reported in one line naming
    the file and the problem, with exit status 2, instead of a traceback.
    """
    try:
        app(args=argv, prog_name="ztfsds")  # standalone mode: usage errors and exits become SystemExit
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ZTFSDSError as exc:
        typer.echo(f"ztfsds: error: {exc}", err=True)
        return EXIT_INPUT_ERROR
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
