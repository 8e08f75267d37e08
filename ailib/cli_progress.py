"""The old home of the ``ailib`` command's progress display, kept so that existing imports work:
everything here is `ailib.progress` (``Progress`` is `ailib.progress.ProgressBar`)."""

from __future__ import annotations

from .progress import FALLBACK_COLUMNS, REDRAW_SECONDS, clock, epoch_line, terminal_columns
from .progress import ProgressBar as Progress

__all__ = [
    "FALLBACK_COLUMNS",
    "REDRAW_SECONDS",
    "Progress",
    "clock",
    "epoch_line",
    "terminal_columns",
]
