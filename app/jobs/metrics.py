"""`GET /metrics`: the Prometheus text format, made from what Redis holds.

The counters and histograms of tasks are added to in Redis by the scripts that change tasks
(app.jobs.events), so every worker process on every machine adds up, and any API process serves
the same numbers. The API's own request counts reach Redis once a second from each API process
(`HttpCounts`). The gauges are read when scraped (app.jobs.stats).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis import Redis

from app import codec, keys
from app.defaults import HISTOGRAM_BUCKETS_S
from app.jobs import events, stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BOUNDS = [*(str(float(b)) for b in HISTOGRAM_BUCKETS_S), "+Inf"]


class _Histograms:
    """Histograms kept as hash fields `<name>|<label>|<slot>` (a count per bucket, not cumulative)
    and `<name>_sum|<label>`."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, list[float]]] = {}
        self.sums: dict[str, dict[str, float]] = {}

    def add(self, name: str, label: str, slot: str, value: float) -> None:
        buckets = self.counts.setdefault(name, {}).setdefault(label, [0.0] * len(_BOUNDS))
        if slot.isdigit() and 1 <= int(slot) <= len(_BOUNDS):
            buckets[int(slot) - 1] += value

    def family(self, name: str, metric: str, doc: str, label: str | None) -> HistogramMetricFamily:
        family = HistogramMetricFamily(metric, doc, labels=[label] if label else [])
        for value, buckets in sorted(self.counts.get(name, {}).items()):
            cumulative, running = [], 0.0
            for bound, count in zip(_BOUNDS, buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([value] if label else [], cumulative, self.sums.get(name, {}).get(value, 0.0))
        return family


class _Snapshot(Collector):
    """The metrics as read from Redis at one scrape."""

    def __init__(self, counts: dict[str, str], http: dict[str, str], seen: dict[str, Any]) -> None:
        self.counts, self.http, self.seen = counts, http, seen

    def collect(self) -> Iterator[Metric]:
        submitted = CounterMetricFamily("rqflow_tasks_submitted", "Tasks submitted", labels=["type"])
        finished = CounterMetricFamily("rqflow_tasks_finished", "Tasks that ended, by how", labels=["type", "status"])
        retries = CounterMetricFamily("rqflow_task_retries", "Attempts that failed and were retried", labels=["type"])
        histograms = _Histograms()
        for field, raw in sorted(self.counts.items()):
            name, *labels = field.split("|")
            value = float(raw)
            if name == "submitted" and len(labels) == 1:
                submitted.add_metric(labels, value)
            elif name == "finished" and len(labels) == 2:
                finished.add_metric(labels, value)
            elif name == "retries" and len(labels) == 1:
                retries.add_metric(labels, value)
            elif name.endswith("_sum") and len(labels) == 1:
                histograms.sums.setdefault(name.removesuffix("_sum"), {})[labels[0]] = value
            elif len(labels) == 2:
                histograms.add(name, labels[0], labels[1], value)
        yield from (submitted, finished, retries)
        yield histograms.family("wait", "rqflow_task_wait_seconds", "From queued to started", "type")
        yield histograms.family("run", "rqflow_task_run_seconds", "From started to finished", "type")
        yield histograms.family(
            "lag", "rqflow_scheduler_lag_seconds", "How late timed tasks and schedules' runs were released", None
        )

        requests = CounterMetricFamily(
            "rqflow_http_requests", "API requests answered", labels=["route", "method", "status"]
        )
        durations = _Histograms()
        for field, raw in sorted(self.http.items()):
            name, *labels = field.split("|")
            if name == "req" and len(labels) == 3:
                requests.add_metric(labels, float(raw))
            elif name == "dur_sum" and len(labels) == 1:
                durations.sums.setdefault("dur", {})[labels[0]] = float(raw)
            elif name == "dur" and len(labels) == 2:
                durations.add(name, labels[0], labels[1], float(raw))
        yield requests
        yield durations.family(
            "dur", "rqflow_http_request_duration_seconds", "API request durations, to the answer's start", "route"
        )

        tasks = GaugeMetricFamily("rqflow_tasks", "Tasks stored, by status", labels=["status"])
        for status, count in self.seen["tasks"].items():
            tasks.add_metric([status], count)
        queues = GaugeMetricFamily("rqflow_queue_length", "Tasks in each queue", labels=["queue"])
        for queue, length in self.seen["queues"].items():
            queues.add_metric([queue], length)
        yield tasks
        yield queues
        yield GaugeMetricFamily("rqflow_workers", "Workers alive", value=self.seen["workers_alive"])


def exposition(connection: Redis) -> bytes:
    """Every metric, in the Prometheus text format, read from Redis now."""
    with connection.pipeline(transaction=False) as reads:
        reads.hgetall(keys.METRICS)
        reads.hgetall(keys.HTTP_METRICS)
        counts, http = reads.execute()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _Snapshot(
            {codec.text(k): codec.text(v) for k, v in counts.items()},
            {codec.text(k): codec.text(v) for k, v in http.items()},
            stats.counts(connection),
        )
    )
    return generate_latest(registry)


class HttpCounts:
    """One API process's request counts and durations since they last reached Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._sums: dict[str, float] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[f"req|{route}|{method}|{status}"] += 1
            self._counts[f"dur|{route}|{events.bucket_of(seconds)}"] += 1
            field = f"dur_sum|{route}"
            self._sums[field] = self._sums.get(field, 0.0) + seconds

    def restore(self, counts: dict[str, int], sums: dict[str, float]) -> None:
        """Put back what `take` returned and could not be written."""
        with self._lock:
            self._counts.update(counts)
            for field, seconds in sums.items():
                self._sums[field] = self._sums.get(field, 0.0) + seconds

    def take(self) -> tuple[dict[str, int], dict[str, float]]:
        """What was counted since the last call, which starts a new count."""
        with self._lock:
            counts, sums = dict(self._counts), dict(self._sums)
            self._counts.clear()
            self._sums.clear()
        return counts, sums
