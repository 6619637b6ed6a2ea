"""Progress bars that suit both a terminal and a log file.

On a terminal, :class:`tqdm` is tqdm's bar as usual (count, rate, ETA, redrawn in place). When
the bar's stream is not a terminal (Snakemake and DVC send stderr to ``logs/<step>.log``), the
bar is printed as plain lines instead: one when it starts, then at most one every
``LOG_INTERVAL`` seconds, then the final count, each on its own line, so that a log file stays
readable in ``less`` and ``grep`` rather than holding one line of carriage-return redraws. A
transient bar (``leave=False``, e.g. one epoch) writes nothing unless it lasts ``LOG_INTERVAL``.

Use ``from esol.infra.progress import tqdm`` wherever a step loops; the signature is tqdm's.
"""

from __future__ import annotations

import os
import re
import sys
from typing import IO

from tqdm import tqdm as _tqdm

LOG_INTERVAL = float(os.environ.get("ESOL_PROGRESS_INTERVAL", "30"))
"""Seconds between two progress lines in a log file (``ESOL_PROGRESS_INTERVAL`` overrides)."""

_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _is_terminal(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineWriter:
    """A file-like wrapper that turns tqdm's in-place redraws into whole lines.

    tqdm writes ``"\\r" + status + padding`` for each redraw and bare ``"\\r"``/``"\\n"`` or
    cursor moves to clear and end bars; this keeps only the statuses, one per line, and drops
    a status identical to the previous one.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        for part in _CURSOR_MOVES.sub("", str(text)).replace("\n", "\r").split("\r"):
            line = part.rstrip()
            if line and line != self.last:
                self.stream.write(line + "\n")
                self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


class tqdm(_tqdm):
    """tqdm on a terminal; plain, rate-limited progress lines when writing to a file."""

    def __init__(self, *args, **kwargs) -> None:
        stream = kwargs.get("file") or sys.stderr
        if not kwargs.get("disable") and not _is_terminal(stream) and not isinstance(stream, LineWriter):
            kwargs["file"] = LineWriter(stream)
            kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0.1), LOG_INTERVAL)
            kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 10), kwargs["mininterval"])
            kwargs["dynamic_ncols"] = False
            if kwargs.get("leave") is False:  # a transient bar (an epoch): no line unless it lasts
                kwargs["delay"] = max(float(kwargs.get("delay") or 0), LOG_INTERVAL)
            kwargs.setdefault("ncols", 100)  # a log file has no width; keep the bar short
        super().__init__(*args, **kwargs)
