"""`rqflow`: the command line, on the Python client (Typer for the commands, Rich for tables and
the progress bar).

Exit codes a script can trust: 0 done (with --wait, or for a batch: every task COMPLETED); 1 a
task ended FAILED or CANCELED; 2 bad usage or input (the server's refusal explained); 3 the
server unreachable or unavailable. `--json` prints one JSON document instead of tables.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.client import calls
from app.client.calls import DEFAULT_URL, ApiError, Unreachable
from app.client.sync import Client

OK, ENDED_BADLY, BAD_INPUT, UNAVAILABLE = 0, 1, 2, 3

app = typer.Typer(help="rqflow from the shell: submit, follow and manage tasks.", no_args_is_help=True)
schedules_app = typer.Typer(help="Recurring schedules.", no_args_is_help=True)
app.add_typer(schedules_app, name="schedules")
out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]


class Settings:
    url: str = DEFAULT_URL
    key: str | None = None
    json: bool = False


SETTINGS = Settings()


@app.callback()
def main_options(
    url: Annotated[str, typer.Option("--url", envvar="RQFLOW_URL", help="The API's base URL.")] = DEFAULT_URL,
    key: Annotated[str | None, typer.Option("--key", envvar="RQFLOW_API_KEY", help="An API key.")] = None,
    json_out: JsonFlag = False,
) -> None:
    SETTINGS.url, SETTINGS.key, SETTINGS.json = url, key, json_out


def fail(code: int, message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def client() -> Iterator[Client]:
    """The client, with every failure turned into its exit code."""
    try:
        with Client(SETTINGS.url, SETTINGS.key, retries=3) as made:
            yield made
    except Unreachable as down:
        fail(UNAVAILABLE, str(down))
    except httpx.TransportError as broken:  # an event stream cut off half-way
        fail(UNAVAILABLE, f"{SETTINGS.url}: the connection broke off: {broken}")
    except ApiError as refused:
        lines = [refused.detail or refused.title] + [f"  {e['field']}: {e['message']}" for e in refused.errors[:20]]
        fail(BAD_INPUT if refused.status < 500 else UNAVAILABLE, f"{refused.status} " + "\n".join(lines))


def _as_json(json_out: bool) -> bool:
    return json_out or SETTINGS.json


def _status(given: str | None) -> str | None:
    return given.upper() if given else None


def emit(document: Any, json_out: bool, table: Callable[[], Any] | None = None) -> None:
    if _as_json(json_out) or table is None:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    else:
        out.print(table())


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as bad:
        fail(BAD_INPUT, f"{what} is not JSON: {bad}")


def _tasks_table(tasks: Iterable[Mapping[str, Any]]) -> Table:
    table = Table("id", "type", "status", "priority", "attempts", "created", "updated")
    for t in tasks:
        attempts = f"{t.get('attempts', 0)}/{t.get('max_attempts', '')}"
        table.add_row(
            t["id"],
            t.get("type", ""),
            t.get("status", ""),
            t.get("priority", ""),
            attempts,
            t.get("created_at", ""),
            t.get("updated_at", ""),
        )
    return table


def _show_task(task: Mapping[str, Any], json_out: bool) -> None:
    emit(task, json_out, lambda: _tasks_table([task]))


def _deleted(deleted_id: str, json_out: bool) -> None:
    emit({"id": deleted_id, "deleted": True}, json_out, lambda: f"deleted {deleted_id}")


def _ended(task: Mapping[str, Any]) -> int:
    return OK if task.get("status") == "COMPLETED" else ENDED_BADLY


# -- tasks ------------------------------------------------------------------------------------------


@app.command()
def submit(
    task_type: Annotated[str, typer.Argument(metavar="TYPE", help="A registered task type.")],
    id: Annotated[str | None, typer.Option("--id", help="The task's id (made up if not given).")] = None,
    payload: Annotated[str | None, typer.Option("--payload", help="The payload, a JSON object.")] = None,
    after: Annotated[list[str] | None, typer.Option("--after", help="A task it waits for (repeatable).")] = None,
    at: Annotated[
        datetime | None, typer.Option("--at", help="When to run it (ISO 8601; UTC without an offset).")
    ] = None,
    delay: Annotated[float | None, typer.Option("--delay", help="Run it this many seconds from now.")] = None,
    priority: Annotated[str | None, typer.Option("--priority", help="high, default or low.")] = None,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts", min=1)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it ends; exit 1 unless COMPLETED.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Submit one task."""
    if at is not None and delay is not None:
        fail(BAD_INPUT, "give --at or --delay, not both")
    body = _json_arg(payload, "--payload")
    if body is not None and not isinstance(body, dict):
        fail(BAD_INPUT, "--payload must be a JSON object")
    fields: calls.TaskFields = {"dependencies": after or ()}
    if id is not None:
        fields["id"] = id
    if priority is not None:
        fields["priority"] = priority
    if at is not None:
        fields["run_at"] = at.isoformat() + ("Z" if at.tzinfo is None else "")
    if delay is not None:
        fields["delay_ms"] = round(delay * 1000)
    if max_attempts is not None:
        fields["max_attempts"] = max_attempts
    with client() as rqflow:
        task = rqflow.submit(task_type, body, **fields)
        if wait:
            task = rqflow.wait(task["id"])
    _show_task(task, json_out)
    if wait:
        raise typer.Exit(_ended(task))


