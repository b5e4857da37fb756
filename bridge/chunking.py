"""Split an answer into pieces that each fit under a platform's content limit."""

from __future__ import annotations


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
