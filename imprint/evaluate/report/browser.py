"""Headless Chromium for checking report.html as a browser renders it (screenshot and DOM dump).

Where Chromium comes from, first found wins:
1. `$IMPRINT_CHROMIUM`: path to a chromium executable;
2. `chromium`, `chromium-browser`, `google-chrome` or `chrome` on PATH (e.g. Debian's `apt-get install chromium`);
3. the unpacked Debian packages that `scripts/get-chromium.sh` fetches without root into
   `${IMPRINT_CACHE:-~/.cache/imprint}/chromium/root` (its libraries are found through LD_LIBRARY_PATH).

The flags are those a sandboxed, offline machine needs: no sandbox (root in a container), no GPU, and no
background networking, which would otherwise try to reach Google's hosts at every start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@dataclass(frozen=True)
class Chromium:
    executable: str
    env: dict = field(default_factory=dict)

    def _run(self, url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="imprint-chromium-") as profile:
            command = [self.executable, *FLAGS, f"--user-data-dir={profile}", *args, url]
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env}
            )
        if result.returncode != 0:
            raise RuntimeError(f"chromium exited {result.returncode}: {result.stderr[-2000:]}")
        return result

    def screenshot(self, page: Path, png: Path, width: int = 1400, height: int = 2400) -> Path:
        """Render `page` and write a PNG of the top `width` x `height` pixels."""
        self._run(page.resolve().as_uri(), f"--screenshot={png}", f"--window-size={width},{height}")
        if not png.exists():
            raise RuntimeError(f"chromium wrote no screenshot to {png}")
        return png

    def dump_dom(self, page: Path) -> str:
        """The DOM after parsing and layout, serialised (what the browser built, not the file's text)."""
        return self._run(page.resolve().as_uri(), "--dump-dom").stdout


def cache_dir() -> Path:
    from imprint.models import cache_root

    return cache_root() / "chromium"


def _unpacked(root: Path) -> Chromium | None:
    executable = root / "usr" / "lib" / "chromium" / "chromium"
    if not executable.is_file():
        return None
    libs = sorted({str(p.parent) for p in root.rglob("*.so*") if p.is_file()})
    existing = os.environ.get("LD_LIBRARY_PATH", "")
    return Chromium(str(executable), {"LD_LIBRARY_PATH": ":".join(libs + ([existing] if existing else []))})


def find_chromium() -> Chromium | None:
    """The first Chromium found (see the module docstring), or None."""
    explicit = os.environ.get("IMPRINT_CHROMIUM")
    if explicit:
        path = Path(explicit)
        unpacked = _unpacked(path.parents[3]) if path.name == "chromium" and len(path.parents) > 3 else None
        return unpacked if unpacked and Path(unpacked.executable) == path else Chromium(explicit)
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return Chromium(found)
    for root in (cache_dir() / "root", Path.home() / ".cache" / "imprint" / "chromium" / "root"):
        unpacked = _unpacked(root)
        if unpacked:
            return unpacked
    return None
