"""Fixtures of the packaging tests: paths, a clean environment, the dev `pulsegate`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PULSEGATE_* variable of the developer's shell leaks into a settings load."""
    for name in list(os.environ):
        if name.startswith("PULSEGATE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def dev_pulsegate() -> Path:
    """The `pulsegate` console script of the venv running these tests."""
    script = Path(sys.executable).parent / "pulsegate"
    if not script.is_file():
        pytest.fail(f"{script} is missing: install the project into the venv (make test-fast does)")
    return script
