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


# -- operations, archive, alerts, lightcurves ------------------------------------------------------------
def _progress_printer():
    """A progress callback ``(phase, done, total, name)`` drawing one bar per phase on stderr."""
    state = {"phase": None, "bar": None}

    def progress(phase, done, total, name=""):
        if state["phase"] != phase:
            if state["bar"] is not None:
                state["bar"].render_finish()
            state["phase"] = phase
            state["bar"] = typer.progressbar(length=max(int(total), 1), label=f"{phase:<10}", show_pos=True,
                                             file=sys.stderr)
            state["bar"].render_progress()
        bar = state["bar"]
        bar.length = max(int(total), 1)
        bar.pos = min(int(done), bar.length)
        bar.render_progress()
        if done >= total:
            bar.render_finish()
            state["phase"], state["bar"] = None, None

    return progress


@app.command("run-night")
def run_night_cmd(
    ctx: typer.Context,
    root: Path = typer.Argument(Path("ztfsds-data"), help="Data root (created). Without --raw-dir and raw "
                                "files already there, a demo night is simulated into it first."),
    raw_dir: Optional[Path] = typer.Option(None, "--raw-dir", help="Real raw files to process (calibration "
                                           "frames first, then science)."),
    night: Optional[str] = typer.Option(None, "--night", help="Night to process, YYYYMMDD (default: all)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="serial, process (default) or dask."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (implies "
                                            "--executor dask)."),
    watch: bool = typer.Option(False, "--watch", help="Keep watching --raw-dir and process exposures as they "
                               "arrive (the Virtual Pipeline Operator); stop with SIGTERM or Ctrl-C."),
    force: Optional[List[str]] = typer.Option(None, "--force", help="Re-run these stages even when up to date "
                                              "('all' for every stage)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write the nightly report."),
):
    """Process a night end to end: calibration, astrometry, photometry, references, subtraction, alerts,
    archive, lightcurves and the nightly report."""
    from .ops import run_night

    if scheduler and not executor:
        executor = "dask"
    summary = run_night(root, raw_dir=raw_dir, night=None if night is None else _night_text(night),
                        config=ctx.obj.config, executor=executor, workers=workers, scheduler=scheduler,
                        watch=watch, progress=_progress_printer(), force=tuple(force or ()), report=not no_report)
    typer.echo(str(summary))
    if summary.failures:
        raise typer.Exit(1)


@app.command("process")
def process_cmd(
    ctx: typer.Context,
    raw: List[Path] = typer.Argument(..., help="Raw CCD files."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root (calibration library in cal/)."),
    force: Optional[List[str]] = typer.Option(None, "--force", help="Re-run these stages ('all')."),
):
    """Run the science pipeline (calib, astrom, photom, subtract, alerts, archive) on raw exposures."""
    from .ops.pipeline import process_exposure

    _report(result for path in raw for result in process_exposure(path, data, ctx.obj.config,
                                                                   force=tuple(force or ())))


@app.command("reprocess")
def reprocess_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    night: Optional[str] = typer.Option(None, "--night", help="YYYYMMDD."),
    field: Optional[int] = typer.Option(None, "--field"),
    ccd: Optional[int] = typer.Option(None, "--ccd", min=1, max=16),
    qid: Optional[int] = typer.Option(None, "--qid", min=1, max=4),
    executor: str = typer.Option("serial", "--executor", help="serial, process or dask."),
):
    """Reprocess the exposures of a night / field / CCD / quadrant, then print a status summary."""
    from .ops.tasks import reprocess

    result = reprocess(data, night=None if night is None else _night_text(night), field=field, ccd=ccd, qid=qid,
                       config=ctx.obj.config, executor=executor, progress=_progress_printer())
    typer.echo(str(result))


