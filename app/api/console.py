"""The web console at /console: HTML rendered on the server (Jinja2) from the same services the
API uses, forms that work without JavaScript, and one small script of our own that refreshes the
live parts of a page from the event stream.

Every change is a POST from the console's own pages: refused from another site (the browser
says where a request comes from), and refused to a key whose scope does not allow it (whose
pages show those controls disabled). With API keys configured, a login form takes a key and
sets a signed session cookie (app.api.session); without keys (on loopback) there is no login.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pydantic import ValidationError
from redis import Redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from app import codec
from app.api import layout, routes, session
from app.api.auth import Access, ApiKey, find_key, forbidden
from app.api.problems import status_of
from app.api.routes import batch_specs, schedules_of, tasks_of
from app.api.schemas import ScheduleIn, TaskIn, TaskUpdateIn, task_json
from app.api.session import NOBODY_NEEDED, Viewer
from app.clock import iso
from app.errors import DomainError, FieldError, InvalidInput, TaskNotFound
from app.jobs import events, stats
from app.jobs.tasks import TaskService
from app.model import Priority, Task, TaskStatus
from app.schedules import ScheduleSpec, next_fire

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
TEMPLATES.env.filters["iso"] = lambda at: iso(at) if at else ""
TEMPLATES.env.filters["json"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
TEMPLATES.env.globals.update(
    statuses=[s.value for s in TaskStatus],
    priorities=[p.value for p in Priority],
    NODE_W=layout.NODE_W,
    NODE_H=layout.NODE_H,
    GAP_Y=layout.GAP_Y,
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""Only the console's own script and styles run; no inline script, nothing from elsewhere."""

PAGE_SIZE = 50
BULK_MAX = 10_000
"""Most tasks one "all matching" action takes on."""
GRAPH_MAX = 150
"""Most tasks a task page draws of its ancestors and descendants."""
WAITING = (TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.QUEUED)
LIVE = "x-live-refresh"
"""Sent by console.js when it fetches a page again only to swap its live parts in."""


def _keys(request: Request) -> list[ApiKey]:
    keys: list[ApiKey] = request.app.state.api_keys
    return keys


def _viewer(request: Request) -> Viewer | None:
    keys = _keys(request)
    if not keys:
        return NOBODY_NEEDED
    key = session.from_headers(request.headers, keys)
    return Viewer(key.name, key.access) if key is not None else None


def render(request: Request, template: str, viewer: Viewer, status: int = 200, **context: Any) -> HTMLResponse:
    context.update(
        request=request,
        events_after=getattr(request.state, "events_after", ""),
        viewer=viewer,
        may_write=viewer.may(Access.WRITE),
        may_admin=viewer.may(Access.ADMIN),
    )
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?{urlencode({'next': target})}", status_code=303)


async def _form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form (what a plain HTML form sends), every value of every field."""
    fields: dict[str, list[str]] = {}
    for name, value in parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields


def _one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0].strip()


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def _check_write(request: Request, viewer: Viewer, access: Access) -> None:
    if not session.same_origin(request.headers):
        raise Refused(403, "this change came from another site's page; it was refused")
    if not viewer.may(access):
        raise Refused(403, forbidden(viewer.name, viewer.access, access))


Handler = Callable[[Request, Viewer], Awaitable[Response]]


def page(access: Access = Access.READ) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A console handler: the viewer found (or sent to log in), writes (what needs more than
    reading) checked, refusals and domain errors shown as a page."""
    write = access > Access.READ

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            viewer = _viewer(request)
            if viewer is None:
                if write:
                    return render(request, "message.html", NOBODY_NEEDED, 401, title="Log in first", message="")
                return _login_redirect(request)
            try:
                if write:
                    _check_write(request, viewer, access)
                elif LIVE not in request.headers:
                    # Before anything is read: the page's live updates start from here, so a change
                    # made while it is rendered is not missed. A live refresh's page is only swapped
                    # into one that listens already.
                    request.state.events_after = await run_in_threadpool(events.newest_id, request.app.state.redis)
                return await handler(request, viewer)
            except Refused as refused:
                return render(request, "message.html", viewer, refused.status, title="Refused", message=refused.message)
            except TaskNotFound as missing:
                return render(request, "message.html", viewer, 404, title="Not found", message=missing.detail)
            except DomainError as error:
                return render(request, "message.html", viewer, status_of(error), title="Not done", message=error.detail)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


