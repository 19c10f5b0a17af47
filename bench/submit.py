"""`python -m bench.submit`: single-task submissions (`POST /api/tasks`) while the Procfile's two
workers run them, next to RQ's in-process `enqueue` loop in the same run.

The load comes from wrk (C, several threads: not the bottleneck), installed from Debian's
packages when this runs as root and it is missing:
- closed loop: 16 keep-alive connections sending as fast as answers come back;
- paced: 16 connections each waiting a random time (exponential, mean 14 ms) between requests,
  about 1,000 requests/s offered, for the latency a client sees when the API is not saturated;
  it starts once the workers have run every task the closed loop left.
Latencies are wrk's, per request. Compare within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from app import keys
from bench.__main__ import api, finished, procfile_processes, save
from tests.support import ROOT, RedisServer, wait_until

SCRIPT = """
local counter, threads, all = 0, 0, {}
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
  all[threads] = thread
end
function init(args)
  -- The run's own tag (wrk's script argument): ids never repeat those of an earlier run, which
  -- would each be answered as a repeat (200) instead of being stored.
  prefix = args[1] .. "-" .. tostring(tid) .. "-"
end
function request()
  counter = counter + 1
  local body = '{"id":"' .. prefix .. counter .. '","type":"data_processing","duration_ms":0}'
  return wrk.format("POST", "/api/tasks", {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status ~= 201 then not_created = (not_created or 0) + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, thread in ipairs(all) do n = n + (thread:get("not_created") or 0) end
  io.write("not created: " .. n .. "\\n")
end
"""

PACED = """
-- Think times drawn from an exponential distribution (mean 14 ms), seeded per thread: the 16
-- connections arrive independently, about 1,000 requests/s in all, instead of in lockstep bursts
-- of 16 that a fixed delay keeps them in.
local seeded = false
function delay()
  if not seeded then
    math.randomseed(tid * 7919 + os.time())
    seeded = true
  end
  return math.floor(-14 * math.log(1 - math.random()))
end
"""


def wrk_binary() -> str | None:
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, timeout=300)
        found = shutil.which("wrk")
    return found


def parse(out: str) -> dict[str, float]:
    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    found = {f"p{p}_ms": ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M)}
    found["per_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anything but 201 Created: an error, or a repeat answered 200 (which stores nothing).
    found["errors"] = float(re.search(r"not created: (\d+)", out).group(1))  # type: ignore[union-attr]
    return found


def load(wrk: str, port: int, seconds: int, paced: bool) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(SCRIPT + (PACED if paced else ""))
    try:
        tag = ("paced" if paced else "closed") + str(time.monotonic_ns())
        args = [wrk, "-t4", "-c16", f"-d{seconds}s", "--latency", "-s", script.name, f"http://127.0.0.1:{port}", tag]
        return parse(subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout)
    finally:
        os.unlink(script.name)


def rqflow(url: str, base: dict[str, str], wrk: str, seconds: int, processes: int) -> dict[str, Any]:
    redis = Redis.from_url(url)
    redis.flushall()
    env = {**base, "RQFLOW_REDIS_URL": url, "RQFLOW_API_PROCESSES": str(processes)}
    with api(url, env) as port, procfile_processes(url, env, ["worker"]):
        wait_until(lambda: len(redis.smembers("rq:workers")) >= 2, timeout=60, what="the workers")
        closed = load(wrk, port, seconds, paced=False)
        # The paced run starts once the workers have run what the closed one left queued: its
        # latencies are the API's at that load, not those of a machine still working off a backlog.
        wait_until(lambda: finished(redis) >= int(redis.zcard(keys.TASK_INDEX)), timeout=300, what="the backlog")
        return {"closed": closed, "paced": load(wrk, port, seconds, paced=True)}


def rq_enqueue(url: str, n: int) -> float:
    """RQ's own `enqueue` loop, in-process, one client: jobs/s."""
    redis = Redis.from_url(url)
    redis.flushall()
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    started = time.perf_counter()
    for i in range(n):
        queue.enqueue("bench.noop.noop", job_id=f"e{i}")
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="RQFLOW_API_PROCESSES to try")
    args = parser.parse_args()
    wrk = wrk_binary()
    if wrk is None:
        print("wrk is not installed (and this is not root, or there is no apt-get): skipping")
        return
    base = {k: v for k, v in os.environ.items() if not k.startswith("RQFLOW_")}
    base["PYTHONPATH"] = str(ROOT)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; Redis AOF, fsync always; 2 workers running")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as data:
        server = RedisServer.start_new(Path(data), appendonly=True)
        try:
            results["rq_enqueue_per_s"] = rq_enqueue(server.url, 10_000)
            for processes in args.processes:
                results[f"api_processes_{processes}"] = rqflow(server.url, base, wrk, args.seconds, processes)
        finally:
            server.kill()
    print(f"\n[POST /api/tasks, one task each, 16 keep-alive connections, {args.seconds} s]")
    print(f"  plain RQ enqueue loop, in-process, one client: {results['rq_enqueue_per_s']:,.0f} jobs/s")
    for processes in args.processes:
        for mode, label in (("closed", "as fast as answered"), ("paced", "~1,000/s offered")):
            r = results[f"api_processes_{processes}"][mode]
            print(
                f"  {processes} API process(es), {label:20} {r['per_s']:>8,.0f} tasks/s   latency p50 "
                f"{r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f}, p99 {r['p99_ms']:.1f}; not 201: {r['errors']:.0f}"
            )
    save("submit", results)


if __name__ == "__main__":
    main()
