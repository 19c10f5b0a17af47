"""The `rqflow` command, run as a user runs it, against the real API and an engine worker."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support import BIN, free_port

RQFLOW = str(BIN / "rqflow")


def rqflow(*args: str, stdin: str | None = None, url: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RQFLOW_URL": url, "COLUMNS": "200"}
    return subprocess.run([RQFLOW, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)


def lines_within(fd: int, seconds: float) -> Iterator[bytes]:
    """Lines from a pipe as they come; the test fails, instead of hanging, if one is not complete
    within `seconds` of the first call. Read from the file descriptor: a buffered reader may hold
    lines that select() no longer sees."""
    deadline = time.monotonic() + seconds
    pending = b""
    while True:
        while b"\n" not in pending:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], f"no line came within {seconds} s"
            chunk = os.read(fd, 65536)
            assert chunk, "the output ended"
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        yield line


def test_submit_and_wait_exits_0_when_it_completed(server: str) -> None:
    done = rqflow("submit", "echo", "--id", "cli-1", "--payload", '{"n": 3}', "--wait", "--json", url=server)
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["status"] == "COMPLETED" and task["result"]["payload"] == {"n": 3}
    shown = rqflow("show", "cli-1", url=server)
    assert shown.returncode == 0 and "completed" in shown.stdout and "COMPLETED" in shown.stdout


def test_a_task_that_fails_exits_1(server: str) -> None:
    failed = rqflow("submit", "flaky", "--max-attempts", "1", "--wait", url=server)
    assert failed.returncode == 1, failed.stderr
    assert "FAILED" in failed.stdout


def test_a_batch_shows_its_progress_until_every_task_ended(server: str, tmp_path: Path) -> None:
    dag = [{"id": f"b{n}", "type": "echo"} | ({"dependencies": [f"b{n - 1}"]} if n else {}) for n in range(20)]
    ndjson = tmp_path / "dag.ndjson"
    ndjson.write_text("\n".join(json.dumps(t) for t in dag))
    ran = rqflow("batch", str(ndjson), url=server)
    assert ran.returncode == 0, ran.stderr
    assert "20/20" in ran.stderr  # the progress bar's last state
    assert "COMPLETED" in ran.stdout and "20" in ran.stdout
    with_failure = [{"id": "ok", "type": "echo"}, {"id": "bad", "type": "flaky", "max_attempts": 1}]
    summary = rqflow("batch", "-", "--json", stdin=json.dumps({"tasks": with_failure}), url=server)
    assert summary.returncode == 1
    assert json.loads(summary.stdout) == {
        "count": 2,
        "statuses": {"COMPLETED": 1, "FAILED": 1},
        "not_completed": ["bad"],
    }


def test_bad_input_exits_2_with_the_servers_explanation(server: str) -> None:
    unknown = rqflow("submit", "no-such-type", url=server)
    assert unknown.returncode == 2 and "no-such-type" in unknown.stderr
    assert rqflow("submit", "echo", "--payload", "{nope", url=server).returncode == 2
    assert rqflow("submit", "echo", "--at", "2030-01-01T00:00:00", "--delay", "5", url=server).returncode == 2
    assert rqflow("no-such-command", url=server).returncode == 2


def test_an_unreachable_server_exits_3() -> None:
    down = rqflow("health", url=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 3 and "cannot be reached" in down.stderr


def test_list_cancel_retry_remove_and_schedules(server: str) -> None:
    assert (
        rqflow("submit", "data_processing", "--id", "slow", "--payload", "{}", "--delay", "3600", url=server).returncode
        == 0
    )
    listed = json.loads(rqflow("ls", "--status", "scheduled", "--json", url=server).stdout)
    assert [t["id"] for t in listed] == ["slow"]
    assert json.loads(rqflow("cancel", "slow", "--json", url=server).stdout)["status"] == "CANCELED"
    assert rqflow("retry", "slow", url=server).returncode == 0
    assert rqflow("rm", "slow", url=server).returncode == 0
    assert rqflow("show", "slow", url=server).returncode == 2  # 404: gone
    assert rqflow("schedules", "add", "echo", "--id", "tick", "--every", "60", url=server).returncode == 0
    assert json.loads(rqflow("schedules", "pause", "tick", "--json", url=server).stdout)["paused"] is True
    assert json.loads(rqflow("schedules", "resume", "tick", "--json", url=server).stdout)["paused"] is False
    assert [s["id"] for s in json.loads(rqflow("schedules", "ls", "--json", url=server).stdout)] == ["tick"]
    assert rqflow("schedules", "rm", "tick", url=server).returncode == 0
    assert json.loads(rqflow("health", "--json", url=server).stdout)["status"] == "ok"


def test_watch_prints_events_as_they_happen(server: str) -> None:
    env = {**os.environ, "RQFLOW_URL": server}
    watcher = subprocess.Popen(
        [RQFLOW, "watch", "--type", "echo", "--json"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert watcher.stdout is not None
    try:
        # Probes until the watcher prints something: from then on it follows, and misses nothing.
        probes = 0
        while not select.select([watcher.stdout], [], [], 0.5)[0]:
            assert probes < 40, "the watcher printed nothing"
            assert rqflow("submit", "echo", "--id", f"probe-{probes}", url=server).returncode == 0
            probes += 1
        assert rqflow("submit", "echo", "--id", "watched", url=server).returncode == 0
        seen: list[str] = []
        for line in lines_within(watcher.stdout.fileno(), 60):  # each line comes as its event happens
            event = json.loads(line)
            if event["task"] == "watched":
                seen.append(event["event"])
            if "completed" in seen:
                break
    finally:
        watcher.kill()
        watcher.wait(10)
        watcher.stdout.close()
    assert seen == ["submitted", "started", "completed"]
