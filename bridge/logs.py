"""Logging set-up: safe lines to the board (for the TUI) and, optionally, a stream.

Every handler installed here first redacts secrets (:class:`RedactingFilter`),
then escapes control characters (:class:`TerminalSafeFilter`): log messages
carry channel names, author names and agent output, and an escape sequence in
them must not act on the operator's terminal or forge a log line.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from bridge.board import Board
from bridge.sanitize import terminal_safe, terminal_safe_lines
from bridge.secrets import RedactingFilter

LINE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: Chatty library loggers kept at WARNING.
QUIET_LOGGERS = ("socketio", "engineio", "urllib3", "aiohttp.access", "pykka")


class TerminalSafeFilter(logging.Filter):
    """A logging filter that renders the message and escapes unsafe characters in it.

    The message becomes one line: control characters (ESC, BEL, CR, LF, ...),
    bidi controls and line separators are shown as escapes such as ``\\x1b``
    (see :func:`bridge.sanitize.terminal_safe`). Exception and stack text are
    escaped the same way but keep their line breaks. Attach it to handlers,
    after :class:`~bridge.secrets.RedactingFilter`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Escape ``record`` in place; always keeps the record."""
        record.msg = terminal_safe(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = terminal_safe_lines(record.exc_text)
        if record.stack_info:
            record.stack_info = terminal_safe_lines(record.stack_info)
        return True


class BoardHandler(logging.Handler):
    """Appends each formatted record to the board's log lines."""

    def __init__(self, board: Board) -> None:
        super().__init__()
        self.board = board

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record (one line; tracebacks folded) and add it to the board."""
        try:
            text = self.format(record)
        except Exception:  # a bad format string must not break the bridge
            text = str(record.msg)
        self.board.add_log(" | ".join(line for line in text.splitlines() if line.strip()))


def setup_logging(board: Board | None, level: str = "INFO",
                  stream: TextIO | None = sys.stderr) -> list[logging.Handler]:
    """Install redacting, terminal-safe handlers on the root logger.

    Args:
        board: Board to receive log lines (the TUI shows the last ones), or None.
        level: Level name for the bridge's own loggers.
        stream: Where plain lines go (``--no-tui``), or None for the board only.

    Returns:
        The handlers installed (pass them to :func:`remove_logging` to undo).
    """
    handlers: list[logging.Handler] = []
    formatter = logging.Formatter(LINE_FORMAT, "%H:%M:%S")
    if board is not None:
        handlers.append(BoardHandler(board))
    if stream is not None:
        handlers.append(logging.StreamHandler(stream))
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        handler.addFilter(TerminalSafeFilter())
        root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    return handlers


def remove_logging(handlers: list[logging.Handler]) -> None:
    """Remove handlers installed by :func:`setup_logging`."""
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)
