"""The console's pages without a browser: what they refuse and how."""

from __future__ import annotations

import re

from redis import Redis
from starlette.testclient import TestClient

from app.api.main import create_app
from app.settings import Settings


def test_a_bad_filter_is_a_page_saying_so_not_an_error(client: TestClient) -> None:
    shown = client.get("/console/tasks?status=bogus")
    assert shown.status_code == 422 and "bogus" in shown.text
    bulk = client.post("/console/tasks/bulk", data={"action": "cancel", "scope": "all", "status": "bogus"})
    assert bulk.status_code == 422 and "bogus" in bulk.text


def test_another_sites_page_can_change_nothing_nor_log_anyone_out(client: TestClient) -> None:
    evil = {"Origin": "https://evil.example"}
    assert client.post("/console/tasks/new", data={"id": "x", "type": "echo"}, headers=evil).status_code == 403
    assert client.get("/api/tasks/x").status_code == 404
    assert client.post("/console/logout", headers=evil).status_code == 403


def test_login_goes_back_only_into_the_console(settings: Settings, redis: Redis) -> None:
    keyed = settings.model_copy(update={"api_keys": ["boss:admin:boss-secret-9"]})
    with TestClient(create_app(keyed), base_url="http://127.0.0.1") as client:
        for target, expected in (("/console/tasks", "/console/tasks"), ("https://evil.example", "/console")):
            answer = client.post(f"/console/login?next={target}", data={"key": "boss-secret-9"}, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"] == expected
        page = client.get("/console/tasks")
        assert page.status_code == 200 and "boss (admin)" in page.text
        assert "default-src 'none'; script-src 'self'" in page.headers["content-security-policy"]
    with TestClient(create_app(keyed), base_url="http://rqflow.example") as remote:
        answer = remote.post("/console/login", data={"key": "boss-secret-9"}, follow_redirects=False)
        assert "secure" in answer.headers["set-cookie"].lower()  # off loopback, over TLS only


def test_a_schedules_page_lists_the_fires_the_scheduler_will_make(client: TestClient) -> None:
    body = {"id": "hourly", "interval_s": 3600, "task": {"type": "echo"}}
    assert client.post("/api/schedules", json=body).status_code == 201
    next_run = client.get("/api/schedules/hourly").json()["next_run_at"]
    page = client.get("/console/schedules/hourly").text
    fires = re.findall(r"<li>([^<]+)</li>", page.split("<h2>Runs</h2>")[0])
    # Counted from the schedule's creation, as the scheduler counts, not from when the page is read.
    assert fires[0] == next_run and len(fires) == 5
    change = {"type": "echo", "kind": "interval", "interval_s": "3600", "action": "preview"}
    edit = client.post("/console/schedules/hourly/edit", data=change)
    assert re.findall(r'<time datetime="([^"]+)"', edit.text)[0] == next_run
