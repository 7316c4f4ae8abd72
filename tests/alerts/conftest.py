"""Fixtures of the alert tests (the data themselves are built in tests/alerts/synth.py)."""

import pytest

from .synth import synthetic_quadrant


@pytest.fixture(scope="session")
def quadrant():
    """A 40-candidate synthetic quadrant on the real field-655 WCS: (cands, sci header, diff header, stamps)."""
    return synthetic_quadrant()
