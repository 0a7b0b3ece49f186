"""Shared fixtures: real photos (tests/fixtures/raccoon) and the full raccoon set when present."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
RACCOON_FIXTURES = FIXTURES / "raccoon"
SHARED_RACCOON = REPO.parent / "shared" / "datasets" / "raccoon"


@pytest.fixture(scope="session")
def raccoon_images() -> list[Path]:
    """The six raccoon photos shipped with the tests (MIT, see their LICENSE)."""
    return sorted((RACCOON_FIXTURES / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def raccoon_dataset_dir() -> Path:
    """The whole raccoon set (200 photos); tests that need it skip when ../shared is absent."""
    if not (SHARED_RACCOON / "annotations").is_dir():
        pytest.skip(f"full raccoon dataset not found at {SHARED_RACCOON}")
    return SHARED_RACCOON