def _read_batch(source: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as missing:
        fail(BAD_INPUT, f"cannot read {source}: {missing.strerror}")
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
        tasks = whole.get("tasks") if isinstance(whole, dict) else whole
    except ValueError:
        try:
            tasks = [json.loads(line) for line in stripped.splitlines() if line.strip()]
        except ValueError as bad:
            fail(BAD_INPUT, f"{source} is neither JSON nor NDJSON: {bad}")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks) or not tasks:
        fail(BAD_INPUT, f"{source} holds no list of tasks")
    return tasks


@app.command()
def batch(
    file: Annotated[str, typer.Argument(help='JSON (a list, or {"tasks": [...]}) or NDJSON; - for stdin.')],
    json_out: JsonFlag = False,
) -> None:
    """Submit a batch (a DAG) and show its progress until every task has ended."""
    tasks = _read_batch(file)
    with client() as rqflow, rqflow.follow() as events:  # following before submitting: no end is missed
        statuses = {t["id"]: t["status"] for t in rqflow.submit_batch(tasks)}
        left = sum(s not in calls.TERMINAL for s in statuses.values())
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=_as_json(json_out),
        ) as progress:
            bar = progress.add_task("tasks ended", total=len(statuses))
            progress.update(bar, completed=len(statuses) - left)

            def note(task_id: str, status: str) -> None:
                """A task's news; the first end counts, a later one changes nothing."""
                nonlocal left
                if statuses[task_id] in calls.TERMINAL:
                    return
                statuses[task_id] = status
                if status in calls.TERMINAL:
                    progress.advance(bar)
                    left -= 1

            for event in events if left else ():
                if event is None:
                    continue
                if event.get("event") == "reset":
                    # Events were trimmed away before they were read: ask for what is still open.
                    for task_id in [i for i, s in statuses.items() if s not in calls.TERMINAL]:
                        note(task_id, rqflow.get(task_id).get("status", statuses[task_id]))
                elif event.get("task") in statuses and calls.ends(event):
                    note(event["task"], event["status"])
                if not left:
                    break
    counts = Counter(statuses.values())
    bad = sorted(i for i, s in statuses.items() if s != "COMPLETED")
    emit({"count": len(statuses), "statuses": counts, "not_completed": bad[:100]}, json_out, lambda: _summary(counts))
    raise typer.Exit(ENDED_BADLY if bad else OK)


def _summary(counts: dict[str, int]) -> Table:
    table = Table("status", "tasks")
    for status, n in sorted(counts.items()):
        table.add_row(status, str(n))
    return table


