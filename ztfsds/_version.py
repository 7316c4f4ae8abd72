"""The single source of the package version (read by setuptools without importing ztfsds)."""

__version__ = "0.1.0.dev0"
