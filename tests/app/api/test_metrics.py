"""GET /metrics: Prometheus's text format, moving as tasks run, read with Prometheus's own parser."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from app.api.main import create_app
from app.settings import Settings
from tests.support import wait_until

Key = tuple[str, tuple[tuple[str, str], ...]]


def scrape(client: TestClient) -> dict[Key, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


def value(samples: dict[Key, float], name: str, **labels: str) -> float:
    """The sample's value; the test fails if there is none (a metric gone must not read as 0)."""
    assert key(name, **labels) in samples, f"no sample {name} {labels}"
    return samples[key(name, **labels)]


def test_the_metrics_move_as_tasks_run(client: TestClient, engine_work: Any) -> None:
    before = scrape(client)
    assert before.get(key("rqflow_tasks_submitted_total", type="echo"), 0) == 0  # none until a first submission
    for n in range(3):
        client.post("/api/tasks", json={"id": f"m{n}", "type": "echo"})
    client.post("/api/tasks", json={"id": "retried", "type": "flaky", "payload": {"succeed_on": 2}})
    client.post("/api/tasks", json={"id": "later", "type": "echo", "delay_ms": 3_600_000})
    queued = scrape(client)
    assert value(queued, "rqflow_tasks_submitted_total", type="echo") == 4
    assert value(queued, "rqflow_tasks", status="QUEUED") == 4
    assert value(queued, "rqflow_tasks", status="SCHEDULED") == 1
    assert value(queued, "rqflow_queue_length", queue="default") == 4
    assert engine_work()
    ran = scrape(client)
    assert value(ran, "rqflow_tasks_finished_total", type="echo", status="COMPLETED") == 3
    assert value(ran, "rqflow_tasks_finished_total", type="flaky", status="COMPLETED") == 1
    assert value(ran, "rqflow_task_retries_total", type="flaky") == 1
    assert value(ran, "rqflow_task_run_seconds_count", type="echo") == 3
    assert value(ran, "rqflow_task_wait_seconds_count", type="flaky") == 2  # each attempt waited
    assert value(ran, "rqflow_task_wait_seconds_bucket", type="echo", le="+Inf") == 3
    assert value(ran, "rqflow_task_wait_seconds_sum", type="echo") > 0
    assert value(ran, "rqflow_tasks", status="COMPLETED") == 4
    assert value(ran, "rqflow_queue_length", queue="default") == 0
    assert value(ran, "rqflow_workers") == 0  # a burst worker is gone once it has run them


def test_requests_are_counted_by_route_template_never_by_raw_path(client: TestClient) -> None:
    client.post("/api/tasks", json={"id": "seen", "type": "echo"})
    for _ in range(2):
        client.get("/api/tasks/seen")
    client.get("/api/tasks/no-such-task")
    client.get("/not-a-route")

    def counted() -> dict[Key, float]:
        samples = scrape(client)
        last = key("rqflow_http_requests_total", route="/api/tasks/{task_id}", method="GET", status="404")
        return samples if last in samples else {}

    samples = wait_until(counted, timeout=10, what="the API's counts to reach Redis")
    assert value(samples, "rqflow_http_requests_total", route="/api/tasks/{task_id}", method="GET", status="200") == 2
    assert value(samples, "rqflow_http_requests_total", route="/api/tasks", method="POST", status="201") == 1
    assert value(samples, "rqflow_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(samples, "rqflow_http_request_duration_seconds_count", route="/api/tasks/{task_id}") == 3
    assert not [k for k in samples if any("seen" in v for _, v in k[1])]


def test_every_answer_carries_a_request_id_taken_from_the_client_or_made(client: TestClient) -> None:
    given = client.get("/health", headers={"X-Request-ID": "trace-42.a:b"})
    assert given.headers["x-request-id"] == "trace-42.a:b"
    made = client.get("/health").headers["x-request-id"]
    forged = client.get("/health", headers={"X-Request-ID": "x" * 200}).headers["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", made) and re.fullmatch("[0-9a-f]{32}", forged) and made != forged


def test_metrics_need_the_read_scope_when_keys_are_set(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_keys": ["viewer:read:s3cret-viewer-key"]})
    with TestClient(create_app(keyed)) as client:
        refused: Any = client.get("/metrics")
        assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
        allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret-viewer-key"})
        assert allowed.status_code == 200 and "rqflow_workers" in allowed.text
        assert client.get("/health").status_code == 200  # for load balancers, without a key
