"""A one-line progress bar for long command-line jobs (imports, replays)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``label [#####.....] done/total rate/s`` on one line, redrawn at most twice a second. Drawn only on a
    terminal unless ``enabled`` says otherwise (a log file gets no carriage returns)."""

    def __init__(self, total: int, label: str, *, unit: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done, self.started, self._shown = 0, time.perf_counter(), 0.0

    def advance(self, n: int = 1, *, rate_of: int | None = None) -> None:
        self.show(self.done + n, rate_of=rate_of)

    def show(self, done: int, *, rate_of: int | None = None) -> None:
        """Redraw with ``done`` items finished; the rate is of ``rate_of`` (default: the items)."""
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (now - self._shown <= 0.5 and self.done != self.total):
            return
        self._shown = now
        filled = int(30 * self.done / max(self.total, 1))
        rate = (self.done if rate_of is None else rate_of) / max(now - self.started, 1e-9)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done:,}/{self.total:,} "
                          f"{rate:,.0f}{self.unit}/s")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()
