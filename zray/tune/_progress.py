"""A live table of trials on the terminal (status, iteration, time, metric),
redrawn at most every few seconds; off when stdout is not a TTY or verbose=0."""

from __future__ import annotations

import collections
import sys
import time

#: Seconds between two tables.
REFRESH_S = 2.0
#: Rows shown (the rest are counted).
MAX_ROWS = 20


class ProgressTable:
    def __init__(self, metric: str | None, stream=None, refresh_s: float = REFRESH_S):
        self.metric = metric
        self.stream = stream or sys.stdout
        self.refresh_s = refresh_s
        self.started = time.monotonic()
        self.last_drawn = 0.0

    @classmethod
    def for_terminal(cls, metric: str | None, verbose: int):
        if verbose and sys.stdout.isatty():
            return cls(metric)
        return None

    def update(self, controller, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_drawn < self.refresh_s:
            return
        self.last_drawn = now
        self.stream.write(self.render(controller.get_trials(), now) + "\n")
        self.stream.flush()

    def render(self, trials: list, now: float) -> str:
        counts = collections.Counter(t.status.value for t in trials)
        lines = [f"== Status == {now - self.started:.1f}s, {len(trials)} trials: " +
                 " | ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
        header = ["Trial name", "status", "iter", "total time (s)"]
        if self.metric:
            header.append(self.metric)
        rows = [header]
        for trial in trials[:MAX_ROWS]:
            result = trial.last_result
            row = [str(trial), trial.status.value, str(result.get("training_iteration", "")),
                   f"{result.get('time_total_s', 0.0):.2f}" if result else ""]
            if self.metric:
                value = result.get(self.metric, "")
                row.append(f"{value:.4g}" if isinstance(value, float) else str(value))
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if len(trials) > MAX_ROWS:
            lines.append(f"... {len(trials) - MAX_ROWS} more trials")
        return "\n".join(lines)
