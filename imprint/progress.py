"""One progress bar for long work (rich): steps done, ETA, and live metrics such as loss and tokens/s."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Bar:
    def __init__(self, label: str, unit: str = "items", console: Console | None = None):
        self.label = label
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.task = None
        self.unit = unit
        self._logged = -1  # last decile printed when the console is not a terminal (CI logs, pipes)

    def __enter__(self) -> Bar:
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=None, info="")
        return self

    def update(self, done: int, total: int, **info) -> None:
        text = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        self.progress.update(self.task, completed=done, total=total, info=text)
        console = self.progress.console
        decile = done * 10 // max(1, total)
        if not console.is_terminal and decile != self._logged:
            self._logged = decile
            elapsed = self.progress.tasks[0].elapsed or 0.0
            console.print(f"{self.label}: {done}/{total} {self.unit}  {elapsed:.0f}s  {text}", highlight=False)

    def __exit__(self, *exc) -> None:
        self.progress.stop()
