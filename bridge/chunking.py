"""Split an answer into pieces that each fit under a platform's content limit."""

from __future__ import annotations

import re

_FENCE_INFO = re.compile(r"[\w+#.-]{1,30}")


def utf16_length(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, as JavaScript's ``String.length`` counts.

    A character outside the Basic Multilingual Plane (most emoji) counts 2.
    """
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _fitting(text: str, limit: int) -> int:
    """How many code points of ``text`` fit in ``limit`` UTF-16 code units."""
    units = 0
    for index, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def split_message(text: str, limit: int, *, utf16: bool = False) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters.

    Cuts at the last line break that fits, else at the last space, else hard
    at the limit (never inside a character). Whitespace around a cut is
    dropped; no other character is lost.

    Args:
        text: The answer, any length.
        limit: Maximum characters per piece (at least 1).
        utf16: Count ``limit`` in UTF-16 code units (see :func:`utf16_length`)
            instead of code points, for platforms that measure that way.

    Returns:
        The pieces, in order; ``[]`` for empty or whitespace-only text.

    Raises:
        ValueError: when ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        fits = _fitting(rest, limit) if utf16 else min(limit, len(rest))
        if fits >= len(rest):
            pieces.append(rest)
            break
        if utf16 and fits == 0:  # a 2-unit character under a limit of 1 unit
            fits = 1
        window = rest[: fits + 1]
        cut = window.rfind("\n")
        if cut <= 0:
            cut = window.rfind(" ")
        if cut <= 0:
            piece, rest = rest[:fits], rest[fits:]
        else:
            piece, rest = rest[:cut], rest[cut + 1 :]
        piece = piece.rstrip()
        if piece:
            pieces.append(piece)
        rest = rest.lstrip()
    return pieces


def split_markdown(text: str, limit: int) -> list[str]:
    """Split Markdown (or Slack mrkdwn) into pieces of at most ``limit`` characters, on
    line boundaries.

    A piece cut inside a ```` ``` ```` block ends with a closing ```` ``` ```` line and
    the next piece opens it again (with the same info string when that is a short
    word). A line longer than a piece can hold is cut at a space or hard by
    :func:`bridge.chunking.split_message`. Blank lines at a cut are dropped; a
    fence left open at the end is closed.

    A line with an odd number of ```` ``` ```` opens or closes a block (Slack's
    fences need not stand alone on their line; CommonMark's do, and read the same).

    Args:
        text: mrkdwn, any length.
        limit: Most characters per piece (at least 16).

    Returns:
        The pieces in order; ``[]`` for blank text.

    Raises:
        ValueError: when ``limit`` is below 16.
    """
    if limit < 16:
        raise ValueError(f"limit must be at least 16, got {limit}")
    splitter = _Splitter(limit)
    for line in text.strip().split("\n"):
        splitter.add_line(line)
    return splitter.finish()


class _Splitter:
    """Packs lines into pieces, closing and reopening code fences at cuts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pieces: list[str] = []
        self.lines: list[str] = []
        self.reopen: str | None = None  # the fence line that reopens the open block
        self.opened_here = -1  # index in lines of the line that opened the block
        self.size = 0  # characters of the lines joined

    def add_line(self, line: str) -> None:
        toggles = line.count("```") % 2 == 1
        open_after = (self.reopen is not None) != toggles
        budget = self.limit - (4 if open_after else 0)
        if self.reopen is not None:
            budget -= len(self.reopen) + 1
        if len(line) <= budget:
            self._add(line)
            return
        # Its parts may open a block: leave room for the longest reopening fence.
        budget = self.limit - 4 - self.limit // 4 - 1
        indent = line[:len(line) - len(line.lstrip())]
        if len(indent) > budget // 2:
            indent = ""
        parts = split_message(line, budget - len(indent))
        for number, part in enumerate(parts):
            self._add(indent + part if number == 0 else part)

    def _add(self, unit: str) -> None:
        toggles = unit.count("```") % 2 == 1
        open_after = (self.reopen is not None) != toggles
        need = len(unit) + (1 if self.lines else 0) + (4 if open_after else 0)
        if self.lines and self.size + need > self.limit:
            self._flush()
        if not unit.strip() and self._is_fresh():
            return
        self.size += len(unit) + (1 if self.lines else 0)
        self.lines.append(unit)
        if toggles and self.reopen is None:
            self.reopen = _reopen_line(unit, self.limit)
            self.opened_here = len(self.lines) - 1
        elif toggles:
            self.reopen = None

    def _is_fresh(self) -> bool:
        """True when the piece holds nothing but its reopened fence."""
        return not self.lines or (len(self.lines) == 1 and self.lines[0] == self.reopen
                                  and self.opened_here == -1)

    def _flush(self) -> None:
        carry: list[str] = []
        if (self.reopen is not None and self.opened_here == len(self.lines) - 1
                and self.lines[-1] == self.reopen):
            carry = [self.lines.pop()]  # a fence line with nothing after it: move it on
        if not self._is_fresh():
            self._emit(closing=self.reopen is not None and not carry)
        self.lines = carry or ([self.reopen] if self.reopen is not None else [])
        self.opened_here = 0 if carry else -1
        self.size = len("\n".join(self.lines))

    def finish(self) -> list[str]:
        if not self._is_fresh():
            self._emit(closing=self.reopen is not None)
        return self.pieces

    def _emit(self, *, closing: bool) -> None:
        """The piece so far, without trailing whitespace, closed by a fence when asked."""
        text = "\n".join(self.lines).rstrip()
        if text and text != self.reopen:
            self.pieces.append(text + "\n```" if closing else text)


def _reopen_line(opening: str, limit: int) -> str:
    """The line that reopens the block ``opening`` starts: ```` ``` ```` plus a short info word."""
    stripped = opening.strip()
    info = stripped[3:] if stripped.startswith("```") else ""
    if _FENCE_INFO.fullmatch(info) and len(info) + 3 <= limit // 4:
        return "```" + info
    return "```"


def with_footer(pieces: list[str], footer: str, limit: int) -> list[str]:
    """Pieces of an answer with its footer line after them.

    The footer ends the last piece after a blank line when it fits under ``limit``;
    else it is a piece (or pieces) of its own.

    Args:
        pieces: The answer's pieces, each at most ``limit`` characters.
        footer: One line (duration, tokens, cost), or empty for none.
        limit: Most characters per piece.

    Returns:
        The pieces in posting order; empty only when both are empty.
    """
    footer = footer.strip()
    if not footer:
        return pieces
    if pieces and len(pieces[-1]) + 2 + len(footer) <= limit:
        return [*pieces[:-1], f"{pieces[-1]}\n\n{footer}"]
    return pieces + split_message(footer, limit)
