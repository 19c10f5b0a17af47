"""The web console in a real browser: Chromium from Debian's packages, driven by Playwright, against
the Procfile's API process and an engine worker. Skipped, saying why, where Chromium is missing
(`make test` installs it when it runs as root)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from redis import Redis

from app.settings import Settings
from tests.support import api_process, engine_worker

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
LAUNCH = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Chromium is not installed (make test installs it when run as root)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH)
        yield launched
        launched.close()


@pytest.fixture
def console(settings: Settings, redis: Redis) -> Iterator[str]:
    """The API with the test task types, and an engine worker running what it queues."""
    url = str(settings.redis_url)
    with api_process(url) as port, engine_worker(url, env={"RQFLOW_CONCURRENCY": "2"}):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


def post(page: Any, base: str, path: str, body: dict[str, Any]) -> None:
    """A submission through the API, as any client would make it."""
    answer = page.request.post(f"{base}{path}", data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status in (200, 201), answer.text()


def status_cell(page: Any, task_id: str) -> Any:
    return page.get_by_role("row", name=task_id).locator(".status")


def test_a_task_and_a_dependent_made_on_the_form_complete_without_a_reload(console: str, page: Any) -> None:
    for task_id, extra in (("parent", {}), ("child", {"dependencies": "parent"})):
        page.goto(f"{console}/console/tasks/new")
        page.get_by_label("Id", exact=True).fill(task_id)
        page.get_by_label("Type").select_option("sleepy")
        page.get_by_label("Payload (JSON object)").fill('{"seconds": 0.8}')
        if extra:
            page.get_by_label("Dependencies").fill(extra["dependencies"])
        page.get_by_role("button", name="Create the task").click()
        page.wait_for_url(f"**/console/tasks/{task_id}")
    page.goto(f"{console}/console/tasks?id_prefix=")
    page.evaluate("window.notReloaded = true")
    expect(status_cell(page, "child")).to_have_text("COMPLETED", timeout=20_000)
    expect(status_cell(page, "parent")).to_have_text("COMPLETED")
    assert page.evaluate("window.notReloaded") is True


def test_a_running_task_is_canceled_from_its_page(console: str, page: Any, redis: Redis) -> None:
    post(page, console, "/api/tasks", {"id": "longer", "type": "data_processing", "duration_ms": 30_000})
    page.goto(f"{console}/console/tasks/longer")
    expect(page.locator("[data-status]")).to_have_text("RUNNING", timeout=20_000)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-status]")).to_have_text("CANCELED", timeout=20_000)


def test_a_recurring_schedule_is_created_paused_changed_and_deleted(console: str, page: Any) -> None:
    page.goto(f"{console}/console/schedules/new")
    page.get_by_label("Id", exact=True).fill("nightly")
    page.get_by_label("Task type").select_option("echo")
    page.get_by_role("textbox", name="Cron expression").fill("0 3 * * *")
    page.get_by_label("Time zone").fill("Europe/Paris")
    page.get_by_role("button", name="Preview the next five runs").click()
    expect(page.get_by_role("heading", name="Next five runs")).to_be_visible()
    assert page.locator("ol li").count() == 5
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/console/schedules/nightly")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".facts")).to_contain_text("paused")
    page.get_by_role("link", name="Change it").click()
    page.get_by_label("every so many seconds").check()
    page.get_by_label("Interval (seconds)").fill("90")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/console/schedules/nightly")
    expect(page.locator(".facts")).to_contain_text("every 90 s")
    expect(page.locator(".facts")).to_contain_text("paused")  # a change leaves it paused
    page.goto(f"{console}/console/schedules")
    page.get_by_role("button", name="Delete nightly").click()
    page.wait_for_url("**/console/schedules")
    expect(page.get_by_text("No schedule yet.")).to_be_visible()


def test_a_read_only_key_sees_writes_disabled_and_refused(settings: Settings, browser: Any) -> None:
    keys = "viewer:read:viewer-secret-123,boss:admin:boss-secret-456"
    env = {**os.environ, "RQFLOW_TASK_MODULES": "tests.handlers", "RQFLOW_API_KEYS": keys}
    with api_process(str(settings.redis_url), env) as port:
        base = f"http://127.0.0.1:{port}"
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{base}/console/tasks/new")
        page.wait_for_url("**/console/login**")
        page.get_by_label("API key").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("not one of this server's")
        page.get_by_label("API key").fill("viewer-secret-123")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/console/tasks/new")
        expect(page.get_by_text("Read-only")).to_be_visible()
        expect(page.get_by_role("button", name="Create the task")).to_be_disabled()
        cookie = next(c for c in context.cookies() if c["name"] == "rqflow_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        refused = page.request.post(
            f"{base}/console/tasks/new", form={"id": "sneaky", "type": "echo"}, headers={"Origin": base}
        )
        assert refused.status == 403
        assert page.request.get(f"{base}/api/tasks/sneaky").status == 404
        assert page.request.get(f"{base}/api/stats").status == 200  # reading through the API with the session
        context.close()


PAGES = [
    "/console",
    "/console/tasks",
    "/console/tasks/seen",
    "/console/tasks/new",
    "/console/batch",
    "/console/schedules",
    "/console/schedules/new",
    "/console/schedules/every-hour",
    "/console/schedules/every-hour/edit",
    "/console/login",
    "/console/workers",
    "/console/types",
]


def test_axe_finds_nothing_serious_on_any_page(console: str, browser: Any) -> None:
    context = browser.new_context(bypass_csp=True)  # axe is injected by the test, not served
    page = context.new_page()
    post(page, console, "/api/tasks", {"id": "seen", "type": "echo"})
    post(page, console, "/api/schedules", {"id": "every-hour", "cron": "0 * * * *", "task": {"type": "echo"}})
    found = {}
    for path in PAGES:
        response = page.goto(f"{console}{path}")
        assert response is not None and response.status == 200, path
        page.add_script_tag(path=str(AXE))
        violations = page.evaluate("async () => (await axe.run()).violations.map(v => ({id: v.id, impact: v.impact}))")
        serious = [v for v in violations if v["impact"] in ("serious", "critical")]
        if serious:
            found[path] = serious
    context.close()
    assert not found, found


def test_a_live_update_keeps_the_focus_and_the_selection(console: str, page: Any) -> None:
    for n in range(2):
        post(page, console, "/api/tasks", {"id": f"keep-{n}", "type": "echo"})
    page.goto(f"{console}/console/tasks")
    expect(status_cell(page, "keep-1")).to_have_text("COMPLETED")
    page.get_by_label("Select keep-0").check()
    page.get_by_role("button", name="Retry selected").focus()
    post(page, console, "/api/tasks", {"id": "keep-2", "type": "echo"})
    expect(page.get_by_role("row", name="keep-2")).to_be_visible()  # the table was refreshed
    assert page.get_by_label("Select keep-0").is_checked()
    assert page.evaluate("document.activeElement.textContent") == "Retry selected"
    # The focus inside the table: a refresh that brings a new row leaves the table as it is...
    page.evaluate(
        """() => {
            window.refreshedWithKeep3 = new Promise((resolve) => {
                setTimeout(() => resolve(false), 20000);
                const parse = DOMParser.prototype.parseFromString;
                DOMParser.prototype.parseFromString = function (html, type) {
                    if (html.includes("keep-3")) {
                        resolve(true); // seen by the test after this swap, which runs on synchronously
                    }
                    return parse.call(this, html, type);
                };
            });
        }"""
    )
    page.get_by_label("Select keep-1").focus()
    post(page, console, "/api/tasks", {"id": "keep-3", "type": "echo"})
    assert page.evaluate("window.refreshedWithKeep3")  # not wait_for_function: the page's CSP forbids eval
    assert page.evaluate("document.activeElement.value") == "keep-1"
    assert page.get_by_role("row", name="keep-3").count() == 0
    # ...until the focus leaves it.
    page.get_by_role("button", name="Retry selected").focus()
    expect(page.get_by_role("row", name="keep-3")).to_be_visible()
    assert page.get_by_label("Select keep-0").is_checked()


def test_a_task_is_made_with_the_keyboard_alone(console: str, page: Any) -> None:
    page.goto(f"{console}/console/tasks/new")
    page.keyboard.press("Tab")  # the skip link comes first, and takes the focus to the content
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    while page.evaluate("document.activeElement.id") != "f-id":
        page.keyboard.press("Tab")
    page.keyboard.type("typed")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # past the type (echo, the first), to the payload
    page.keyboard.type('{"by": "keyboard"}')
    page.get_by_role("button", name="Create the task").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/tasks/typed")
    expect(page.locator("[data-status]")).to_have_text("COMPLETED")


def test_a_hidden_tab_stops_listening_and_catches_up_when_shown(console: str, page: Any) -> None:
    page.goto(f"{console}/console/tasks")
    page.evaluate(
        """() => {
            window.streamsClosed = 0;
            const close = EventSource.prototype.close;
            EventSource.prototype.close = function () { window.streamsClosed++; return close.call(this); };
        }"""
    )
    show = "(hidden) => { Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});"
    show += " document.dispatchEvent(new Event('visibilitychange')); }"
    page.evaluate(show, True)
    assert page.evaluate("window.streamsClosed") == 1
    listening = page.context.new_page()
    listening.goto(f"{console}/console/tasks")
    post(page, console, "/api/tasks", {"id": "while-hidden", "type": "echo"})
    # The event went out: a page that listens has shown the task. The hidden one has not.
    expect(listening.get_by_role("row", name="while-hidden")).to_be_visible()
    assert page.get_by_role("row", name="while-hidden").count() == 0
    page.evaluate(show, False)
    expect(page.get_by_role("row", name="while-hidden")).to_be_visible()
