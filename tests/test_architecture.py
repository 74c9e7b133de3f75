"""The rooms of imprint and the imports between them, as docs/design/architecture.md draws them: the import-linter
contracts in pyproject.toml hold (no upward import, no cycle in any package), and the page lists the contract's
rooms in the contract's order, so neither can drift from the other."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return layers


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_the_architecture_page_lists_the_contracts_rooms_in_order():
    page = (ROOT / "docs" / "design" / "architecture.md").read_text()
    table = page.split("## Rooms and the imports allowed between them", 1)[1]
    cells = [re.split(r"(?<!\\)\|", line) for line in table.splitlines() if line.startswith("| `")]
    rows = [re.findall(r"`([a-z_]+)`", row[1]) for row in cells]  # the first cell; `\|` separates its rooms
    assert rows == [[room.strip() for room in layer.split("|")] for layer in _layers()]


def test_every_room_of_the_package_is_in_the_contract():
    rooms = {p.stem for p in (ROOT / "imprint").iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    listed = {room.strip() for layer in _layers() for room in layer.split("|")}
    assert rooms - {"__init__", "__main__"} == listed
