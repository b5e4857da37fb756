"""A short soak in CI: faults and kill -9 restarts; nothing lost, nothing twice."""

from __future__ import annotations

from bridge.ops.soak import percentile, run_soak


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0


def test_short_soak_loses_nothing_and_doubles_nothing() -> None:
    lines: list[str] = []
    report = run_soak(duration_s=15, channels=2, rate=4, seed=7, kill_every_s=5,
                      progress=lines.append)
    assert report.sent > 20, report.text()
    assert report.restarts >= 1, report.text()
    assert sum(report.faults.values()) >= 5, report.text()
    assert report.lost == 0, report.text()
    assert report.twice == 0, report.text()
    assert report.answered == report.sent
    assert report.db_bytes > 0 and report.db_samples, report.text()
    assert "database" in report.text()
