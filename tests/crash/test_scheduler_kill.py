"""kill -9 of the scheduler: a task due while it is down still runs, once, after its restart."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.procs import find, kill_tree
from tests.deploy.test_launch import Launched
from tests.support import wait_until


def test_a_timed_task_runs_once_after_the_scheduler_is_killed(tmp_path: Path) -> None:
    launched = Launched(tmp_path / "var")
    launched.env.update(RQFLOW_MAINTENANCE_S="2")
    launched.start()
    assert launched.process is not None
    try:
        due = datetime.now(timezone.utc) + timedelta(seconds=3)
        body = {"id": "timed", "type": "data_processing", "run_at": due.isoformat()}
        assert launched.call("POST", "/api/tasks", body)[0] == 201
        schedule = {"id": "tick", "interval_s": 1, "max_runs": 4, "task": {"type": "data_processing"}}
        assert launched.call("POST", "/api/schedules", schedule)[0] == 201
        (scheduler,) = find(launched.process.pid, "scheduler")
        kill_tree(scheduler)
        wait_until(lambda: launched.task("timed")["status"] == "COMPLETED", timeout=60, interval=0.2)
        task = launched.task("timed")
        assert task["attempts"] == 1
        assert task["started_at"] >= due.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        wait_until(lambda: launched.call("GET", "/api/schedules/tick")[1]["next_run_at"] is None, timeout=60)
        runs = launched.call("GET", "/api/tasks?schedule_id=tick")[1]
        assert len(runs) == len({r["id"] for r in runs}) == 4
        assert find(launched.process.pid, "scheduler") != [scheduler]  # it was restarted
    finally:
        launched.stop(signal.SIGTERM)
