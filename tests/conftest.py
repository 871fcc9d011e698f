"""Shared fixtures: paths to ../shared datasets and small models."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"


def dataset(*parts: str) -> Path:
    """Path under ../shared/data; skips the test when the checkout lacks it."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset {path} not present (CI checks out ../shared)")
    return path


@pytest.fixture
def data_dir() -> Path:
    """../shared/data."""
    return DATA
