"""Build the Cython extensions in ztfsds/_ext (all metadata lives in pyproject.toml)."""

from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

EXT_DIR = Path("ztfsds") / "_ext"

extensions = [
    Extension(
        f"ztfsds._ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for pyx in sorted(EXT_DIR.glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    )
)
