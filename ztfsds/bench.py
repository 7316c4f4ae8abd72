"""Benchmark harness: time ztfsds against the libraries a user would otherwise use.

Benchmarks live outside the package, in the ``benchmarks/`` folder of a source checkout. Each
``benchmarks/bench_*.py`` file defines a module-level list ``CASES`` of `Case` objects; `discover` collects
them, `run_cases` times our implementation and every peer on the same data, `format_table` and
`write_json` report the medians and the ratios peer/ours. `main` is the command line (``ztfsds bench`` and
``python benchmarks/run.py``).

Timings are wall-clock medians over ``repeat`` calls (`time.perf_counter`), after one untimed setup. The
cases call our code single-threaded (``workers=1``) so that the comparison with single-threaded peers is
fair; the harness itself changes no global setting (threads, environment).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ztfsds.errors import ZTFSDSError

__all__ = [
    "Case",
    "PeerResult",
    "Result",
    "SIZES",
    "discover",
    "run_cases",
    "format_table",
    "write_json",
    "machine_info",
    "main",
]

log = logging.getLogger(__name__)

#: Data sizes a case's ``setup`` accepts: ``'full'`` (real ZTF sizes) and ``'small'`` (seconds, for tests).
SIZES = ("full", "small")


@dataclass(frozen=True)
class Case:
    """One benchmark: a data set, our implementation, and the peers that do the same job.

    Parameters
    ----------
    name : str
        Unique name, dotted by stage (``'calib.stack_median20'``); ``--only`` matches substrings of it.
    setup : callable
        ``setup(size) -> data`` with size ``'full'`` or ``'small'``; not timed.
    ours : callable
        ``ours(data)``: the ztfsds implementation, single-threaded.
    peers : dict of str to callable, optional
        ``{label: peer(data)}``. A peer should import its library inside the function: an `ImportError`
        marks it as missing instead of stopping the run.
    description : str, optional
        One line for the JSON report.
    repeat : int, optional
        Timed calls per implementation (the median is reported); ``--repeat`` overrides it.
    """

    name: str
    setup: Callable[[str], Any]
    ours: Callable[[Any], Any]
    peers: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    description: str = ""
    repeat: int = 3


@dataclass(frozen=True)
class PeerResult:
    """Timings of one peer on one case.

    Attributes
    ----------
    name : str
        The peer's label.
    status : str
        ``'ok'``, ``'missing'`` (its library is not installed) or ``'failed'`` (it raised).
    times : tuple of float
        Wall-clock seconds of each call (empty unless ``status == 'ok'``).
    message : str
        The exception, for a missing or failed peer.
    """

    name: str
    status: str
    times: tuple[float, ...] = ()
    message: str = ""

    @property
    def median(self) -> float | None:
        """Median time in seconds, or None when the peer did not run."""
        return statistics.median(self.times) if self.times else None


@dataclass(frozen=True)
class Result:
    """Timings of one case: ours and each peer's.

    Attributes
    ----------
    case : str
        The case name.
    description : str
        The case description.
    size : str
        ``'full'`` or ``'small'``.
    times : tuple of float
        Wall-clock seconds of each call of our implementation.
    peers : tuple of `PeerResult`
        In the order of the case's ``peers``.
    """

    case: str
    description: str
    size: str
    times: tuple[float, ...]
    peers: tuple[PeerResult, ...] = ()

    @property
    def median(self) -> float:
        """Median time of our implementation in seconds."""
        return statistics.median(self.times)

    def ratio(self, peer: PeerResult) -> float | None:
        """Speed-up of ours over ``peer``: peer median / our median (None when the peer did not run)."""
        if peer.median is None or self.median <= 0:
            return None
        return peer.median / self.median


def discover(path: str | os.PathLike) -> list[Case]:
    """Import every ``bench_*.py`` in a directory and collect the `Case` objects of its ``CASES`` list.

    Parameters
    ----------
    path : path-like
        The benchmarks directory.

    Returns
    -------
    cases : list of `Case`
        In file-name order, then in ``CASES`` order.

    Raises
    ------
    ztfsds.errors.ZTFSDSError
        If the directory does not exist, a file has no ``CASES`` list or holds something else than
        `Case` objects, or two cases share a name.
    """
    root = Path(path)
    if not root.is_dir():
        raise ZTFSDSError(f"{root}: benchmarks directory not found")
    cases: list[Case] = []
    seen: dict[str, Path] = {}
    for file in sorted(root.glob("bench_*.py")):
        module = _import_file(file)
        found = getattr(module, "CASES", None)
        if not isinstance(found, (list, tuple)):
            raise ZTFSDSError(f"{file}: no module-level CASES list of ztfsds.bench.Case")
        for case in found:
            if not isinstance(case, Case):
                raise ZTFSDSError(f"{file}: CASES holds {type(case).__name__!s}, not ztfsds.bench.Case")
            if case.name in seen:
                raise ZTFSDSError(f"{file}: case {case.name!r} is also defined in {seen[case.name]}")
            seen[case.name] = file
            cases.append(case)
    return cases


def _import_file(file: Path):
    name = f"_ztfsds_benchmarks.{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ZTFSDSError(f"{file}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # registered before running, as a normal import does (dataclasses defined there look it up)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def run_cases(cases: Iterable[Case], *, repeat: int | None = None, size: str = "full",
              select: str | Sequence[str] | None = None,
              timer: Callable[[], float] = time.perf_counter) -> list[Result]:
    """Time our implementation and every peer of each case, on the same data.

    Parameters
    ----------
    cases : iterable of `Case`
        The cases, for example from `discover`.
    repeat : int, optional
        Timed calls per implementation; default: each case's own ``repeat``.
    size : {'full', 'small'}, optional
        Passed to each case's ``setup``.
    select : str or sequence of str, optional
        Run only the cases whose name contains one of these substrings.
    timer : callable, optional
        Clock returning seconds (the tests pass a fake one).

    Returns
    -------
    results : list of `Result`
        One per case run. A peer whose library is missing (`ImportError`) or that raises is reported as
        such; an exception from ``setup`` or ``ours`` propagates.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if repeat is not None and (not isinstance(repeat, int) or repeat < 1):
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    if isinstance(select, str):
        select = [select]
    results = []
    for case in cases:
        if select and not any(s in case.name for s in select):
            continue
        n = repeat if repeat is not None else case.repeat
        log.info("benchmark %s (%s): setup", case.name, size)
        data = case.setup(size)
        times = tuple(_time_call(case.ours, data, timer) for _ in range(n))
        log.info("benchmark %s: ours %.4g s", case.name, statistics.median(times))
        peers = tuple(_time_peer(label, fn, data, n, timer) for label, fn in case.peers.items())
        results.append(Result(case=case.name, description=case.description, size=size, times=times,
                              peers=peers))
        del data
        gc.collect()        # a full-size case holds GBs; free them before the next setup
    return results


