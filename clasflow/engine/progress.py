"""A progress bar with ETA and images/s, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


class StepProgress:
    def __init__(self, description: str, total: int, completed: int = 0):
        self.enabled = sys.stderr.isatty()
        self.images = 0
        self.start = time.time()
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[ips]:.1f} img/s"), TimeRemainingColumn(), transient=True,
            )
            self._task = self._progress.add_task(description, total=total, completed=completed, ips=0.0)

    def __enter__(self) -> "StepProgress":
        if self.enabled:
            self._progress.start()
        return self

    def advance(self, images: int) -> None:
        self.images += images
        if self.enabled:
            ips = self.images / max(time.time() - self.start, 1e-9)
            self._progress.update(self._task, advance=1, ips=ips)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._progress.stop()
