"""Split an answer into pieces that each fit under a platform's content limit."""

from __future__ import annotations


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters.

    Cuts at the last line break that fits, else at the last space, else hard
    at the limit. Whitespace around a cut is dropped; no other character is lost.

    Args:
        text: The answer, any length.
        limit: Maximum characters per piece (at least 1).

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
        if len(rest) <= limit:
            pieces.append(rest)
            break
        window = rest[: limit + 1]
        cut = window.rfind("\n")
        if cut <= 0:
            cut = window.rfind(" ")
        if cut <= 0:
            piece, rest = rest[:limit], rest[limit:]
        else:
            piece, rest = rest[:cut], rest[cut + 1 :]
        piece = piece.rstrip()
        if piece:
            pieces.append(piece)
        rest = rest.lstrip()
    return pieces