def _time_call(fn: Callable[[Any], Any], data: Any, timer: Callable[[], float]) -> float:
    t0 = timer()
    out = fn(data)
    elapsed = timer() - t0
    del out     # outside the timed region
    return elapsed


def _time_peer(label: str, fn: Callable[[Any], Any], data: Any, n: int,
               timer: Callable[[], float]) -> PeerResult:
    times = []
    try:
        for _ in range(n):
            times.append(_time_call(fn, data, timer))
    except ImportError as exc:
        log.info("benchmark peer %s: missing (%s)", label, exc)
        return PeerResult(name=label, status="missing", message=str(exc))
    except Exception as exc:    # a broken peer must not stop the other cases
        log.warning("benchmark peer %s failed: %s: %s", label, type(exc).__name__, exc)
        return PeerResult(name=label, status="failed", message=f"{type(exc).__name__}: {exc}")
    log.info("benchmark peer %s: %.4g s", label, statistics.median(times))
    return PeerResult(name=label, status="ok", times=tuple(times))


def _seconds(t: float | None) -> str:
    if t is None:
        return "-"
    if t >= 100:
        return f"{t:.0f}"
    if t >= 1:
        return f"{t:.2f}"
    if t >= 0.001:
        return f"{t:.4f}"
    return f"{t:.2e}"


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table: one row per (case, peer), with the ratio peer/ours shown as ``'12.3x'``.

    Parameters
    ----------
    results : sequence of `Result`

    Returns
    -------
    table : str
        Without a trailing newline. A missing or failed peer shows its status instead of a time.
    """
    header = ("case", "ours median [s]", "peer", "peer median [s]", "peer/ours")
    rows = []
    for res in results:
        if not res.peers:
            rows.append((res.case, _seconds(res.median), "-", "-", "-"))
        for peer in res.peers:
            ratio = res.ratio(peer)
            rows.append((res.case, _seconds(res.median), peer.name,
                         _seconds(peer.median) if peer.status == "ok" else peer.status,
                         "-" if ratio is None else f"{ratio:.1f}x"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = (False, True, False, True, True)

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def machine_info() -> dict[str, Any]:
    """What the timings depend on: platform, CPU count, Python/numpy/ztfsds versions."""
    import numpy

    from ztfsds import __version__

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:     # not on every platform
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "ztfsds": __version__,
    }


def write_json(results: Sequence[Result], path: str | os.PathLike) -> Path:
    """Write the results and the machine information as JSON (parent directories are created).

    Parameters
    ----------
    results : sequence of `Result`
    path : path-like

    Returns
    -------
    path : `pathlib.Path`
    """
    path = Path(path)
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": sorted({r.size for r in results}),
        "machine": machine_info(),
        "results": [
            {
                "case": r.case,
                "description": r.description,
                "size": r.size,
                "ours": {"median_s": r.median, "times_s": list(r.times)},
                "peers": [
                    {"name": p.name, "status": p.status, "median_s": p.median, "times_s": list(p.times),
                     "ratio": r.ratio(p), "message": p.message}
                    for p in r.peers
                ],
            }
            for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _benchmarks_dir(path: str | os.PathLike | None) -> Path:
    if path is not None:
        candidates = [Path(path)]
    else:
        # ./benchmarks, then the source checkout this module runs from (an in-place or editable build)
        candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ZTFSDSError(
        f"no benchmarks directory at {', '.join(str(c) for c in candidates)}: the benchmarks are not "
        "installed with the package; run from a source checkout of ztfsds or pass --path")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: discover, run and report the benchmarks; returns the exit status.

    The table goes to standard output and the JSON report to ``--json`` (default
    ``<benchmarks>/results/bench-<date>.json``).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``): ``--path DIR``, ``--only NAME`` (repeatable, substring),
        ``--repeat N``, ``--size full|small``, ``--json PATH``.

    Returns
    -------
    status : int
        0 on success, 1 when no case was run (none found, or none matches ``--only``).

    Raises
    ------
    ztfsds.errors.ZTFSDSError
        If no benchmarks directory is found.
    """
    parser = argparse.ArgumentParser(prog="ztfsds bench",
                                     description="Time ztfsds against peer libraries.")
    parser.add_argument("--path", default=None,
                        help="benchmarks directory (default: ./benchmarks)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only cases whose name contains NAME (repeatable)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed calls per implementation (default: per case)")
    parser.add_argument("--size", choices=SIZES, default="full", help="data size (default: full)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="JSON report (default: <benchmarks>/results/bench-<date>.json)")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    root = _benchmarks_dir(args.path)
    cases = discover(root)
    results = run_cases(cases, repeat=args.repeat, size=args.size, select=args.only)
    if not results:
        why = f"matches --only {' '.join(args.only)}" if args.only and cases else "(no bench_*.py file)"
        sys.stderr.write(f"no benchmark case {why} in {root}\n")
        return 1
    sys.stdout.write(format_table(results) + "\n")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = write_json(results, args.json or root / "results" / f"bench-{stamp}.json")
    sys.stdout.write(f"results written to {out}\n")
    return 0
