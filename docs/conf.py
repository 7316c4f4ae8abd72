"""Sphinx configuration of the ztfsds documentation (build: sphinx-build -W -b html docs docs/_build)."""

import datetime

import ztfsds

project = "ztfsds"
author = "ztfsds developers"
copyright = f"{datetime.date.today().year}, {author}"
version = release = ztfsds.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_automodapi.automodapi",
    "sphinx_automodapi.smart_resolver",
    "numpydoc",
    # the example notebooks (examples/*.ipynb, linked under docs/examples/), rendered without executing them
    "myst_nb",
]
nb_execution_mode = "off"

# automodapi writes the per-object pages under docs/api/ (generated, not committed)
automodapi_toctreedirnm = "api"
automodsumm_inherited_members = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_typehints = "none"
default_role = "obj"
nitpicky = False
exclude_patterns = ["_build", "api/*.inc"]
templates_path = []
html_theme = "alabaster"
html_static_path = []
html_title = f"ztfsds {version}"
suppress_warnings = ["toc.not_included"]
