"""Shared fixtures for the ztfsds test suite."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    """Directory of the small real-data files the tests use (tests/data)."""
    return DATA

# tests/data holds data and the developer script that made it (needs fastavro): nothing to collect
collect_ignore = ["data"]
