"""No silent skips in CI: a pytest plugin (loaded by tests/conftest.py) that, when `IMPRINT_CI=1` (`.ci/run` sets
it), ends the run with every skipped test and fails the run on any skip not in the allow-list.

A skip hides whatever it skips: a broken install (no spaCy parser), a missing download (Chromium) or data that is
not where a test looks (`../shared`) all turned into a line of `s` that nobody reads. In CI a skip is therefore a
failure unless `tests/allowed_skips.txt` (or the file named by `IMPRINT_ALLOWED_SKIPS`) names it, one entry a line:

    <test id or fnmatch pattern> | <why this skip is expected in CI>

An entry without a reason is an error. The allow-list is printed at the end of the run with the skips, so what CI
did not test is on record. Outside CI (`IMPRINT_CI` unset) nothing changes: a local `pytest` skips what it cannot
run, as before. Tests that need something CI must have call `skip_or_fail` instead of `pytest.skip`: it fails in
CI with the same message, so the failure names what is missing.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

ALLOW_LIST = Path(__file__).with_name("allowed_skips.txt")


def in_ci() -> bool:
    """True under `.ci/run` (`IMPRINT_CI=1`)."""
    return os.environ.get("IMPRINT_CI", "") not in ("", "0")


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail in CI, where whatever the test needs must be present."""
    __tracebackhide__ = True  # report the calling test's line, not this one
    if in_ci():
        pytest.fail(f"{reason} (IMPRINT_CI is set: CI must run this test)", pytrace=False)
    pytest.skip(reason)


def allowed_skips(path: Path | None = None) -> list[tuple[str, str]]:
    """[(pattern, reason)] from the allow-list file; a missing file is an empty list."""
    path = path or Path(os.environ.get("IMPRINT_ALLOWED_SKIPS") or ALLOW_LIST)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = (part.strip() for part in line.partition("|"))
        if not pattern or not reason:
            raise pytest.UsageError(f"{path}:{n}: an allowed skip needs '<test id> | <reason>', got {line!r}")
        out.append((pattern, reason))
    return out


def _skips(terminalreporter) -> list[tuple[str, str]]:
    """[(test id, skip reason)] of every skipped test or module in this run."""
    out = []
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        out.append((report.nodeid, reason.removeprefix("Skipped: ")))
    return out


def _allowed(nodeid: str, allow: list[tuple[str, str]]) -> str | None:
    return next((reason for pattern, reason in allow if fnmatch.fnmatchcase(nodeid, pattern)), None)


def pytest_configure(config):
    """A malformed allow-list stops a CI run before any test runs."""
    if in_ci():
        allowed_skips()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """In CI, a run whose tests passed fails (exit 1) when any skip is not allowed."""
    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    allow = allowed_skips()
    if reporter is not None and any(_allowed(nodeid, allow) is None for nodeid, _ in _skips(reporter)):
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """In CI: every skip, allowed or not, then the allow-list itself."""
    if not in_ci():
        return
    allow, skips = allowed_skips(), _skips(terminalreporter)
    bad = [(nodeid, reason) for nodeid, reason in skips if _allowed(nodeid, allow) is None]
    write = terminalreporter.write_line
    terminalreporter.section(f"skips (IMPRINT_CI): {len(skips)} skipped, {len(bad)} not allowed", sep="=")
    for nodeid, reason in skips:
        allowed = _allowed(nodeid, allow)
        write(f"allowed     {nodeid}: {reason} [{allowed}]" if allowed else f"NOT ALLOWED {nodeid}: {reason}")
    write(f"allow-list ({os.environ.get('IMPRINT_ALLOWED_SKIPS') or ALLOW_LIST.name}): {len(allow)} entries")
    for pattern, reason in allow:
        write(f"  {pattern} | {reason}")
    if bad:
        write(f"FAILED: {len(bad)} skip(s) not in the allow-list: make the test run in CI, or allow it with a reason")
