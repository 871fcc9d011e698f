"""Shared fixtures: paths to ../shared datasets and small models."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI does (see core/cli.py)
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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