# -- login ------------------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    keys = _keys(request)
    target = request.query_params.get("next", "/console")
    target = target if target.startswith("/console") else "/console"
    if not keys:
        return RedirectResponse(target, status_code=303)
    if request.method == "GET":
        return render(request, "login.html", NOBODY_NEEDED, next=target, error=None)
    if not session.same_origin(request.headers):
        return render(request, "login.html", NOBODY_NEEDED, 403, next=target, error="refused: another site's page")
    form = await _form(request)
    key = find_key(_one(form, "key").encode(), keys)
    if key is None:
        return render(
            request, "login.html", NOBODY_NEEDED, 401, next=target, error="That key is not one of this server's."
        )
    response = RedirectResponse(target, status_code=303)
    secure = request.url.hostname not in ("127.0.0.1", "localhost", "::1")
    response.set_cookie(
        session.COOKIE,
        session.issue(key, keys),
        max_age=session.LIFETIME_S,
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return response


async def logout(request: Request) -> Response:
    if not session.same_origin(request.headers):
        return render(request, "message.html", NOBODY_NEEDED, 403, title="Refused", message="another site's page")
    response = RedirectResponse("/console/login" if _keys(request) else "/console", status_code=303)
    response.delete_cookie(session.COOKIE)
    return response


# -- overview -----------------------------------------------------------------------------------------


@page()
async def overview(request: Request, viewer: Viewer) -> Response:
    seen, limits, workers, failures = await run_in_threadpool(_overview, request.app.state.redis, tasks_of(request))
    registry = request.app.state.registry
    types = [
        {"name": t.name, "concurrency": t.concurrency, **limits.get(t.name, {"holding": 0, "waiting": 0})}
        for t in registry.values()
    ]
    return render(request, "overview.html", viewer, seen=seen, types=types, workers=workers, failures=failures)


def _overview(
    redis: Redis, service: TaskService
) -> tuple[dict[str, Any], dict[str, dict[str, int]], list[dict[str, Any]], list[Task]]:
    """Counts, limits, workers and recent failures, in one trip to the thread pool."""
    seen = stats.counts(redis)
    limits = stats.limit_load(redis, seen["waiting_for_limits"])
    failures = service.reads.list_tasks(status=TaskStatus.FAILED, limit=5).tasks
    return seen, limits, stats.workers(redis), failures


# -- tasks ------------------------------------------------------------------------------------------


FILTERS = ("status", "type", "schedule_id", "id_prefix")


def _filters(params: Any) -> dict[str, str]:
    return {name: str(params.get(name, "")).strip() for name in FILTERS if str(params.get(name, "")).strip()}


def _list(
    service: TaskService, filters: dict[str, str], limit: int, cursor: str | None = None, waiting_for: bool = False
) -> Any:
    named = filters.get("status", "").upper()
    if named and named not in TaskStatus.__members__:
        raise InvalidInput(f"no status {filters['status']!r}", [FieldError("status", filters["status"])])
    status = TaskStatus(named) if named else None
    return service.reads.list_tasks(
        status=status,
        task_type=filters.get("type"),
        schedule_id=filters.get("schedule_id"),
        id_prefix=filters.get("id_prefix"),
        limit=limit,
        cursor=cursor,
        waiting_for=waiting_for,
    )


def _waiting_line(task: Task) -> str:
    waiting = task.waiting_for or {}
    if "dependencies" in waiting:
        return "dependencies: " + ", ".join(waiting["dependencies"]) if waiting["dependencies"] else "its parents"
    if "limit" in waiting:
        limit = waiting["limit"]
        return f"a slot of {limit['key']} ({limit['holding_slots']}/{limit['concurrency']} taken)"
    if "time" in waiting:
        return f"its time, {waiting['time']}"
    if "worker" in waiting:
        return f"a free worker ({waiting['worker']['queued']} queued in {waiting['worker']['queue']})"
    return ""


@page()
async def tasks(request: Request, viewer: Viewer) -> Response:
    filters = _filters(request.query_params)
    cursor = request.query_params.get("cursor") or None
    found = await run_in_threadpool(_list, tasks_of(request), filters, PAGE_SIZE, cursor, waiting_for=True)
    rows = [{"task": task, "waiting": _waiting_line(task)} for task in found.tasks]
    next_url = f"/console/tasks?{urlencode({**filters, 'cursor': found.next_cursor})}" if found.next_cursor else None
    types = sorted(t.name for t in request.app.state.registry.values())
    return render(request, "tasks.html", viewer, rows=rows, filters=filters, next_url=next_url, types=types)


def _matching_ids(service: TaskService, filters: dict[str, str]) -> list[str]:
    ids: list[str] = []
    cursor = None
    while len(ids) < BULK_MAX:
        found = _list(service, filters, 1000, cursor)
        ids += [t.id for t in found.tasks]
        cursor = found.next_cursor
        if not cursor:
            break
    return ids[:BULK_MAX]


ACTIONS = {"cancel": Access.WRITE, "retry": Access.WRITE, "delete": Access.ADMIN}


@page(Access.WRITE)
async def bulk(request: Request, viewer: Viewer) -> Response:
    """Cancel, retry or delete the selected tasks, or all the filter matches: first a page that
    says how many and asks, then (confirmed) the action, task by task."""
    form = await _form(request)
    action = _one(form, "action")
    if action not in ACTIONS:
        raise Refused(400, f"unknown action {action!r}")
    if not viewer.may(ACTIONS[action]):
        raise Refused(403, f"the key {viewer.name!r} may not {action} tasks")
    service = tasks_of(request)
    filters = {name: _one(form, name) for name in FILTERS if _one(form, name)}
    every = _one(form, "scope") == "all"
    ids = await run_in_threadpool(_matching_ids, service, filters) if every else form.get("id", [])
    if not ids:
        raise Refused(400, "no task was selected")
    if _one(form, "confirmed") != "yes":
        return render(
            request, "confirm.html", viewer, action=action, ids=ids, every=every, filters=filters, count=len(ids)
        )
    done, failed = 0, []
    for task_id in ids:
        try:
            await _act(service, action, task_id, viewer.name)
            done += 1
        except DomainError as error:
            failed.append(f"{task_id}: {error.detail}")
    return render(request, "done.html", viewer, action=action, done=done, failed=failed[:50], back="/console/tasks")


async def _act(service: TaskService, action: str, task_id: str, actor: str | None) -> None:
    """Cancel, retry or delete as the API does (app.api.routes): again while a worker is taking the
    task, and a running task's record deleted once it has stopped."""
    if action == "cancel":
        await routes.cancel(service, task_id, actor)
    elif action == "retry":
        await run_in_threadpool(service.retry, task_id, actor)
    else:
        await routes.delete(service, task_id)


def _graph(service: TaskService, root: Task) -> layout.Drawing:
    """The task with its ancestors and descendants, as far as GRAPH_MAX tasks."""
    found, edges = service.reads.family(root, GRAPH_MAX)
    return layout.layered({t.id: t.status.value for t in found}, edges)


@page()
async def task_page(request: Request, viewer: Viewer) -> Response:
    return await _task_page(request, viewer, request.path_params["task_id"])


async def _task_page(
    request: Request,
    viewer: Viewer,
    task_id: str,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    """A task's page; with the errors and values of an edit that was refused."""
    task, history, graph = await run_in_threadpool(_task_view, tasks_of(request), task_id)
    return render(
        request,
        "task.html",
        viewer,
        status,
        task=task,
        shown=task_json(task, detailed=True),
        waiting=_waiting_line(task),
        history=history,
        graph=graph,
        editable=task.status in WAITING,
        errors=errors or {},
        values=values or {},
    )


def _task_view(service: TaskService, task_id: str) -> tuple[Task, list[Any], layout.Drawing]:
    """What a task's page shows from Redis, in one trip off the event loop."""
    task = service.reads.get(task_id)
    return task, service.reads.history(task_id), _graph(service, task)


@page(Access.WRITE)
async def task_action(request: Request, viewer: Viewer) -> Response:
    task_id, action = request.path_params["task_id"], request.path_params["action"]
    if action not in ACTIONS:
        raise Refused(404, f"no action {action!r}")
    if not viewer.may(ACTIONS[action]):
        raise Refused(403, f"the key {viewer.name!r} may not {action} tasks")
    await _act(tasks_of(request), action, task_id, viewer.name)
    return RedirectResponse("/console/tasks" if action == "delete" else f"/console/tasks/{task_id}", status_code=303)


def _field_errors(error: Exception) -> dict[str, str]:
    """Errors by form field, from pydantic's or the domain's."""
    found: dict[str, str] = {}
    if isinstance(error, ValidationError):
        for e in error.errors():
            found.setdefault(_field([str(part) for part in e["loc"]]), e["msg"])
    elif isinstance(error, InvalidInput) and error.errors:
        for bad in error.errors:
            found.setdefault(_field(bad.loc.split(".")), bad.message)
    elif isinstance(error, DomainError):
        found["form"] = error.detail
    return found


def _field(loc: list[str]) -> str:
    """The form field an error's location is in: a schedule's task template is flat on its form
    (`task.type` is the field `type`), like a task's own fields."""
    if loc[:1] == ["task"] and len(loc) > 1:
        loc = loc[1:]
    return loc[0] if loc else "form"


def _task_body(form: dict[str, list[str]], errors: dict[str, str], editing: bool = False) -> dict[str, Any]:
    """A task body (as the API takes it) from the form's fields; what does not parse goes in
    `errors` by field."""
    body: dict[str, Any] = {}
    for name in ("id", "type", "priority", "name") if not editing else ("priority", "name"):
        if _one(form, name):
            body[name] = _one(form, name)
    if _one(form, "payload"):
        try:
            body["payload"] = codec.loads_request(_one(form, "payload").encode())
        except DomainError as bad:
            errors["payload"] = f"not JSON: {bad.detail}"
    if not editing and _one(form, "dependencies"):
        body["dependencies"] = [d for d in _one(form, "dependencies").replace(",", " ").split() if d]
    if _one(form, "run_at"):
        text = _one(form, "run_at")
        try:
            at = datetime.fromisoformat(text)
            body["run_at"] = (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).isoformat()
        except ValueError:
            errors["run_at"] = "a date and time, e.g. 2026-12-01T09:30 (UTC unless an offset is given)"
    if _one(form, "max_attempts"):
        if _one(form, "max_attempts").isdigit():
            body["max_attempts"] = int(_one(form, "max_attempts"))
        else:
            errors["max_attempts"] = "a whole number"
    return body


@page()
async def new_task(request: Request, viewer: Viewer) -> Response:
    types = list(request.app.state.registry.values())
    return render(request, "new.html", viewer, types=types, errors={}, values={"priority": "default"})


@page(Access.WRITE)
async def create_task(request: Request, viewer: Viewer) -> Response:
    form = await _form(request)
    errors: dict[str, str] = {}
    body = _task_body(form, errors)
    values = {
        name: _one(form, name)
        for name in ("id", "type", "payload", "dependencies", "priority", "run_at", "max_attempts", "name")
    }
    types = list(request.app.state.registry.values())
    if not errors:
        try:
            spec = TaskIn.model_validate(body).to_spec()
            task, _ = await run_in_threadpool(tasks_of(request).submit, spec, viewer.name)
            return RedirectResponse(f"/console/tasks/{task.id}", status_code=303)
        except (ValidationError, DomainError) as error:
            errors = _field_errors(error)
    return render(request, "new.html", viewer, 422, types=types, errors=errors, values=values)


@page(Access.WRITE)
async def edit_task(request: Request, viewer: Viewer) -> Response:
    service = tasks_of(request)
    task_id = request.path_params["task_id"]
    form = await _form(request)
    errors: dict[str, str] = {}
    body = _task_body(form, errors, editing=True)
    if not errors:
        try:
            changes = TaskUpdateIn.model_validate(body).to_changes()
            await run_in_threadpool(service.update, task_id, changes, viewer.name)
            return RedirectResponse(f"/console/tasks/{task_id}", status_code=303)
        except (ValidationError, DomainError) as error:
            errors = _field_errors(error)
    values = {name: _one(form, name) for name in ("payload", "priority", "run_at", "max_attempts", "name")}
    return await _task_page(request, viewer, task_id, 422, errors, values)


# -- batches ----------------------------------------------------------------------------------------


@page()
async def batch_form(request: Request, viewer: Viewer) -> Response:
    return render(request, "batch.html", viewer, text="", preview=None, error=None)


@page(Access.WRITE)
async def batch_submit(request: Request, viewer: Viewer) -> Response:
    form = await _form(request)
    text = _one(form, "tasks")
    try:
        body = codec.loads_request(text.encode()) if text else None
        specs = batch_specs(body if isinstance(body, dict) else {"tasks": body})
        dry_run = _one(form, "action") != "submit"
        outcome = await run_in_threadpool(tasks_of(request).store_batch, specs, dry_run, None, viewer.name)
    except DomainError as error:  # batch_specs gives pydantic's errors as the domain's
        return render(request, "batch.html", viewer, 422, text=text, preview=None, error=error.detail)
    statuses = outcome.statuses()
    if not dry_run:
        return render(
            request, "done.html", viewer, action="submit", done=len(statuses), failed=[], back="/console/tasks"
        )
    tasks = outcome.tasks()
    edges = [(e.parent, t.id) for t in tasks for e in t.dependencies]
    preview = layout.layered({t.id: t.status.value for t in tasks}, edges)
    return render(request, "batch.html", viewer, text=text, preview=preview, error=None, count=len(tasks))


# -- schedules --------------------------------------------------------------------------------------


@page()
async def schedules(request: Request, viewer: Viewer) -> Response:
    found = await run_in_threadpool(schedules_of(request).list_schedules)
    return render(request, "schedules.html", viewer, schedules=found)


def _schedule_body(form: dict[str, list[str]], errors: dict[str, str]) -> dict[str, Any]:
    task: dict[str, Any] = {"type": _one(form, "type"), "priority": _one(form, "priority") or "default"}
    if _one(form, "payload"):
        try:
            task["payload"] = codec.loads_request(_one(form, "payload").encode())
        except DomainError as bad:
            errors["payload"] = f"not JSON: {bad.detail}"
    body: dict[str, Any] = {"task": task}
    if _one(form, "id"):
        body["id"] = _one(form, "id")
    if _one(form, "kind") == "interval":
        if _one(form, "interval_s").isdigit():
            body["interval_s"] = int(_one(form, "interval_s"))
        else:
            errors["interval_s"] = "a whole number of seconds"
    else:
        body["cron"] = _one(form, "cron")
        body["timezone"] = _one(form, "timezone") or "UTC"  # a time zone means something to cron only
    if _one(form, "paused") == "yes":
        body["paused"] = True
    return body


def _next_five(spec: ScheduleSpec, anchor: datetime, runs: int) -> list[datetime]:
    """The next five fires as the scheduler makes them: an interval counted from `anchor` (the
    schedule's creation), `runs` of its max_runs spent."""
    fires: list[datetime] = []
    after = datetime.now(timezone.utc)
    while len(fires) < 5:
        upcoming = next_fire(spec, after, anchor=anchor, runs=runs + len(fires))
        if upcoming is None:
            break
        fires.append(upcoming)
        after = upcoming
    return fires


@page()
async def new_schedule(request: Request, viewer: Viewer) -> Response:
    values = {"kind": "cron", "timezone": "UTC", "priority": "default"}
    return _schedule_form(request, viewer, values, {}, None, None)


SCHEDULE_FIELDS = ("id", "type", "payload", "priority", "kind", "cron", "interval_s", "timezone")


@page(Access.ADMIN)
async def save_schedule(request: Request, viewer: Viewer) -> Response:
    """A new schedule, or (with a schedule id in the path) a changed one: previewed, or saved."""
    editing = request.path_params.get("schedule_id")
    form = await _form(request)
    errors: dict[str, str] = {}
    body = _schedule_body(form, errors)
    if editing:
        body["id"] = editing
    values = {name: _one(form, name) for name in SCHEDULE_FIELDS} | ({"id": editing} if editing else {})
    fires = None
    if not errors:
        try:
            spec = ScheduleIn.model_validate(body).to_spec(editing)
            # A change keeps the schedule's creation and runs (ScheduleService.replace).
            stored = await run_in_threadpool(schedules_of(request).get, editing) if editing else None
            anchor, runs = (stored.created_at, stored.runs) if stored else (datetime.now(timezone.utc), 0)
            fires = _next_five(spec, anchor, runs)
            if _one(form, "action") == "save":
                service = schedules_of(request)
                if editing:
                    # Pausing has buttons of its own: a change leaves it as it is when written.
                    await run_in_threadpool(partial(service.replace, editing, spec, keep_paused=True))
                    return RedirectResponse(f"/console/schedules/{editing}", status_code=303)
                schedule, _ = await run_in_threadpool(service.create, spec)
                return RedirectResponse(f"/console/schedules/{schedule.id}", status_code=303)
        except (ValidationError, DomainError) as error:
            errors = _field_errors(error)
    return _schedule_form(request, viewer, values, errors, fires, editing, 422 if errors else 200)


def _schedule_form(
    request: Request,
    viewer: Viewer,
    values: dict[str, str],
    errors: dict[str, str],
    fires: list[datetime] | None,
    editing: str | None,
    status: int = 200,
) -> Response:
    types = list(request.app.state.registry.values())
    return render(
        request,
        "schedule_new.html",
        viewer,
        status,
        types=types,
        errors=errors,
        values=values,
        fires=fires,
        editing=editing,
    )


@page()
async def edit_schedule(request: Request, viewer: Viewer) -> Response:
    schedule_id = request.path_params["schedule_id"]
    spec = (await run_in_threadpool(schedules_of(request).get, schedule_id)).spec
    values = {
        "id": schedule_id,
        "type": spec.task.type,
        "payload": json.dumps(spec.task.payload) if spec.task.payload else "",
        "priority": spec.task.priority.value,
        "kind": "interval" if spec.interval_s else "cron",
        "cron": spec.cron or "",
        "interval_s": str(spec.interval_s or ""),
        "timezone": spec.timezone,
    }
    return _schedule_form(request, viewer, values, {}, None, schedule_id)


@page()
async def schedule_page(request: Request, viewer: Viewer) -> Response:
    schedule_id = request.path_params["schedule_id"]
    schedule = await run_in_threadpool(schedules_of(request).get, schedule_id)
    runs = await run_in_threadpool(_list, tasks_of(request), {"schedule_id": schedule_id}, PAGE_SIZE)
    fires = [] if schedule.spec.paused else _next_five(schedule.spec, schedule.created_at, schedule.runs)
    return render(request, "schedule.html", viewer, schedule=schedule, runs=runs.tasks, fires=fires)


@page(Access.ADMIN)
async def schedule_action(request: Request, viewer: Viewer) -> Response:
    schedule_id, action = request.path_params["schedule_id"], request.path_params["action"]
    service = schedules_of(request)
    if action == "delete":
        await run_in_threadpool(service.delete, schedule_id)
        return RedirectResponse("/console/schedules", status_code=303)
    if action not in ("pause", "resume"):
        raise Refused(404, f"no action {action!r}")
    await run_in_threadpool(service.set_paused, schedule_id, action == "pause")
    return RedirectResponse(f"/console/schedules/{schedule_id}", status_code=303)


# -- workers and types ------------------------------------------------------------------------------


@page()
async def workers(request: Request, viewer: Viewer) -> Response:
    found = await run_in_threadpool(stats.workers, request.app.state.redis)
    return render(request, "workers.html", viewer, workers=found)


@page()
async def types(request: Request, viewer: Viewer) -> Response:
    limits = await run_in_threadpool(stats.limit_load, request.app.state.redis)
    found = [(t, limits.get(t.name)) for t in request.app.state.registry.values()]
    return render(request, "types.html", viewer, types=found)


async def home(request: Request) -> Response:
    return RedirectResponse("/console", status_code=307)


ROUTES = [
    Route("/", home, methods=["GET"]),
    Route("/console", overview, methods=["GET"]),
    Route("/console/login", login, methods=["GET", "POST"]),
    Route("/console/logout", logout, methods=["POST"]),
    Route("/console/tasks", tasks, methods=["GET"]),
    Route("/console/tasks/bulk", bulk, methods=["POST"]),
    Route("/console/tasks/new", new_task, methods=["GET"]),
    Route("/console/tasks/new", create_task, methods=["POST"]),
    Route("/console/tasks/{task_id}", task_page, methods=["GET"]),
    Route("/console/tasks/{task_id}/edit", edit_task, methods=["POST"]),
    Route("/console/tasks/{task_id}/{action}", task_action, methods=["POST"]),
    Route("/console/batch", batch_form, methods=["GET"]),
    Route("/console/batch", batch_submit, methods=["POST"]),
    Route("/console/schedules", schedules, methods=["GET"]),
    Route("/console/schedules/new", new_schedule, methods=["GET"]),
    Route("/console/schedules/new", save_schedule, methods=["POST"]),
    Route("/console/schedules/{schedule_id}", schedule_page, methods=["GET"]),
    Route("/console/schedules/{schedule_id}/edit", edit_schedule, methods=["GET"]),
    Route("/console/schedules/{schedule_id}/edit", save_schedule, methods=["POST"]),
    Route("/console/schedules/{schedule_id}/{action}", schedule_action, methods=["POST"]),
    Route("/console/workers", workers, methods=["GET"]),
    Route("/console/types", types, methods=["GET"]),
    Mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static"),
]
