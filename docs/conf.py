"""Sphinx configuration. Build: ``python -m sphinx -W --keep-going -b html docs docs/_build``."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "numpyro-rbm"
author = "numpyro-rbm developers"
copyright = "2026, numpyro-rbm developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 2  # links to sections, e.g. units.md#when-is-z-finite-normalisability
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = True  # numpyro_rbm.sklearn follows scikit-learn's docstring style
# Names in docstrings that are types from other libraries, not cross-reference targets here.
nitpicky = False

html_theme = "furo" if __import__("importlib").util.find_spec("furo") else "alabaster"
html_title = "numpyro-rbm"
