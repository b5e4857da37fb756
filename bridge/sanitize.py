"""Neutralising text that members and platforms control, before it is shown or quoted.

Channel names, author names and message text come from people the bridge does
not trust. Written raw to a terminal (log lines, ``bridge status``, the live
UI), an escape sequence could set the window title (OSC ``ESC ] ... BEL``),
clear the screen or move the cursor (CSI ``ESC [ ...``), and a bidi override
could show text in another order than it is stored; in a prompt, a line
separator starts a new line. The functions here replace each such character
with a visible escape (``\\x1b``, ``\\u202e``), so nothing is lost and nothing
acts.

Unsafe characters are those of the Unicode categories Cc (C0 and C1 controls
and DEL: ESC, BEL, CR, LF, NEL, ...), Cf (format characters: bidi embeddings,
overrides, isolates and marks, zero-width space, BOM, ...), Cs (lone
surrogates, which cannot even be encoded as UTF-8), Zl and Zp (line and
paragraph separators). The zero-width joiner and non-joiner are kept: emoji
sequences and several scripts need them, and they move nothing.

Rich's :class:`rich.text.Text` removes only BEL, BS, VT, FF and CR, so ESC
sequences pass through it; use :func:`terminal_safe` on what you give it.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, TypeVar, cast

import attrs

__all__ = ["is_unsafe", "json_safe", "terminal_safe", "terminal_safe_fields",
           "terminal_safe_lines"]

#: Unicode categories whose characters are escaped.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Format characters kept as they are (zero-width non-joiner and joiner).
KEPT = frozenset({"\u200c", "\u200d"})

T = TypeVar("T")


def is_unsafe(char: str) -> bool:
    """True when the one-character string ``char`` is escaped by this module."""
    return char not in KEPT and unicodedata.category(char) in UNSAFE_CATEGORIES


def _python_escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def terminal_safe(text: str) -> str:
    """Return ``text`` with every unsafe character shown as a Python-style escape.

    ``"\\x1b[2J"`` (ESC, then ``[2J``) becomes the seven printable characters
    ``\\x1b[2J``, a newline ``\\x0a``, a right-to-left override ``\\u202e``;
    everything else is unchanged. Safe text is returned as is, and
    the result is always safe (applying it twice changes nothing more).

    Args:
        text: Any text.

    Returns:
        One line without unsafe characters, as long as ``text`` or longer (at
        most 10 characters per unsafe character).
    """
    if text.isprintable():  # fast path: every unsafe character is unprintable
        return text
    return "".join(_python_escape(char) if is_unsafe(char) else char for char in text)


def terminal_safe_lines(text: str) -> str:
    """Like :func:`terminal_safe`, but line breaks (``\\n``) are kept.

    For multi-line text the bridge itself lays out, such as a traceback.
    """
    return "\n".join(terminal_safe(line) for line in text.split("\n"))


def json_safe(value: Any) -> str:
    """Encode ``value`` as one line of JSON in which no unsafe character is left raw.

    Strings stay readable (non-ASCII letters are kept); quotes, backslashes
    and every unsafe character (newlines, ESC, bidi controls, line separators,
    lone surrogates) become ``\\uXXXX`` escapes, so ``json.loads`` gives back
    exactly ``value`` and the line can never be split by any line-breaking
    rule (``str.splitlines`` included). (One exception, inherent to JSON: a
    high and a low surrogate side by side, two lone code points that no JSON
    or UTF-8 input can produce, come back as the one character they pair into.)

    Args:
        value: Anything :func:`json.dumps` accepts.

    Returns:
        The JSON text, one line.

    Raises:
        TypeError: when ``value`` is not JSON-serialisable.
    """
    encoded = json.dumps(value, ensure_ascii=False)
    if encoded.isprintable():
        return encoded
    # JSON's own syntax is printable ASCII, so an unsafe character left in the
    # output is always inside a string, where a \\u escape means the same.
    return "".join(_json_escape(char) if is_unsafe(char) else char for char in encoded)


def terminal_safe_fields(value: T) -> T:
    """A copy of ``value`` with :func:`terminal_safe` applied to every string in it.

    Walks attrs instances (through their ``init`` fields), tuples and lists;
    other values are kept. Used on board snapshots before they are shown.

    Args:
        value: A string, an attrs instance, or a tuple or list of them.

    Returns:
        A value of the same type; ``value`` itself when nothing needed escaping.
    """
    return cast(T, _clean(value))


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return terminal_safe(value)
    if isinstance(value, (tuple, list)):
        items = [_clean(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if attrs.has(type(value)):
        changes = {}
        for field in attrs.fields(type(value)):
            if not field.init:
                continue
            old = getattr(value, field.name)
            new = _clean(old)
            if new is not old:
                changes[field.alias] = new
        return attrs.evolve(value, **changes) if changes else value
    return value
