"""The scorecard as files: `scorecard.json` (everything) and a self-contained `report.html` beside it."""

from __future__ import annotations

import json
from pathlib import Path

from imprint.evaluate.report.html import render_report

__all__ = ["render_report", "write_report"]


def write_report(card: dict, directory: Path) -> tuple[Path, Path]:
    """Write scorecard.json and report.html into `directory`; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    card_path = directory / "scorecard.json"
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    html_path = directory / "report.html"
    html_path.write_text(render_report(card), encoding="utf-8")
    return card_path, html_path
