"""Progress bars for a running dataset: one per operator on the driver's
terminal, as Ray Data draws them.

Drawn with tqdm, or rich when tqdm is missing, only while the driver's stderr
is a terminal and ``DataContext.enable_progress_bars`` is true; otherwise (or
with neither library installed) every call here does nothing.
"""

from __future__ import annotations

import sys


def _library():
    try:
        import tqdm
        return "tqdm", tqdm
    except ImportError:
        pass
    try:
        import rich.progress
        return "rich", rich.progress
    except ImportError:
        return None, None


def enabled(context) -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(context.enable_progress_bars and isatty is not None and isatty())


class ProgressBar:
    """Blocks (and rows) an operator has produced; ``total`` blocks if known."""

    def __init__(self, name: str, total: int | None, position: int, enabled: bool):
        self._bar = self._rich = None
        kind, library = _library() if enabled else (None, None)
        if kind == "tqdm":
            self._bar = library.tqdm(total=total, desc=f"- {name}", position=position,
                                     unit=" blocks", leave=True, dynamic_ncols=True)
        elif kind == "rich":
            self._rich = library.Progress(transient=False)
            self._rich.start()
            self._bar = self._rich.add_task(f"- {name}", total=total)

    def update(self, rows: int) -> None:
        if self._bar is None:
            return
        if self._rich is not None:
            self._rich.advance(self._bar)
            return
        self._bar.update(1)
        self._bar.set_postfix_str(f"{rows} rows", refresh=False)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self._bar is not None:
            self._bar.close()
        self._bar = self._rich = None
