"""The short chaos run (`make bench` runs the 10-minute one): kill -9 of random processes of
`make run` while chains and diamonds flow; nothing acknowledged is lost, nothing stays stuck."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import run_chaos


def test_short_chaos_run(tmp_path: Path) -> None:
    report = run_chaos(20, tmp_path / "var", seed=7, every=(2, 4), min_kills=4)
    assert sum(report["kills"].values()) >= 4, report
    assert report["acknowledged"] > 100, report
    assert report["lost"] == 0, report
    assert report["stuck"] == 0, report
    assert report["order_violations"] == 0, report
    assert report["recoveries_that_never_came"] == 0, report
