"""Every script in examples/ runs (from a clean working directory)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


# -- notebooks ---------------------------------------------------------------------------------------
NOTEBOOKS = sorted((Path(__file__).parents[1] / "examples").glob("*.ipynb"))
#: Notebooks that share the demo data root made by the first one (minutes: run with --slow).
DEMO_NOTEBOOKS = ("01_night_end_to_end", "02_forced_photometry", "03_lightcurves_and_archive")


def _execute(path, cwd, timeout=300):
    """Execute a notebook in ``cwd`` with nbclient; returns the executed notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    book = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(book, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return book


def _outputs(book):
    return [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def test_notebooks_are_valid_and_clean():
    nbformat = pytest.importorskip("nbformat")
    assert {p.stem for p in NOTEBOOKS} >= set(DEMO_NOTEBOOKS) | {"04_custom_stage"}
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith("# "), path.name
        assert sum(c.cell_type == "code" for c in book.cells) >= 4, path.name
        assert path.stat().st_size < 200_000, path.name


def test_custom_stage_notebook(tmp_path):
    book = _execute(NOTEBOOKS[[p.stem for p in NOTEBOOKS].index("04_custom_stage")], tmp_path)
    text = "\n".join(o.get("text", "") for o in _outputs(book) if o.get("output_type") == "stream")
    assert "['astrom', 'photom', 'qa', 'subtract', 'alerts', 'archive']" in text
    qa = sorted(tmp_path.rglob("*_qa.json"))
    assert len(qa) == 4
    for p in qa:
        import json

        values = json.loads(p.read_text())
        assert 0.0 <= values["maskfrac"] < 0.5 and values["bkgsig"] > 0


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
@pytest.mark.parametrize("name", DEMO_NOTEBOOKS)
def test_demo_notebooks(name, demo_dir):
    """The demo notebooks, in order, in one working directory (the first makes the data root)."""
    book = _execute(NOTEBOOKS[[p.stem for p in NOTEBOOKS].index(name)], demo_dir, timeout=600)
    outputs = _outputs(book)
    assert outputs and not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    if name == "01_night_end_to_end":
        assert (demo_dir / "ztfsds-data" / "reports" / "ztfsds_20200924_report.html").is_file()
        assert "recovered" in text
    if name == "03_lightcurves_and_archive":
        assert (demo_dir / "lightcurve.png").stat().st_size > 10_000
