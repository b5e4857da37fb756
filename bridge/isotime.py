"""ISO 8601 timestamps, as platforms write them, read as epoch seconds."""

from __future__ import annotations

import datetime


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
