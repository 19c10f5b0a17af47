"""API keys with scopes: read, write, admin; 401 for no key, 403 for too little; the key's name
in the history of every task it changes."""

from __future__ import annotations

import pytest
from redis import Redis
from starlette.testclient import TestClient

from app.api.auth import parse_keys
from app.api.main import create_app
from app.settings import Settings
from tests.app.api.test_tasks import assert_problem

KEYS = ["reader:read:r-secret", "ci:write:w-secret", "ci:write:w-new", "ops:admin:a:secret:with:colons", "bare-one"]


def as_key(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def keyed(settings: Settings) -> TestClient:
    with TestClient(create_app(settings.model_copy(update={"api_keys": KEYS}))) as client:
        yield client  # type: ignore[misc]


def test_each_scope_may_do_what_it_names_and_no_more(keyed: TestClient) -> None:
    read, write, admin = as_key("r-secret"), as_key("w-secret"), as_key("a:secret:with:colons")
    assert keyed.get("/api/tasks", headers=read).status_code == 200
    forbidden = keyed.post("/api/tasks", json={"id": "t", "type": "echo", "delay_ms": 60_000}, headers=read)
    assert_problem(forbidden, 403)
    assert "reader" in forbidden.json()["detail"] and "write" in forbidden.json()["detail"]
    assert keyed.get("/api/tasks/t", headers=read).status_code == 404  # nothing was stored

    assert (
        keyed.post("/api/tasks", json={"id": "t", "type": "echo", "delay_ms": 60_000}, headers=write).status_code == 201
    )
    assert keyed.put("/api/tasks/t", json={"priority": "high"}, headers=write).status_code == 200
    assert keyed.post("/api/tasks/t/cancel", headers=write).status_code == 200
    assert keyed.post("/api/tasks/t/retry", headers=write).status_code == 200
    assert_problem(keyed.delete("/api/tasks/t", headers=write), 403)
    schedule = {"id": "s", "interval_s": 60, "task": {"type": "echo"}}
    assert_problem(keyed.post("/api/schedules", json=schedule, headers=write), 403)
    assert keyed.get("/api/schedules", headers=read).status_code == 200

    assert keyed.post("/api/schedules", json=schedule, headers=admin).status_code == 201
    assert keyed.delete("/api/tasks/t", headers=admin).status_code in (200, 202, 204)
    assert keyed.post("/api/tasks", json={"type": "echo"}, headers=as_key("bare-one")).status_code == 201


def test_no_key_or_an_unknown_one_is_401_with_a_bearer_challenge(keyed: TestClient) -> None:
    for headers in ({}, as_key("nope"), {"Authorization": "Basic r-secret"}):
        answer = keyed.get("/api/tasks", headers=headers)
        assert_problem(answer, 401)
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert keyed.get("/health").status_code == 200


def test_a_key_rotates_under_one_name_and_its_name_is_in_the_history_of_what_it_changed(keyed: TestClient) -> None:
    old, new = as_key("w-secret"), as_key("w-new")
    keyed.post("/api/tasks", json={"id": "h", "type": "echo", "delay_ms": 60_000}, headers=old)
    keyed.put("/api/tasks/h", json={"payload": {"n": 2}}, headers=new)
    keyed.post("/api/tasks/h/cancel", headers=new)
    keyed.post("/api/tasks/h/retry", headers=old)
    events = keyed.get("/api/tasks/h/history", headers=as_key("r-secret")).json()
    assert [(e["event"], e["by"]) for e in events][:4] == [
        ("submitted", "ci"),
        ("updated", "ci"),
        ("canceled", "ci"),
        ("retry_requested", "ci"),
    ]
    assert events[1]["detail"] == "payload"


def test_keys_are_parsed_without_showing_a_secret() -> None:
    keys = parse_keys(["bare-secret", "n:read:named-secret"])
    assert keys[0].name.startswith("key-") and keys[1].name == "n"
    assert "secret" not in repr(keys) and "secret" not in str(keys)
    with pytest.raises(ValueError, match="entry 2") as refused:
        parse_keys(["ok", "name:admin:"])
    assert "name" in str(refused.value)


def test_a_change_from_another_sites_page_is_refused_even_without_keys(client: TestClient) -> None:
    body = {"id": "forged", "type": "echo"}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        refused = client.post("/api/tasks", json=body, headers=headers)
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    assert client.get("/api/tasks/forged").status_code == 404
    assert client.post("/api/tasks", json=body, headers={"Origin": "http://testserver"}).status_code == 201
    assert client.get("/api/tasks/forged", headers={"Origin": "https://evil.example"}).status_code == 200


def test_a_cors_origin_may_change_things(settings: Settings, redis: Redis) -> None:
    allowed = settings.model_copy(update={"cors_origins": ["https://console.example"]})
    with TestClient(create_app(allowed)) as client:
        made = client.post("/api/tasks", json={"type": "echo"}, headers={"Origin": "https://console.example"})
        assert made.status_code == 201


def test_a_garbled_session_cookie_is_no_session_not_an_error(settings: Settings, redis: Redis) -> None:
    keyed = settings.model_copy(update={"api_keys": ["viewer:read:viewer-secret-1"]})
    with TestClient(create_app(keyed)) as client:
        garbled = {"Cookie": "rqflow_session=a.\xff\xfe".encode("latin-1")}  # as a client may send it
        assert client.get("/api/tasks", headers=garbled).status_code == 401
        assert client.get("/console", headers=garbled, follow_redirects=False).status_code == 303
