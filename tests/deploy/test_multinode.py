"""Nodes that really are apart: three hosts made of network namespaces joined by veth pairs on a
bridge (in a namespace of its own, so no address exists outside them). One host runs Redis, the
API and the scheduler; two run workers; each runs the Procfile's commands against the Redis
host's address. The test drives the API with the `rqflow` command inside the Redis host.

Needs root (to make namespaces); skipped, saying why, elsewhere. Every namespace is removed
afterwards, and every process killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.embedded import redis_server_binary
from deploy.launch import read_procfile
from tests.support import BIN, REDIS_CONF, ROOT, complete_lines, shell_process, stop_group, wait_until

SUBNET = "10.213.7"
HOSTS = {"redis": f"{SUBNET}.1", "w1": f"{SUBNET}.2", "w2": f"{SUBNET}.3"}
REDIS_URL = f"redis://{HOSTS['redis']}:6379/0"
API = f"http://{HOSTS['redis']}:8000"
KEY = "multinode-test-key"


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"rqprobe{os.getpid() % 10000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


WHY_NOT = _can_make_namespaces()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no multi-host test here: {WHY_NOT}")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Cluster:
    prefix: str
    data: Path
    log: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    """Stops every process `run` started."""

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def build(self) -> None:
        switch = self.ns("sw")
        ip("netns", "add", switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for host, address in HOSTS.items():
            ns, inside, outside = self.ns(host), f"{self.prefix}{host}i", f"{self.prefix}{host}o"
            ip("netns", "add", ns)
            ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            ip("link", "set", inside, "netns", ns)
            ip("link", "set", outside, "netns", switch)
            ip("-n", ns, "link", "set", inside, "name", "eth0")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", switch, "link", "set", outside, "master", "br0")
            ip("-n", switch, "link", "set", outside, "up")

    def cut(self, host: str) -> None:
        """The host's cable pulled: its processes go on, reaching nothing."""
        ip("-n", self.ns(host), "link", "set", "eth0", "down")

    def destroy(self) -> None:
        self.stack.close()
        for host in (*HOSTS, "sw"):
            subprocess.run(["ip", "netns", "del", self.ns(host)], capture_output=True)

    def run(self, host: str, name: str, command: str, **env: str) -> subprocess.Popen[bytes]:
        # Killed at once on the way out: a worker whose host was cut would wait out its grace period.
        started = shell_process(
            f"{host}-{name}",
            command,
            REDIS_URL,
            env={"RQFLOW_TASK_MODULES": "tests.handlers", "RQFLOW_API_KEYS": KEY, **env},
            inside=("ip", "netns", "exec", self.ns(host)),
            grace_s=0,
        )
        proc = self.procs[f"{host}-{name}"] = self.stack.enter_context(started)
        return proc

    def redis(self) -> subprocess.Popen[bytes]:
        command = (
            f"{redis_server_binary()} {REDIS_CONF} --bind {HOSTS['redis']} --protected-mode no "
            f"--port 6379 --dir {self.data} --daemonize no"
        )
        return self.run("redis", "redis-server", command)

    def rqflow(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The `rqflow` command, run on the Redis host (where the API's address is reachable)."""
        env = {**os.environ, "RQFLOW_URL": API, "RQFLOW_API_KEY": KEY}
        return subprocess.run(
            ["ip", "netns", "exec", self.ns("redis"), str(BIN / "rqflow"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    def tasks(self) -> dict[str, dict[str, Any]]:
        listed = self.rqflow("ls", "--json", "--limit", "1000")
        return {t["id"]: t for t in json.loads(listed.stdout)} if listed.returncode == 0 else {}

    def runs(self) -> list[tuple[str, str, int, str, float]]:
        """(start|end, task, attempt, node, time) of every line the handlers wrote."""
        if not self.log.exists():
            return []
        found = []
        for line in complete_lines(self.log):
            kind, task, attempt, node, at = line.split()
            found.append((kind, task, int(attempt), node, float(at)))
        return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(prefix=f"rq{os.getpid() % 100000}", data=tmp_path / "redis", log=tmp_path / "runs.log")
    made.data.mkdir()
    try:
        made.build()
        procfile = read_procfile(ROOT / "Procfile")
        made.redis()
        made.run("redis", "api", procfile["web"], RQFLOW_HOST=HOSTS["redis"], RQFLOW_PORT="8000")
        made.run("redis", "scheduler", procfile["scheduler"])
        for node in ("w1", "w2"):
            made.run(node, "worker", procfile["worker"], RQFLOW_WORKERS="1", RQFLOW_CONCURRENCY="2", TEST_NODE=node)
        wait_until(lambda: made.rqflow("health").returncode == 0, timeout=60, interval=0.5, what="the API")
        yield made
    finally:
        made.destroy()


def submit(cluster: Cluster, tasks: list[dict[str, Any]]) -> None:
    """`rqflow batch`, which returns once every task has ended."""
    sent = cluster.rqflow("batch", "-", "--json", stdin=json.dumps({"tasks": tasks}))
    # 1: a task ended otherwise than COMPLETED; what each ended as is for the test to check.
    assert sent.returncode in (0, 1), sent.stderr


@contextlib.contextmanager
def sending(cluster: Cluster, tasks: list[dict[str, Any]]) -> Iterator[subprocess.Popen[bytes]]:
    """`rqflow batch` of `tasks` in the background (it follows them to their ends), killed on the
    way out, whether or not they have all ended."""
    sender = subprocess.Popen(
        ["ip", "netns", "exec", cluster.ns("redis"), str(BIN / "rqflow"), "batch", "-", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RQFLOW_URL": API, "RQFLOW_API_KEY": KEY},
    )
    try:
        assert sender.stdin is not None
        sender.stdin.write(json.dumps({"tasks": tasks}).encode())
        sender.stdin.close()
        yield sender
    finally:
        sender.kill()
        sender.wait(10)


def test_a_dag_runs_in_order_across_two_worker_nodes(cluster: Cluster) -> None:
    layers = [[f"L{layer}-{n}" for n in range(6)] for layer in range(4)]
    tasks = [
        {
            "id": task_id,
            "type": "node_mark",
            "payload": {"path": str(cluster.log), "seconds": 0.2},
            "dependencies": layers[layer - 1] if layer else [],
        }
        for layer, ids in enumerate(layers)
        for task_id in ids
    ]
    submit(cluster, tasks)
    done = cluster.tasks()
    assert {t["status"] for t in done.values()} == {"COMPLETED"}, done
    started = {task: (node, at) for kind, task, _, node, at in cluster.runs() if kind == "start"}
    ended = {task: at for kind, task, _, _, at in cluster.runs() if kind == "end"}
    assert {node for node, _ in started.values()} == {"w1", "w2"}  # both nodes took tasks
    for task in tasks:
        for parent in task["dependencies"]:
            assert ended[parent] <= started[task["id"]][1], (parent, task["id"])


def test_a_worker_node_cut_off_mid_task_loses_nothing_and_reruns_only_what_it_was_running(
    cluster: Cluster,
) -> None:
    ids = [f"t{n}" for n in range(24)]
    tasks = [{"id": i, "type": "node_mark", "payload": {"path": str(cluster.log), "seconds": 1.5}} for i in ids]
    with sending(cluster, tasks):
        wait_until(
            lambda: any(kind == "start" and node == "w1" for kind, _, _, node, _ in cluster.runs()),
            timeout=30,
            what="w1 to be running a task",
        )
        cut_at = time.time()
        cluster.cut("w1")

        def all_completed() -> dict[str, dict[str, Any]] | None:
            listed = cluster.tasks()
            return (
                listed if len(listed) == len(ids) and all(t["status"] == "COMPLETED" for t in listed.values()) else None
            )

        done = wait_until(all_completed, timeout=30 + 24 * 1.5 / 2, interval=0.5, what="every task to complete on w2")
    # In w1's hands at the cut: started there (it can claim nothing after, so a start logged later
    # is of a task it had claimed before), and not ended there before the cut.
    runs = cluster.runs()
    ended_in_time = {t for kind, t, _, node, at in runs if kind == "end" and node == "w1" and at <= cut_at}
    running_on_w1 = {t for kind, t, _, node, _ in runs if kind == "start" and node == "w1"} - ended_in_time
    starts: dict[str, list[tuple[int, str]]] = {}
    for kind, task, attempt, node, _ in runs:
        if kind == "start":
            starts.setdefault(task, []).append((attempt, node))
    assert set(starts) == set(ids)  # none lost
    twice = {task for task, runs in starts.items() if len(runs) > 1}
    assert twice <= running_on_w1, (twice, running_on_w1)  # only what was cut off mid-run ran again
    for task in twice:
        assert done[task]["attempts"] == len(starts[task])  # and its attempts say so
        assert starts[task][-1][1] == "w2"
        rerun_at = max(at for kind, t, _, node, at in cluster.runs() if kind == "start" and t == task and node == "w2")
        assert rerun_at - cut_at <= 30  # taken up by the other node within 30 s of the cut
    assert running_on_w1, "the cut came while w1 was running tasks"


def test_redis_restarted_on_its_data_while_tasks_flow_loses_nothing_acknowledged(cluster: Cluster) -> None:
    def marking(prefix: str, count: int, seconds: float) -> list[dict[str, Any]]:
        payload = {"path": str(cluster.log), "seconds": seconds}
        return [{"id": f"{prefix}{n}", "type": "node_mark", "payload": payload} for n in range(count)]

    # A warm start, both nodes having run something: more tasks than one node runs at once, each
    # longer than the other node waits (up to a second) when the first took the doorbell's ring;
    # again if a node was still starting.
    rounds = iter(range(1000))

    def warmed() -> bool:
        submit(cluster, marking(f"w{next(rounds)}-", 4, 1.5))
        return {node for kind, _, _, node, _ in cluster.runs() if kind == "start"} == {"w1", "w2"}

    wait_until(warmed, timeout=30, interval=0, what="both nodes to have run a task")
    first = marking("a", 10, 0.3)
    with sending(cluster, first):
        wait_until(
            lambda: len([r for r in cluster.runs() if r[0] == "end" and r[1].startswith("a")]) >= 2,
            timeout=30,
            what="tasks to flow",
        )
        acknowledged = set(cluster.tasks())  # what the API has answered for
        stop_group(cluster.procs.pop("redis-redis-server"), 0)
        time.sleep(1)  # Redis away for a moment while workers, API and scheduler keep trying
        cluster.redis()
        wait_until(lambda: cluster.rqflow("health").returncode == 0, timeout=30, interval=0.5, what="the API back")
        later = marking("b", 4, 0)
        submit(cluster, later)
    expected = acknowledged | {t["id"] for t in later}

    def all_completed() -> bool:
        listed = cluster.tasks()
        return all(listed.get(i, {}).get("status") == "COMPLETED" for i in expected)

    wait_until(all_completed, timeout=60, interval=0.5, what="every acknowledged task to complete")
    ended = {task for kind, task, _, _, _ in cluster.runs() if kind == "end"}
    assert expected <= ended, expected - ended  # run to their ends on a node, not only listed as completed
