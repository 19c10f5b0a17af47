"""`python -m bench.screenshots`: a picture of each console page for the README, taken in Debian's
Chromium (Playwright) against the Procfile's API and an engine worker, with some tasks and
schedules to show. Writes bench/results/console/<page>.png."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import httpx2 as httpx
from playwright.sync_api import sync_playwright

from tests.support import ROOT, RedisServer, api_process, engine_worker, wait_until

OUT = ROOT / "bench" / "results" / "console"
PAGES = {
    "overview": "/console",
    "tasks": "/console/tasks",
    "task": "/console/tasks/report",
    "new-task": "/console/tasks/new",
    "new-batch": "/console/batch",
    "schedules": "/console/schedules",
    "schedule": "/console/schedules/nightly",
    "new-schedule": "/console/schedules/new",
    "workers": "/console/workers",
    "types": "/console/types",
}


def fill(base: str) -> None:
    dag: list[dict[str, Any]] = [
        {"id": "extract", "type": "echo"},
        {"id": "clean", "type": "echo", "dependencies": ["extract"]},
        {"id": "enrich", "type": "echo", "dependencies": ["extract"]},
        {"id": "report", "type": "sleepy", "payload": {"seconds": 0.5}, "dependencies": ["clean", "enrich"]},
        {"id": "publish", "type": "echo", "dependencies": ["report"], "delay_ms": 3_600_000},
        {"id": "broken", "type": "flaky", "max_attempts": 1},
    ]
    httpx.post(f"{base}/api/tasks/batch", json={"tasks": dag}).raise_for_status()
    for body in (
        {"id": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "task": {"type": "echo"}},
        {"id": "every-minute", "interval_s": 60, "task": {"type": "echo"}, "paused": True},
    ):
        httpx.post(f"{base}/api/schedules", json=body).raise_for_status()
    wait_until(lambda: httpx.get(f"{base}/api/tasks/report").json()["status"] == "COMPLETED", timeout=60)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data:
        server = RedisServer.start_new(Path(data))
        try:
            with api_process(server.url) as port, engine_worker(server.url), sync_playwright() as playwright:
                base = f"http://127.0.0.1:{port}"
                fill(base)
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                for name, path in PAGES.items():
                    page.goto(base + path)
                    if name == "new-batch":
                        page.get_by_label("Tasks").fill(
                            json.dumps(
                                [
                                    {"id": "a", "type": "echo"},
                                    {"id": "b", "type": "echo", "dependencies": ["a"]},
                                    {"id": "c", "type": "echo", "dependencies": ["a"]},
                                ]
                            )
                        )
                        page.get_by_role("button", name="Preview").click()
                        page.get_by_role("heading", name="What would be stored").wait_for()
                    if name == "new-schedule":
                        page.get_by_role("textbox", name="Cron expression").fill("30 9 * * 1-5")
                        page.get_by_role("button", name="Preview the next five runs").click()
                        page.get_by_role("heading", name="Next five runs").wait_for()
                    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                    print(f"{name}: {OUT / (name + '.png')}")
                browser.close()
        finally:
            server.kill()


if __name__ == "__main__":
    main()
