"""The CI skip policy (tests/skip_policy.py), run on a tiny test file in a separate pytest: outside CI a skip is a
skip; with IMPRINT_CI=1 every skip is listed at the end with the allow-list, and one not allowed fails the run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
SAMPLE = """
import pytest
from skip_policy import skip_or_fail

def test_passes():
    assert True

def test_needs_a_gpu():
    pytest.skip("no GPU here")

def test_needs_chromium():
    skip_or_fail("no Chromium: run scripts/get-chromium.sh")
"""


def run(tmp_path, ci: bool, allow: str | None = None, files: dict | None = None) -> tuple[int, str]:
    for name, text in (files or {"test_sample.py": SAMPLE}).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the rootdir: not this repository's settings
    env = {k: v for k, v in os.environ.items() if k not in ("IMPRINT_CI", "IMPRINT_ALLOWED_SKIPS")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci:
        env["IMPRINT_CI"] = "1"
    if allow is not None:
        (tmp_path / "allowed.txt").write_text(allow)
        env["IMPRINT_ALLOWED_SKIPS"] = str(tmp_path / "allowed.txt")
    else:
        env["IMPRINT_ALLOWED_SKIPS"] = str(tmp_path / "none.txt")  # no file: nothing allowed
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_outside_ci_a_skip_is_a_skip(tmp_path):
    code, out = run(tmp_path, ci=False)
    assert code == 0 and "1 passed, 2 skipped" in out and "IMPRINT_CI" not in out


def test_in_ci_a_skip_not_allowed_fails_the_run_and_every_skip_is_listed(tmp_path):
    code, out = run(tmp_path, ci=True, allow="# nothing yet\n")
    assert code == 1, out
    assert "skips (IMPRINT_CI): 1 skipped, 1 not allowed" in out
    assert "NOT ALLOWED test_sample.py::test_needs_a_gpu: no GPU here" in out
    # a test that needs what CI must have fails itself, with the reason
    assert "FAILED test_sample.py::test_needs_chromium" in out and "no Chromium: run scripts/get-chromium.sh" in out
    assert "allow-list (" in out and "): 0 entries" in out
    assert "FAILED: 1 skip(s) not in the allow-list" in out


def test_in_ci_an_allowed_skip_passes_and_the_allow_list_is_printed(tmp_path):
    gpu = "test_sample.py::test_needs_a_gpu | a GPU-only test: CI has no GPU\n"
    code, out = run(tmp_path, ci=True, allow=gpu, files={"test_sample.py": SAMPLE.replace("skip_or_fail(", "str(")})
    assert code == 0, out
    assert "skips (IMPRINT_CI): 1 skipped, 0 not allowed" in out
    assert "allowed     test_sample.py::test_needs_a_gpu: no GPU here [a GPU-only test: CI has no GPU]" in out
    assert "): 1 entries" in out and "  test_sample.py::test_needs_a_gpu | a GPU-only test: CI has no GPU" in out


def test_in_ci_a_module_skipped_at_import_counts_too(tmp_path):
    module = 'import pytest\n\npytest.importorskip("no_such_package_here")\n\ndef test_x():\n    pass\n'
    files = {"test_missing.py": module, "test_ok.py": "def test_ok():\n    pass\n"}
    code, out = run(tmp_path, ci=True, allow="test_other.py::* | not this one\n", files=files)
    assert code == 1 and "NOT ALLOWED test_missing.py: could not import 'no_such_package_here'" in out, out
    code, out = run(tmp_path, ci=True, allow="test_missing.py | tried on purpose\n", files=files)
    assert code == 0 and "allowed     test_missing.py" in out, out


@pytest.mark.parametrize("line", ["test_sample.py::test_needs_a_gpu", "test_sample.py::test_needs_a_gpu |  "])
def test_an_allowed_skip_without_a_reason_stops_a_ci_run(tmp_path, line):
    code, out = run(tmp_path, ci=True, allow=line + "\n")
    assert code == 4 and "an allowed skip needs '<test id> | <reason>'" in out and "passed" not in out, out
