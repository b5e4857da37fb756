"""ISO 8601 timestamps read as epoch seconds (bridge.isotime)."""

from __future__ import annotations

import pytest

from bridge.isotime import parse_iso

#: 2024-05-01T12:00:00Z in epoch seconds.
NOON = 1_714_564_800.0


@pytest.mark.parametrize("text", ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000Z",
                                  "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00"])
def test_parse_iso_reads_zones_and_takes_a_time_without_one_as_utc(text: str) -> None:
    assert parse_iso(text) == NOON


@pytest.mark.parametrize("value", [None, 1_714_564_800, "", "yesterday", "2024-13-01T00:00:00Z"])
def test_parse_iso_answers_none_for_what_it_cannot_read(value: object) -> None:
    assert parse_iso(value) is None
