"""ISO 8601 timestamps, as platforms write them, read as epoch seconds."""

from __future__ import annotations

import datetime
import time


def parse_iso(value: object) -> float | None:
    """Read an ISO 8601 timestamp as epoch seconds; a time without a zone is UTC.

    Args:
        value: The timestamp, e.g. ``"2024-05-01T12:00:00.000Z"`` or
            ``"2024-05-01T14:00:00+02:00"``; anything else is unreadable.

    Returns:
        Seconds since the epoch, or None when ``value`` is not a string or not
        an ISO 8601 date and time.
    """
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def is_stale(created_at: str, window_s: float, now: float | None = None) -> bool:
    """True when an ISO 8601 timestamp is more than ``window_s`` seconds old.

    An unparsable or missing timestamp is not stale (the message is handled).

    Args:
        created_at: The message's timestamp (see :func:`bridge.isotime.parse_iso`).
        window_s: The catch-up window, in seconds.
        now: Epoch seconds to measure from (default: the current time).
    """
    created = parse_iso(created_at)
    return created is not None and (now if now is not None else time.time()) - created > \
        window_s
