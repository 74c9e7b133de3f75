"""Fixtures shared by the command-line tests, and the CI skip policy (tests/skip_policy.py)."""

import pytest
from skip_policy import pytest_configure, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401  (hooks)


@pytest.fixture
def cli_ws(tmp_path, monkeypatch):
    """A workspace directory the CLI uses by default ($IMPRINT_HOME), on the `tiny` model, with a private cache."""
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "ws"