@app.command("retry")
def retry_cmd(
    ctx: typer.Context,
    night: str = typer.Option(..., "--night", help="YYYYMMDD."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    stage: Optional[List[str]] = typer.Option(None, "--stage", help="Only failures of these stages."),
):
    """Retry the failed quadrant-stages of a night (archive failures included)."""
    from .ops.tasks import retry_failures

    result = retry_failures(data, _night_text(night), config=ctx.obj.config, stages=stage or None,
                            progress=_progress_printer())
    typer.echo(str(result))


@app.command("cleanup")
def cleanup_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    min_free_gb: Optional[float] = typer.Option(None, "--min-free-gb", help="Free-space target [GB] (default "
                                                "[ops] min_free_gb)."),
    keep_nights: int = typer.Option(1, "--keep-nights", min=0, help="Most recent nights never touched."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted."),
):
    """Free disk space under the data root by the clean-up policy (never an unarchived product)."""
    from .ops.tasks import cleanup

    typer.echo(str(cleanup(data, config=ctx.obj.config, min_free_gb=min_free_gb, keep_nights=keep_nights,
                           dry_run=dry_run)))


@app.command("report")
def report_cmd(
    night: str = typer.Option(..., "--night", help="YYYYMMDD."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default under <data>/reports/)."),
):
    """Write the nightly summary report (HTML with plots)."""
    from .ops.report import write_report

    typer.echo(f"wrote {write_report(data, _night_text(night), out=out)}")


@app.command("match")
def match_cmd(
    ctx: typer.Context,
    field: Optional[int] = typer.Argument(None, help="Field (with CCDID QID FILTER; or --all)."),
    ccdid: Optional[int] = typer.Argument(None),
    qid: Optional[int] = typer.Argument(None),
    filtercode: Optional[str] = typer.Argument(None, help="zg, zr or zi."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    all_: bool = typer.Option(False, "--all", help="Every quadrant-filter with a reference."),
    rebuild: bool = typer.Option(False, "--rebuild", help="From scratch instead of an incremental update."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address."),
    collection: str = typer.Option("ztf", "--collection", help="Lightcurve collection name."),
):
    """Match PSF catalogs across epochs, recalibrate, and write matchfiles and HATS lightcurves."""
    from .match import run_match, run_match_all
    from .products import ProductStore

    store = ProductStore(data)
    if all_:
        _report(run_match_all(store, config=ctx.obj.config, scheduler=scheduler, rebuild=rebuild,
                              collection=collection))
        return
    if None in (field, ccdid, qid, filtercode):
        raise typer.BadParameter("give FIELD CCDID QID FILTER, or --all")
    _report([run_match(store, field, ccdid, qid, filtercode, config=ctx.obj.config, scheduler=scheduler,
                       rebuild=rebuild, collection=collection)])


@app.command("lightcurve")
def lightcurve_cmd(
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    id_: Optional[List[str]] = typer.Option(None, "--id", help="Lightcurve object id (repeatable): ID."),
    pos: Optional[str] = typer.Option(None, "--pos", help="'CIRCLE ra dec radius' [deg]: POS."),
    band: Optional[str] = typer.Option(None, "--band", help="Wavelength range 'lo hi' [m]: BAND."),
    bandname: Optional[str] = typer.Option(None, "--bandname", help="g, r, i (comma-separated): BANDNAME."),
    mag: Optional[str] = typer.Option(None, "--mag", help="Magnitude range 'lo hi': MAG."),
    num_obs: Optional[int] = typer.Option(None, "--num-obs", help="Least number of epochs: NUM_OBS."),
    time: Optional[str] = typer.Option(None, "--time", help="MJD range 'start end': TIME."),
    bad_catflags_mask: Optional[int] = typer.Option(None, "--bad-catflags-mask", help="BAD_CATFLAGS_MASK."),
    collection: Optional[str] = typer.Option(None, "--collection", help="COLLECTION (e.g. ztf, ztf_dr5)."),
    fmt: str = typer.Option("csv", "--format", help="csv, ipac_table, votable, tsv, html or parquet: FORMAT."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: standard output)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a PNG plot here."),
):
    """Lightcurves with the IRSA ZTF lightcurve service's parameters and output columns."""
    from .match.lightcurve_api import plot_lightcurve, query_lightcurves, write_lightcurves

    params = {"FORMAT": fmt}
    for key, value in (("POS", pos), ("BAND", band), ("BANDNAME", bandname), ("MAG", mag), ("NUM_OBS", num_obs),
                       ("TIME", time), ("BAD_CATFLAGS_MASK", bad_catflags_mask), ("COLLECTION", collection)):
        if value is not None:
            params[key] = str(value)
    if id_:
        params["ID"] = ",".join(id_)
    table = query_lightcurves(params, root=data)
    if out is None:
        if fmt == "parquet":
            raise typer.BadParameter("--format parquet needs --out FILE")
        buf = __import__("io").StringIO()
        write_lightcurves(table, buf, fmt)
        typer.echo(buf.getvalue(), nl=False)
    else:
        write_lightcurves(table, out, fmt)
        typer.echo(f"{len(table)} epochs -> {out}", err=True)
    if plot is not None:
        plot_lightcurve(table, plot)
        typer.echo(f"plot -> {plot}", err=True)


def _write_table(table, fmt: str) -> None:
    """Print a result table to standard output (a note on standard error when it is empty)."""
    if not len(table):
        typer.echo("no matching rows", err=True)
        return
    table.write(sys.stdout, format=fmt)


def _database(data: Path, url: Optional[str], config: Config):
    from .archive import connect, migrate
    from .products import ProductStore

    db = connect(url or config.archive.database_url or None, store=ProductStore(data))
    migrate(db)
    return db


@archive_app.command("init")
def archive_init(
    ctx: typer.Context,
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root (the SQLite file lives there)."),
    url: Optional[str] = typer.Option(None, "--url", help="Database URL (default [archive] database_url, or "
                                      "SQLite under the data root)."),
):
    """Create or migrate the database schema."""
    from .archive import current_version

    with _database(data, url, ctx.obj.config) as db:
        typer.echo(f"{db.url}: schema version {current_version(db)}")


@archive_app.command("ingest")
def archive_ingest(
    ctx: typer.Context,
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    url: Optional[str] = typer.Option(None, "--url", help="Database URL."),
    night: Optional[str] = typer.Option(None, "--night", help="Only this night (YYYYMMDD)."),
    no_sources: bool = typer.Option(False, "--no-sources", help="Images only, not their PSF catalogs."),
):
    """Ingest the data root's science quadrants, candidates and references (idempotent)."""
    from .archive import ingest_candidates, ingest_quadrant, ingest_reference
    from .products import ProductStore

    store = ProductStore(data)
    n_img = n_cand = n_ref = 0
    with _database(data, url, ctx.obj.config) as db:
        for key in store.keys("sci", night=None if night is None else _night_text(night), suffix="sciimg"):
            if "CTYPE1" not in store.read_header(key):
                continue
            ingest_quadrant(db, store, key, sources=not no_sources)
            n_img += 1
            if store.exists(key.with_suffix("candidates")):
                ingest_candidates(db, store, key)
                n_cand += 1
        for key in store.keys("ref", suffix="refimg"):
            ingest_reference(db, store, key)
            n_ref += 1
    typer.echo(f"ingested {n_img} quadrant images ({n_cand} with candidates) and {n_ref} references")


@archive_app.command("images")
def archive_images(
    ctx: typer.Context,
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    url: Optional[str] = typer.Option(None, "--url", help="Database URL."),
    ra: Optional[float] = typer.Option(None, "--ra", help="Images covering this position [deg]..."),
    dec: Optional[float] = typer.Option(None, "--dec", help="... with --ra."),
    field: Optional[int] = typer.Option(None, "--field"),
    ccd: Optional[int] = typer.Option(None, "--ccd"),
    qid: Optional[int] = typer.Option(None, "--qid"),
    fid: Optional[int] = typer.Option(None, "--fid", help="1 zg, 2 zr, 3 zi."),
    jd_min: Optional[float] = typer.Option(None, "--jd-min"),
    jd_max: Optional[float] = typer.Option(None, "--jd-max"),
    max_seeing: Optional[float] = typer.Option(None, "--max-seeing", help="[arcsec]"),
    min_maglim: Optional[float] = typer.Option(None, "--min-maglim", help="[mag]"),
    fmt: str = typer.Option("ascii.fixed_width_two_line", "--format", help="astropy Table output format."),
):
    """Find images covering a position, or by field/CCD/quadrant/filter/time/quality."""
    if (ra is None) != (dec is None):
        raise typer.BadParameter("--ra and --dec go together")
    from .archive import search_images

    with _database(data, url, ctx.obj.config) as db:
        table = search_images(db, ra=ra, dec=dec, field=field, ccdid=ccd, qid=qid, fid=fid, jd_min=jd_min,
                              jd_max=jd_max, max_seeing=max_seeing, min_maglim=min_maglim)
    _write_table(table, fmt)


@archive_app.command("serve")
def archive_serve(
    ctx: typer.Context,
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    url: Optional[str] = typer.Option(None, "--url", help="Database URL."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    tokens: Optional[Path] = typer.Option(None, "--tokens", help="Partner tokens file: TOML [tokens] table "
                                          "or JSON, token -> program ids (see the archive docs)."),
    public_after_days: str = typer.Option("365", "--public-after-days", help="Days after which data of "
                                          "proprietary programs become public ('never')."),
    public_programids: str = typer.Option("1", "--public-programids", help="Comma-separated public programs."),
    log_level: str = typer.Option("info", "--log-level"),
):
    """Serve the archive over HTTP: image, catalog, alert and lightcurve search, cutouts, a web page."""
    from .archive.service import serve

    if public_after_days.strip().lower() == "never":
        after = None
    else:
        try:
            after = float(public_after_days)
        except ValueError:
            raise typer.BadParameter(f"--public-after-days must be a number or 'never', got {public_after_days!r}") \
                from None
    serve(data, host=host, port=port, database_url=url or ctx.obj.config.archive.database_url or None, tokens=tokens,
          public_after_days=after, public_programids=_int_list(public_programids, "--public-programids"),
          log_level=log_level)


@alerts_app.command("search")
def alerts_search(
    ctx: typer.Context,
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    url: Optional[str] = typer.Option(None, "--url", help="Database URL."),
    objectid: Optional[str] = typer.Option(None, "--objectid", help="ZTF object id, e.g. ZTF20abcdefg."),
    ra: Optional[float] = typer.Option(None, "--ra", help="Cone centre [deg]..."),
    dec: Optional[float] = typer.Option(None, "--dec"),
    radius: float = typer.Option(2.0, "--radius", help="Cone radius [arcsec]."),
    jd_min: Optional[float] = typer.Option(None, "--jd-min"),
    jd_max: Optional[float] = typer.Option(None, "--jd-max"),
    mag_min: Optional[float] = typer.Option(None, "--mag-min"),
    mag_max: Optional[float] = typer.Option(None, "--mag-max"),
    rb_min: Optional[float] = typer.Option(None, "--rb-min"),
    drb_min: Optional[float] = typer.Option(None, "--drb-min"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    fmt: str = typer.Option("ascii.fixed_width_two_line", "--format", help="astropy Table output format."),
):
    """Search the alert archive by objectId, cone, time range, magnitude and real-bogus score."""
    if (ra is None) != (dec is None):
        raise typer.BadParameter("--ra and --dec go together")
    from .archive import search_alerts

    with _database(data, url, ctx.obj.config) as db:
        table = search_alerts(db, objectid=objectid, ra=ra, dec=dec, radius_arcsec=None if ra is None else radius,
                              jd_min=jd_min, jd_max=jd_max, mag_min=mag_min, mag_max=mag_max, rb_min=rb_min,
                              drb_min=drb_min, limit=limit)
    _write_table(table, fmt)


@alerts_app.command("ingest")
def alerts_ingest(
    ctx: typer.Context,
    source: List[Path] = typer.Argument(..., help="Avro packets, tar files of them, or folders."),
    data: Path = typer.Option(Path("ztfsds-data"), "--data", help="Data root."),
    url: Optional[str] = typer.Option(None, "--url", help="Database URL."),
):
    """Ingest alert packets (ours or real ZTF ones, any schema version) into the alert archive."""
    from .archive import ingest_alerts

    with _database(data, url, ctx.obj.config) as db:
        n = sum(ingest_alerts(db, path) for path in source)
    typer.echo(f"ingested {n} alert packets")


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
