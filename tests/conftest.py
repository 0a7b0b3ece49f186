"""Shared fixtures: real photos (tests/fixtures/raccoon) and the full raccoon set when present."""

from __future__ import annotations

import signal
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


@pytest.fixture(autouse=True)
def _default_sigchld():
    """Put SIGCHLD back to its default after each test.

    A DataLoader with worker processes leaves torch's SIGCHLD handler installed for the rest
    of the process. In this long-lived pytest process, with several native runtimes loaded,
    a later subprocess's exit signal delivered through that handler was killed by the kernel
    (SIGSEGV, si_code SI_KERNEL: the signal frame could not be set up). Resetting it keeps
    the test process as a user's short-lived one would be.
    """
    yield
    if signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