@app.command("ls")
def list_tasks(
    status: Annotated[str | None, typer.Option("--status")] = None,
    task_type: Annotated[str | None, typer.Option("--type")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """List tasks, newest first."""
    with client() as rqflow:
        tasks = list(rqflow.list_tasks(status=_status(status), type=task_type, limit=limit))
    emit(tasks, json_out, lambda: _tasks_table(tasks))


@app.command()
def show(task_id: str, json_out: JsonFlag = False) -> None:
    """One task, with its history."""
    with client() as rqflow:
        task: dict[str, Any] = dict(rqflow.get(task_id))
        history = rqflow.history(task_id)
    task["history"] = history

    def table() -> Table:
        facts = Table("field", "value", title=f"task {task_id}")
        for name in (
            "type",
            "status",
            "priority",
            "attempts",
            "max_attempts",
            "created_at",
            "started_at",
            "finished_at",
            "worker",
            "dependencies",
            "payload",
            "result",
            "error",
            "waiting_for",
        ):
            value = task.get(name)
            if value not in (None, [], {}):
                facts.add_row(name, value if isinstance(value, str) else json.dumps(value))
        for event in history:
            detail = " ".join(str(event[k]) for k in ("attempt", "worker", "error", "detail", "by") if event.get(k))
            facts.add_row(event["at"], f"{event['event']} {detail}".strip())
        return facts

    emit(task, json_out, table)


@app.command()
def cancel(task_id: str, json_out: JsonFlag = False) -> None:
    """Cancel a task (a running one is stopped)."""
    with client() as rqflow:
        _show_task(rqflow.cancel(task_id), json_out)


@app.command()
def retry(task_id: str, json_out: JsonFlag = False) -> None:
    """Run a FAILED or CANCELED task again."""
    with client() as rqflow:
        _show_task(rqflow.retry(task_id), json_out)


@app.command()
def rm(task_id: str, json_out: JsonFlag = False) -> None:
    """Delete a task (canceled first if it has not ended)."""
    with client() as rqflow:
        rqflow.delete(task_id)
        _deleted(task_id, json_out)


@app.command()
def watch(
    task: Annotated[str | None, typer.Option("--task")] = None,
    task_type: Annotated[str | None, typer.Option("--type")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Print events as they happen (Ctrl-C stops); with --json, one JSON object a line."""
    with client() as rqflow:
        try:
            for event in rqflow.events(task=task, type=task_type, status=_status(status)):
                if _as_json(json_out):
                    sys.stdout.write(json.dumps(event) + "\n")
                    sys.stdout.flush()
                else:
                    who = event.get("task") or event.get("worker") or event.get("schedule") or ""
                    out.print(
                        f"{event.get('at', '')} {event.get('event', ''):<16} {event.get('status', ''):<10} {who}",
                        highlight=False,
                    )
        except KeyboardInterrupt:
            pass


@app.command()
def health(json_out: JsonFlag = False) -> None:
    """Whether the server and its Redis are well."""
    with client() as rqflow:
        report = rqflow.health()
    warnings = report.get("redis", {}).get("warnings", [])
    emit(report, json_out, lambda: "ok" + "".join(f"\nwarning: {w}" for w in warnings))


# -- schedules --------------------------------------------------------------------------------------


@schedules_app.command("ls")
def schedules_ls(json_out: JsonFlag = False) -> None:
    """List schedules."""
    with client() as rqflow:
        found = rqflow.schedules()

    def table() -> Table:
        shown = Table("id", "when", "task type", "state", "runs", "next run")
        for s in found:
            when = f"cron {s['cron']} ({s['timezone']})" if s.get("cron") else f"every {s.get('interval_s')} s"
            shown.add_row(
                s["id"],
                when,
                s["task"]["type"],
                "paused" if s.get("paused") else "active",
                str(s.get("runs", 0)),
                s.get("next_run_at") or "",
            )
        return shown

    emit(found, json_out, table)


@schedules_app.command("add")
def schedules_add(
    task_type: Annotated[str, typer.Argument(metavar="TYPE")],
    id: Annotated[str | None, typer.Option("--id")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="A cron expression.")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="For --cron; UTC by default.")] = None,
    every: Annotated[int | None, typer.Option("--every", help="Every so many seconds.", min=1)] = None,
    payload: Annotated[str | None, typer.Option("--payload")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a schedule: --cron (with --timezone) or --every."""
    if (cron is None) == (every is None):
        fail(BAD_INPUT, "give --cron or --every, one of them")
    task: dict[str, Any] = {"type": task_type}
    if payload is not None:
        task["payload"] = _json_arg(payload, "--payload")
    body: dict[str, Any] = {"task": task}
    body.update({k: v for k, v in {"id": id, "cron": cron, "timezone": timezone, "interval_s": every}.items() if v})
    with client() as rqflow:
        created = rqflow.create_schedule(body)
    emit(created, json_out, lambda: f"schedule {created['id']}: next run {created.get('next_run_at')}")


def _show_state(schedule_id: str, changed: dict[str, Any], json_out: bool) -> None:
    emit(changed, json_out, lambda: f"schedule {schedule_id}: {'paused' if changed.get('paused') else 'active'}")


@schedules_app.command("pause")
def schedules_pause(schedule_id: str, json_out: JsonFlag = False) -> None:
    with client() as rqflow:
        _show_state(schedule_id, rqflow.pause_schedule(schedule_id), json_out)


@schedules_app.command("resume")
def schedules_resume(schedule_id: str, json_out: JsonFlag = False) -> None:
    with client() as rqflow:
        _show_state(schedule_id, rqflow.resume_schedule(schedule_id), json_out)


@schedules_app.command("rm")
def schedules_rm(schedule_id: str, json_out: JsonFlag = False) -> None:
    with client() as rqflow:
        rqflow.delete_schedule(schedule_id)
        _deleted(schedule_id, json_out)


def main() -> None:
    app()
