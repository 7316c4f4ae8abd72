"""Package data (the model files under ``ztfsds/data``): where they are and how they are read."""

from __future__ import annotations

from importlib import resources

import numpy as np

from .errors import InputError

__all__ = ["package_data", "read_npz"]


def package_data(name: str):
    """The path (an importlib.resources Traversable) of ``ztfsds/data/<name>``."""
    return resources.files("ztfsds") / "data" / name


def read_npz(path, *, what: str, missing: str) -> dict:
    """All arrays of an ``.npz`` file (no pickles), read at once.

    Raises
    ------
    ztfsds.errors.InputError
        Naming ``path``: ``missing`` when the file is absent, "unreadable <what>" when it is not an npz.
    """
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise InputError(path, missing) from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable {what}: {exc}") from None
