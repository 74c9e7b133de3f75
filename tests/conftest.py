"""Fixtures shared by the command-line tests, and the CI skip policy (tests/skip_policy.py).

The suite computes in fp32 on every CPU (`IMPRINT_PRECISION=fp32`), so golden files and trained fixtures hold the
same numbers on an AVX2 host and on one with native bf16; the tests of the bf16 path ask for it themselves
(`monkeypatch.setenv("IMPRINT_PRECISION", "auto")`)."""

import os

import pytest
from skip_policy import pytest_configure, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401  (hooks)

os.environ.setdefault("IMPRINT_PRECISION", "fp32")


@pytest.fixture
def cli_ws(tmp_path, monkeypatch):
    """A workspace directory the CLI uses by default ($IMPRINT_HOME), on the `tiny` model, with a private cache."""
    monkeypatch.setenv("IMPRINT_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("IMPRINT_MODEL", "tiny")
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "ws"
