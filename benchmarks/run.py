"""Run the ztfsds benchmarks: ``python benchmarks/run.py [--only NAME] [--size small] ...``."""
import sys
from pathlib import Path
from ztfsds.bench import main
sys.exit(main(["--path", str(Path(__file__).resolve().parent), *sys.argv[1:]]))
