"""The contract suite's fixtures: one harness per platform, and intake hosts on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.contract.harness import HARNESSES, Harness
from tests.contract.host import TestHost

#: Opens a host (started, connected) from stored cursors (channel -> (cursor, position)).
OpenHost = Callable[..., TestHost]


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Each platform in turn."""
    made = HARNESSES[request.param]()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def open_host(harness: Harness) -> Iterator[OpenHost]:
    """Opens intakes of the harness's identity; each is stopped at the end of the test."""
    made: list[TestHost] = []

    def open_(cursors: Mapping[str, tuple[str, int]] | None = None) -> TestHost:
        host = TestHost(harness.platform, harness.agent, harness.space, harness.bindings(),
                        cursors)
        made.append(host)
        return host.start()

    yield open_
    for host in made:
        host.stop()
    for host in made:
        assert not host.errors, host.errors
        assert not host.unknown, f"the intake refused its own messages: {host.unknown}"
