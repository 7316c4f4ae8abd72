"""Tests of the benchmark harness ztfsds.bench on tiny fake cases (no real timing involved)."""

import json
import textwrap

import pytest

from ztfsds import bench
from ztfsds.bench import Case, PeerResult, Result, discover, format_table, main, run_cases, write_json
from ztfsds.errors import ZTFSDSError


class FakeClock:
    """A timer that only moves when a fake implementation says it took some time."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def work(self, seconds):
        def run(data):
            self.now += seconds
            return data
        return run


def missing_peer(data):
    import ztfsds_no_such_library  # noqa: F401


def broken_peer(data):
    raise RuntimeError("peer exploded")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def cases(clock):
    sizes = []
    setup = sizes.append        # records the size, returns None as the data
    return sizes, [
        Case(name="calib.fake_stack", setup=setup, ours=clock.work(0.5),
             peers={"slowlib": clock.work(6.15), "absent": missing_peer, "broken": broken_peer},
             description="a fake stack"),
        Case(name="photom.fake_psf", setup=setup, ours=clock.work(2.0), repeat=5),
    ]


def test_run_cases(clock, cases):
    sizes, case_list = cases
    results = run_cases(case_list, size="small", timer=clock)
    assert sizes == ["small", "small"]
    assert [r.case for r in results] == ["calib.fake_stack", "photom.fake_psf"]
    stack, psf = results
    assert stack.times == (0.5, 0.5, 0.5) and stack.median == 0.5 and stack.size == "small"
    assert len(psf.times) == 5 and psf.peers == ()
    slow, absent, broken = stack.peers
    assert (slow.name, slow.status, slow.median) == ("slowlib", "ok", pytest.approx(6.15))
    assert stack.ratio(slow) == pytest.approx(12.3)
    assert absent.status == "missing" and "ztfsds_no_such_library" in absent.message
    assert absent.median is None and stack.ratio(absent) is None
    assert broken.status == "failed" and broken.message == "RuntimeError: peer exploded"


def test_run_cases_select_and_repeat(clock, cases):
    _, case_list = cases
    results = run_cases(case_list, repeat=2, select=["psf"], timer=clock)
    assert [r.case for r in results] == ["photom.fake_psf"]
    assert results[0].times == (2.0, 2.0)
    assert run_cases(case_list, select="nothing", timer=clock) == []
    with pytest.raises(ValueError, match="size"):
        run_cases(case_list, size="huge")
    with pytest.raises(ValueError, match="repeat"):
        run_cases(case_list, repeat=0)


def test_ours_failure_propagates(clock):
    case = Case(name="bad", setup=lambda size: None, ours=broken_peer)
    with pytest.raises(RuntimeError, match="exploded"):
        run_cases([case], timer=clock)


def test_format_table(clock, cases):
    _, case_list = cases
    table = format_table(run_cases(case_list, timer=clock))
    lines = table.splitlines()
    assert lines[0].split() == ["case", "ours", "median", "[s]", "peer", "peer", "median", "[s]",
                                "peer/ours"]
    assert set(lines[1]) == {"-", " "}
    rows = [line.split() for line in lines[2:]]
    assert rows[0] == ["calib.fake_stack", "0.5000", "slowlib", "6.15", "12.3x"]
    assert rows[1] == ["calib.fake_stack", "0.5000", "absent", "missing", "-"]
    assert rows[2] == ["calib.fake_stack", "0.5000", "broken", "failed", "-"]
    assert rows[3] == ["photom.fake_psf", "2.00", "-", "-", "-"]
    assert not table.endswith("\n")
    # columns line up: every line has the ratio column ending at the same place
    assert len({len(line) for line in lines[2:5]}) == 1


def test_format_table_small_times():
    res = Result(case="x", description="", size="small", times=(2e-5,),
                 peers=(PeerResult(name="p", status="ok", times=(1e-3, 2e-3, 9e-3)),))
    assert format_table([res]).splitlines()[2].split() == ["x", "2.00e-05", "p", "0.0020", "100.0x"]


def test_write_json(tmp_path, clock, cases):
    _, case_list = cases
    results = run_cases(case_list, size="small", timer=clock)
    path = write_json(results, tmp_path / "deep" / "bench.json")
    doc = json.loads(path.read_text())
    assert doc["size"] == ["small"]
    assert {"platform", "cpu_count", "python", "numpy", "ztfsds"} <= set(doc["machine"])
    assert doc["machine"]["cpu_count"] >= 1
    assert "T" in doc["date"]
    first = doc["results"][0]
    assert first["case"] == "calib.fake_stack" and first["description"] == "a fake stack"
    assert first["ours"] == {"median_s": 0.5, "times_s": [0.5, 0.5, 0.5]}
    peers = {p["name"]: p for p in first["peers"]}
    assert peers["slowlib"]["ratio"] == pytest.approx(12.3)
    assert peers["absent"]["status"] == "missing" and peers["absent"]["median_s"] is None
    assert peers["broken"]["message"] == "RuntimeError: peer exploded"
    assert doc["results"][1]["peers"] == []


BENCH_FILE = textwrap.dedent('''
    from ztfsds.bench import Case

    def setup(size):
        return list(range(10 if size == "small" else 1000))

    CASES = [
        Case(name="demo.sum", setup=setup, ours=sum, peers={"sorted": sorted}, repeat=2),
        Case(name="demo.max", setup=setup, ours=max),
    ]
''')


def test_discover(tmp_path):
    (tmp_path / "bench_demo.py").write_text(BENCH_FILE)
    (tmp_path / "helper.py").write_text("raise RuntimeError('not a benchmark file')\n")
    cases = discover(tmp_path)
    assert [c.name for c in cases] == ["demo.sum", "demo.max"]
    assert cases[0].repeat == 2 and list(cases[0].peers) == ["sorted"]
    (tmp_path / "bench_twice.py").write_text(BENCH_FILE)
    with pytest.raises(ZTFSDSError, match="also defined"):
        discover(tmp_path)


def test_discover_errors(tmp_path):
    with pytest.raises(ZTFSDSError, match="not found"):
        discover(tmp_path / "missing")
    (tmp_path / "bench_empty.py").write_text("x = 1\n")
    with pytest.raises(ZTFSDSError, match="no module-level CASES"):
        discover(tmp_path)
    (tmp_path / "bench_empty.py").write_text("CASES = ['demo']\n")
    with pytest.raises(ZTFSDSError, match="not ztfsds.bench.Case"):
        discover(tmp_path)


def test_main(tmp_path, capsys):
    (tmp_path / "bench_demo.py").write_text(BENCH_FILE)
    out = tmp_path / "report.json"
    assert main(["--path", str(tmp_path), "--size", "small", "--only", "sum", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "demo.sum" in printed and "demo.max" not in printed and "sorted" in printed
    assert str(out) in printed
    doc = json.loads(out.read_text())
    assert [r["case"] for r in doc["results"]] == ["demo.sum"]
    assert len(doc["results"][0]["ours"]["times_s"]) == 2


def test_main_default_json_and_no_match(tmp_path, capsys):
    (tmp_path / "bench_demo.py").write_text(BENCH_FILE)
    assert main(["--path", str(tmp_path), "--size", "small", "--repeat", "1"]) == 0
    (report,) = (tmp_path / "results").glob("bench-*.json")
    assert len(json.loads(report.read_text())["results"]) == 2
    assert main(["--path", str(tmp_path), "--only", "nomatch"]) == 1
    assert "nomatch" in capsys.readouterr().err


def test_main_without_benchmarks_directory(tmp_path):
    with pytest.raises(ZTFSDSError, match="source checkout.*--path"):
        main(["--path", str(tmp_path / "nowhere")])


def test_no_heavy_imports():
    """The harness imports nothing heavy at import time (the CLI imports it for every command)."""
    import subprocess
    import sys

    code = ("import sys, ztfsds, ztfsds.errors; before = set(sys.modules); import ztfsds.bench; "
            "print(sorted(m for m in ('numpy', 'astropy') if m in set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=bench.Path(bench.__file__).parent.parent)
    assert out.stdout.strip() == "[]"
