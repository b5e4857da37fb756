"""Tests of bridge.chunking.split_message."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.chunking import split_message, utf16_length


def squeeze(text: str) -> str:
    """``text`` without any whitespace."""
    return "".join(text.split())


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("hello", 10, ["hello"]),
        ("hello", 5, ["hello"]),
        ("aaa bbb\nccc ddd", 10, ["aaa bbb", "ccc ddd"]),  # newline preferred over space
        ("aaa bbb ccc", 8, ["aaa bbb", "ccc"]),  # last space that fits
        ("aaaa\nbb cc dd", 9, ["aaaa", "bb cc dd"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),  # hard cut
        ("abcd efgh", 4, ["abcd", "efgh"]),  # space right after the limit
        ("abcd\n\n\nefgh", 4, ["abcd", "efgh"]),  # blank lines around a cut dropped
        ("  padded  ", 3, ["pad", "ded"]),
        ("a", 1, ["a"]),
    ],
)
def test_split_examples(text: str, limit: int, expected: list[str]) -> None:
    assert split_message(text, limit) == expected


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t\n "])
def test_empty_or_whitespace_gives_no_pieces(text: str) -> None:
    assert split_message(text, 10) == []


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_rejected(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_message("text", limit)


def test_long_text_pieces_fit() -> None:
    text = "\n".join(f"line {i} " + "word " * (i % 7) for i in range(300))
    pieces = split_message(text, 100)
    assert len(pieces) > 1
    assert all(0 < len(p) <= 100 for p in pieces)
    assert squeeze("".join(pieces)) == squeeze(text)


def test_tab_after_cut_is_dropped() -> None:
    assert split_message("aaaa \tbbbb", 5) == ["aaaa", "bbbb"]


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab xy\n\t\u00e9\u4e2d")) | st.characters(),
                 max_size=400),
    limit=st.integers(min_value=1, max_value=60),
)
def test_split_properties(text: str, limit: int) -> None:
    pieces = split_message(text, limit)
    assert all(len(piece) <= limit for piece in pieces)
    assert all(piece.strip() for piece in pieces)  # no empty or blank piece
    assert squeeze("".join(pieces)) == squeeze(text)
    if not text.strip():
        assert pieces == []
    if len(text.strip()) <= limit:
        assert pieces == ([text.strip()] if text.strip() else [])


def test_utf16_limit_counts_emoji_as_two_units() -> None:
    text = "😀" * 10 + " " + "a" * 5
    assert utf16_length(text) == 26
    pieces = split_message(text, 8, utf16=True)
    assert all(utf16_length(p) <= 8 for p in pieces)
    assert "".join(pieces) == text.replace(" ", "")
    assert pieces[0] == "😀" * 4


@given(st.text(min_size=1, max_size=300), st.integers(min_value=1, max_value=40))
def test_utf16_pieces_fit_and_lose_nothing(text: str, limit: int) -> None:
    pieces = split_message(text, limit, utf16=True)
    assert all(utf16_length(p) <= max(limit, 2) for p in pieces)
    kept = "".join("".join(p.split()) for p in pieces)
    assert kept == "".join(text.split())
