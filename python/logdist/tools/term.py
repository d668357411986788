"""Terminal helpers shared by the CLI commands: number formatting, tables, bars, a progress
line, and a live view that redraws in place with plain ANSI escapes (no curses)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

CLEAR_LINE = "\x1b[2K"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def color_enabled(stream: TextIO) -> bool:
    return is_tty(stream) and "NO_COLOR" not in os.environ


def paint(text: str, code: str, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on else text


def num(n: float | None) -> str:
    if n is None:
        return "-"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.1f}"
    return f"{int(n):,}"


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}%"


def bar(fraction: float, width: int = 20, marker: float | None = None, ascii_only: bool = False) -> str:
    """A horizontal bar filled to `fraction`, with `|` at `marker` (e.g. the expected share)."""
    fraction = min(1.0, max(0.0, fraction))
    full, empty = ("#", ".") if ascii_only else ("\u2588", "\u2591")
    filled = round(fraction * width)
    cells = [full] * filled + [empty] * (width - filled)
    if marker is not None:
        m = min(width - 1, max(0, round(marker * width) - (1 if marker > 0 else 0)))
        cells[m] = "|"
    return "".join(cells)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A plain text table; `align` has one char per column, 'l' or 'r' (default: numbers right)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(visible_len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        out = []
        for i, c in enumerate(r):
            a = align[i] if i < len(align) else ("l" if i == 0 else "r")
            pad = " " * (widths[i] - visible_len(c))
            out.append(c + pad if a == "l" else pad + c)
        return "  ".join(out).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def visible_len(text: str) -> int:
    """Columns a string takes on a terminal (ANSI escape sequences take none)."""
    return len(_ANSI.sub("", text)) if "\x1b" in text else len(text)


def width(stream: TextIO = sys.stdout) -> int:
    return shutil.get_terminal_size((100, 24)).columns if is_tty(stream) else 100


class LiveView:
    """Redraws a block of lines in place on a TTY; on anything else prints each frame's
    `summary` as one line (for logs and pipes)."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.tty = is_tty(stream)
        self._lines = 0

    def show(self, lines: Sequence[str], summary: str) -> None:
        s = self.stream
        try:
            if not self.tty:
                s.write(summary + "\n")
            else:
                out = [HIDE_CURSOR]
                if self._lines:
                    out.append(f"\x1b[{self._lines}F")  # back to the first line of the last frame
                cols = width(s)
                for ln in lines:
                    out.append(CLEAR_LINE + _clip(ln, cols) + "\n")
                for _ in range(self._lines - len(lines)):  # wipe leftovers of a longer frame
                    out.append(CLEAR_LINE + "\n")
                s.write("".join(out))
                self._lines = max(self._lines, len(lines))
            s.flush()
        except (BrokenPipeError, ValueError):
            pass

    def close(self) -> None:
        if self.tty:
            try:
                self.stream.write(SHOW_CURSOR)
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass


def _clip(line: str, cols: int) -> str:
    """Cut a line to `cols` visible columns (so a redraw never wraps), keeping ANSI escapes."""
    if visible_len(line) <= cols:
        return line
    out: list[str] = []
    n = 0
    i = 0
    while i < len(line):
        m = _ANSI.match(line, i)
        if m:
            out.append(m.group())
            i = m.end()
            continue
        if n < cols - 1:
            out.append(line[i])
            n += 1
        i += 1
    return "".join(out)


class Progress:
    """A one-line progress bar on a TTY (stderr by default); silent elsewhere."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.stream = stream
        self.on = enabled and is_tty(stream)

    def update(self, fraction: float | None, text: str) -> None:
        if not self.on:
            return
        head = f"[{bar(fraction, 24, ascii_only=False)}] {fraction * 100:5.1f}% " if fraction is not None else ""
        try:
            self.stream.write("\r" + CLEAR_LINE + _clip(head + text, width(self.stream)))
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            self.on = False

    def done(self) -> None:
        if self.on:
            try:
                self.stream.write("\r" + CLEAR_LINE)
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass
