"""The examples in the docstrings of every public module run and print what they claim."""

import doctest
import importlib
import pkgutil

import pytest

import ztfsds

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(ztfsds.__path__, "ztfsds.")
    if not m.name.startswith("ztfsds._ext") and m.name != "ztfsds.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
