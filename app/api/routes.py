"""The endpoints. Each is async and hands blocking Redis work to the thread pool."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import TypeAdapter, ValidationError
from redis import Redis
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app import codec
from app.api import openapi
from app.api.auth import ACTOR
from app.api.limits import charge
from app.api.problems import parse_json
from app.api.responses import JsonResponse
from app.api.schemas import BatchQuery, ListQuery, ScheduleIn, TaskIn, TaskUpdateIn, schedule_json, task_json
from app.api.stream import stream_events
from app.clock import iso
from app.defaults import (
    CANCEL_RETRY_S,
    DELETE_POLL_S,
    DELETE_WAIT_S,
    MAX_BATCH,
    MAX_NDJSON_BATCH,
    SUMMARY_OVER,
    TAKEN_WAIT_S,
)
from app.errors import DomainError, FieldError, InvalidInput, TaskConflict
from app.jobs import metrics, stats
from app.jobs.reads import TaskReader
from app.jobs.submission import Outcome, gc_paused
from app.jobs.tasks import Cancellation, TaskService
from app.model import TaskSpec
from app.registry import Registry
from app.schedules import ScheduleService

BATCH_PATH = "/api/tasks/batch"
BATCH_MEMBERS = TypeAdapter(list[TaskIn])
"""Validates a whole batch in one call into pydantic's core, not one call per member."""
NDJSON = "application/x-ndjson"


def tasks_of(request: Request) -> TaskService:
    """The app's TaskService (made in its lifespan)."""
    service: TaskService = request.app.state.tasks
    return service


def _actor(request: Request) -> str | None:
    """The name of the API key the request came with (app.api.auth), for the history of what it
    changes; None without keys."""
    actor: str | None = request.scope.get("state", {}).get(ACTOR)
    return actor


def _reads(request: Request) -> TaskReader:
    return tasks_of(request).reads


async def submit_task(request: Request) -> Response:
    body = TaskIn.model_validate(parse_json(await request.body()))
    spec = body.to_spec()
    service = tasks_of(request)
    # On the event loop where one script does it all; else (dependencies, limits) off it.
    actor = _actor(request)
    done = await service.submit_async(request.app.state.pipeline, spec, actor)
    task, created = done if done is not None else await run_in_threadpool(service.submit, spec, actor)
    # The path alone (request.url_for builds the absolute URL first, a tenth of a submission's
    # CPU), from the route itself: the app's url_path_for tries every route before it, each
    # refusal an exception.
    headers = {"Location": str(GET_TASK.url_path_for("get_task", task_id=task.id))}
    return JsonResponse(task_json(task), status_code=201 if created else 200, headers=headers)


async def submit_batch(request: Request) -> Response:
    dry_run = BatchQuery.model_validate(dict(request.query_params)).dry_run
    ndjson = request.headers.get("content-type", "").split(";")[0].strip().lower() == NDJSON
    # A batch allocates some 30 objects a task, nearly all alive until its answer is encoded: the
    # cyclic collector would walk them again and again (a tenth of a 10,000-task batch's time)
    # and find nothing, since reference counting frees them. It rests from the end of the upload
    # (never during one: a slow client must not hold it off for everyone) until they are gone.
    # NDJSON is validated as it arrives, off the event loop; JSON once whole.
    # Freeing them takes a 10,000-task batch some 8 ms: done once the answer has gone out.
    kept: list[Any] = []
    specs = await _ndjson_specs(request) if ndjson else []
    body = b"" if ndjson else await request.body()
    with gc_paused():
        if not ndjson:
            specs = await run_in_threadpool(_parsed_batch, body, kept)
        answer = await _stored(request, specs, dry_run, ndjson, kept)
        kept.append(specs)
        del specs
    answer.background = BackgroundTask(kept.clear)
    return answer


async def _stored(request: Request, specs: list[TaskSpec], dry_run: bool, ndjson: bool, kept: list[Any]) -> Response:
    refused = await charge(request, 0 if dry_run else len(specs))  # a dry run spends nothing
    if refused is not None:
        return refused
    form, stated = _answer_form(request.headers.get("prefer", ""), len(specs), ndjson)
    status, content = await run_in_threadpool(
        _submit_batch, tasks_of(request), specs, dry_run, form, _actor(request), kept
    )
    # Preference-Applied names only a preference the client stated (RFC 7240, section 3).
    headers = {"Preference-Applied": f"return={form}"} if stated and form != "representation" else None
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def _answer_form(prefer: str, count: int, ndjson: bool) -> tuple[str, bool]:
    """How a batch is answered (RFC 7240 `Prefer: return=...`): every task in full
    (`representation`), the id and status of each (`minimal`), or, by default for a batch of more
    than SUMMARY_OVER tasks and for NDJSON, a `summary` (counts by status): echoing 10,000 tasks
    costs the server more than storing them, and a client that sent them has them. Also whether the
    client stated the form."""
    asked = prefer.replace(" ", "").lower().split(",")
    for form in ("representation", "minimal"):
        if f"return={form}" in asked:
            return form, True
    return ("summary" if ndjson or count > SUMMARY_OVER else "representation"), False


async def _ndjson_specs(request: Request) -> list[TaskSpec]:
    """A batch of up to MAX_NDJSON_BATCH tasks, one JSON object a line, all or nothing like any
    batch. The body is validated as it arrives, a chunk at a time off the event loop, and never
    held whole."""
    specs: list[TaskSpec] = []
    errors: list[FieldError] = []
    pending = b""
    line = 0
    async for chunk in request.stream():
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        line = await run_in_threadpool(_ndjson_lines, lines, line, specs, errors)
    await run_in_threadpool(_ndjson_lines, [pending], line, specs, errors)
    if errors:
        raise InvalidInput("; ".join(f"{e.loc}: {e.message}" for e in errors[:20]), errors[:100])
    if not 1 <= len(specs) <= MAX_NDJSON_BATCH:
        raise InvalidInput(
            f"an NDJSON batch holds 1 to {MAX_NDJSON_BATCH} tasks", [FieldError("tasks", f"{len(specs)} tasks")]
        )
    return specs


def _ndjson_lines(lines: list[bytes], line: int, specs: list[TaskSpec], errors: list[FieldError]) -> int:
    """Validate NDJSON lines (numbered from `line` + 1), appending tasks or errors; returns the
    number of the last line. Blank lines are skipped."""
    for raw in lines:
        line += 1
        if not raw.strip():
            continue
        if len(specs) + len(errors) >= MAX_NDJSON_BATCH:
            errors.append(FieldError(f"line {line}", f"more than {MAX_NDJSON_BATCH} tasks"))
            break
        try:
            specs.append(TaskIn.model_validate(parse_json(raw)).to_spec())
        except ValidationError as invalid:
            for e in invalid.errors():
                where = ".".join(str(part) for part in e["loc"])
                errors.append(FieldError(f"line {line}" + (f".{where}" if where else ""), e["msg"]))
        except DomainError as bad:  # not JSON, or not an object
            errors.append(FieldError(f"line {line}", bad.detail))
    return line


def _parsed_batch(raw: bytes, kept: list[Any]) -> list[TaskSpec]:
    """Parsing and validating 10,000 tasks, off the event loop; the parsed body goes to `kept`."""
    parsed = parse_json(raw)
    kept.append(parsed)
    return batch_specs(parsed)


def _submit_batch(
    service: TaskService, specs: list[TaskSpec], dry_run: bool, form: str, actor: str | None, kept: list[Any]
) -> tuple[int, bytes]:
    """Storing and encoding 10,000 tasks, off the event loop; what was stored goes to `kept`."""
    encoded: list[bytes] = []

    def encode(outcome: Outcome) -> None:
        encoded.append(_answer(outcome, form, dry_run))

    # The answer is encoded while Redis runs the transaction where it can be.
    outcome = service.store_batch(specs, dry_run, meanwhile=encode, actor=actor)
    kept.append(outcome)
    if not encoded:
        encode(outcome)
    return (200 if dry_run or not outcome.created else 201), encoded[-1]


def _answer(outcome: Outcome, form: str, dry_run: bool) -> bytes:
    """A batch's answer in `form` (`_answer_form`)."""
    if form == "representation":
        return codec.dumps({"dry_run": dry_run, "tasks": [task_json(t) for t in outcome.tasks()]})
    statuses = outcome.statuses()
    if form == "minimal":
        listed = [{"id": task_id, "status": state.value} for task_id, state in statuses]
        return codec.dumps({"dry_run": dry_run, "tasks": listed})
    counts = Counter(state.value for _, state in statuses)
    summary = {"dry_run": dry_run, "created": outcome.created, "count": len(statuses), "statuses": counts}
    return codec.dumps(summary)


def batch_specs(body: Any) -> list[TaskSpec]:
    """The members validated in one pass; every error names its index and id."""
    if not isinstance(body, dict) or set(body) != {"tasks"} or not isinstance(body["tasks"], list):
        raise InvalidInput('send {"tasks": [...]}', [FieldError("tasks", "a list of tasks is required")])
    raw = body["tasks"]
    if not 1 <= len(raw) <= MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} tasks", [FieldError("tasks", f"{len(raw)} tasks")])
    try:
        members = BATCH_MEMBERS.validate_python(raw)
    except ValidationError as invalid:
        errors = []
        for e in invalid.errors():
            index, *where = e["loc"]
            item = raw[int(index)]
            task_id = item.get("id") if isinstance(item, dict) else None
            loc = ".".join(str(part) for part in (index, *where))
            errors.append(FieldError(f"tasks.{loc}", f"task {task_id!r}: {e['msg']}"))
        raise InvalidInput("; ".join(f"{e.loc}: {e.message}" for e in errors[:20]), errors) from None
    return [member.to_spec() for member in members]


async def list_tasks(request: Request) -> Response:
    params = dict(request.query_params)
    if "status" in params:
        params["status"] = params["status"].upper()
    query = ListQuery.model_validate(params)
    page = await run_in_threadpool(
        _reads(request).list_tasks,
        status=query.status,
        task_type=query.type,
        schedule_id=query.schedule_id,
        limit=query.limit,
        cursor=query.cursor,
        id_prefix=query.id_prefix,
    )
    headers = {}
    if page.next_cursor:
        next_url = request.url.include_query_params(cursor=page.next_cursor)
        headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
    return JsonResponse([task_json(t) for t in page.tasks], headers=headers)


async def get_task(request: Request) -> Response:
    task = await run_in_threadpool(_reads(request).get, request.path_params["task_id"])
    return JsonResponse(task_json(task, detailed=True))


async def update_task(request: Request) -> Response:
    body = TaskUpdateIn.model_validate(parse_json(await request.body()))
    task_id, changes = request.path_params["task_id"], body.to_changes()
    task = await run_in_threadpool(tasks_of(request).update, task_id, changes, _actor(request))
    return JsonResponse(task_json(task, detailed=True))


async def cancel_task(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    outcome = await cancel(tasks_of(request), task_id, _actor(request))
    task = await run_in_threadpool(_reads(request).get, task_id)
    # 202: a running task was told to stop; it is CANCELED within moments.
    return JsonResponse(task_json(task, detailed=True), status_code=200 if outcome is Cancellation.CANCELED else 202)


async def cancel(service: TaskService, task_id: str, actor: str | None) -> Cancellation:
    """Cancel a task (the API's and the console's way): CANCELED, or STOPPING for a running one."""
    return await _until_not_taken(partial(service.cancel, actor=actor), task_id)


async def delete(service: TaskService, task_id: str) -> None:
    """Delete a task (the API's and the console's way). A running task stops within moments; its
    record goes once it has (after DELETE_WAIT_S anyway), so its worker never ends a task whose
    record is gone."""
    if await _until_not_taken(service.delete, task_id) is Cancellation.STOPPING:
        deadline = time.monotonic() + DELETE_WAIT_S
        while (
            time.monotonic() < deadline and not (await run_in_threadpool(service.reads.get_status, task_id)).is_terminal
        ):
            await asyncio.sleep(DELETE_POLL_S)
        await run_in_threadpool(partial(service.delete, task_id, running_or_not=True))


async def _until_not_taken(step: Callable[[str], Cancellation], task_id: str) -> Cancellation:
    """Run a cancel (or delete) step again while a worker is between taking the task from its
    queue and starting it (milliseconds), waiting on the event loop, never in a thread."""
    for _ in range(round(TAKEN_WAIT_S / CANCEL_RETRY_S)):
        outcome = await run_in_threadpool(step, task_id)
        if outcome is not Cancellation.TAKEN:
            return outcome
        await asyncio.sleep(CANCEL_RETRY_S)
    raise TaskConflict(f"task {task_id!r} kept changing state; try again")


async def retry_task(request: Request) -> Response:
    task = await run_in_threadpool(tasks_of(request).retry, request.path_params["task_id"], _actor(request))
    return JsonResponse(task_json(task, detailed=True))


async def delete_task(request: Request) -> Response:
    await delete(tasks_of(request), request.path_params["task_id"])
    return Response(status_code=204)


async def task_dependents(request: Request) -> Response:
    children = await run_in_threadpool(_reads(request).dependents, request.path_params["task_id"])
    return JsonResponse([task_json(t) for t in children])


async def task_history(request: Request) -> Response:
    events = await run_in_threadpool(_reads(request).history, request.path_params["task_id"])
    return JsonResponse(
        [
            {
                "event": e.event,
                "at": iso(e.at),
                "attempt": e.attempt,
                "worker": e.worker,
                "error": e.error,
                "detail": e.detail,
                "by": e.by,
            }
            for e in events
        ]
    )


async def get_stats(request: Request) -> Response:
    return JsonResponse(await run_in_threadpool(stats.stats, request.app.state.redis))


async def get_workers(request: Request) -> Response:
    return JsonResponse(await run_in_threadpool(stats.workers, request.app.state.redis))


async def get_task_status(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    status = await run_in_threadpool(_reads(request).get_status, task_id)
    return JsonResponse({"id": task_id, "status": status.value})


def schedules_of(request: Request) -> ScheduleService:
    """The app's ScheduleService (made in its lifespan)."""
    service: ScheduleService = request.app.state.schedules
    return service


async def create_schedule(request: Request) -> Response:
    body = ScheduleIn.model_validate(parse_json(await request.body()))
    schedule, created = await run_in_threadpool(schedules_of(request).create, body.to_spec())
    headers = {"Location": str(request.app.url_path_for("get_schedule", schedule_id=schedule.id))}
    return JsonResponse(schedule_json(schedule), status_code=201 if created else 200, headers=headers)


async def list_schedules(request: Request) -> Response:
    schedules = await run_in_threadpool(schedules_of(request).list_schedules)
    return JsonResponse([schedule_json(s) for s in schedules])


async def get_schedule(request: Request) -> Response:
    schedule = await run_in_threadpool(schedules_of(request).get, request.path_params["schedule_id"])
    return JsonResponse(schedule_json(schedule))


async def replace_schedule(request: Request) -> Response:
    schedule_id = request.path_params["schedule_id"]
    body = ScheduleIn.model_validate(parse_json(await request.body()))
    if body.id is not None and body.id != schedule_id:
        raise InvalidInput("the id in the body differs from the one in the path", [FieldError("id", "mismatch")])
    schedule = await run_in_threadpool(schedules_of(request).replace, schedule_id, body.to_spec(schedule_id))
    return JsonResponse(schedule_json(schedule))


async def delete_schedule(request: Request) -> Response:
    await run_in_threadpool(schedules_of(request).delete, request.path_params["schedule_id"])
    return Response(status_code=204)


async def list_types(request: Request) -> Response:
    registry: Registry = request.app.state.registry
    return JsonResponse(
        [
            {
                "name": t.name,
                "description": t.description,
                "max_attempts": t.max_attempts,
                "timeout_ms": t.timeout_ms,
                "backoff": t.backoff.as_dict(),
                "concurrency": t.concurrency,
            }
            for t in registry.values()
        ]
    )


async def health(request: Request) -> Response:
    return JsonResponse({"status": "ok", "redis": await run_in_threadpool(_redis_report, request.app.state.redis)})


def _redis_report(redis: Redis) -> dict[str, Any]:
    """What /health says of Redis: its persistence and its memory, with every warning."""
    report = _persistence(redis)
    report["memory"] = memory = stats.memory(redis)
    report["warnings"] += memory["warnings"]
    return report


def _persistence(redis: Redis) -> dict[str, Any]:
    """What a kill -9 of Redis would lose, as far as the server lets us see."""
    redis.ping()
    info = redis.info("persistence")
    report: dict[str, Any] = {"ok": True, "aof_enabled": bool(info.get("aof_enabled"))}
    warnings = []
    try:
        config = redis.config_get("appendfsync")
        config.update(redis.config_get("maxmemory-policy"))
        report["appendfsync"] = config.get("appendfsync")
        report["maxmemory_policy"] = config.get("maxmemory-policy")
        if report["maxmemory_policy"] not in (None, "noeviction"):
            warnings.append(f"maxmemory-policy {report['maxmemory_policy']} can evict tasks; use noeviction")
    except Exception:
        # Managed Redis often forbids CONFIG; persistence is then the provider's promise.
        report["appendfsync"] = None
        report["maxmemory_policy"] = None
    if not report["aof_enabled"]:
        warnings.append("AOF is off: a Redis crash loses every task since the last snapshot")
    elif report["appendfsync"] in ("everysec", "no"):
        warnings.append(
            f"appendfsync {report['appendfsync']}: a Redis crash while the disk is busy can lose up to 2 s of "
            "acknowledged writes; use appendfsync always (deploy/redis.conf)"
        )
    report["warnings"] = warnings
    return report


async def prometheus_metrics(request: Request) -> Response:
    content = await run_in_threadpool(metrics.exposition, request.app.state.redis)
    return Response(content, media_type=metrics.CONTENT_TYPE)


async def openapi_json(request: Request) -> Response:
    return JsonResponse(_contract(request.app)[0])


async def docs(request: Request) -> Response:
    return HTMLResponse(_contract(request.app)[1])


def _contract(app: Any) -> tuple[dict[str, Any], str]:
    """The OpenAPI document of this app (its task types, whether it has keys) and its page,
    made once."""
    made: tuple[dict[str, Any], str] | None = getattr(app.state, "contract", None)
    if made is None:
        doc = openapi.document(list(app.state.registry), keys=bool(app.state.settings.api_keys))
        made = app.state.contract = (doc, openapi.reference_page(doc))
    return made


GET_TASK = Route("/api/tasks/{task_id}", get_task, methods=["GET"], name="get_task")

ROUTES = [
    Route("/api/tasks", submit_task, methods=["POST"]),
    Route("/api/tasks", list_tasks, methods=["GET"]),
    Route(BATCH_PATH, submit_batch, methods=["POST"]),
    GET_TASK,
    Route("/api/tasks/{task_id}", update_task, methods=["PUT"]),
    Route("/api/tasks/{task_id}", delete_task, methods=["DELETE"]),
    Route("/api/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
    Route("/api/tasks/{task_id}/retry", retry_task, methods=["POST"]),
    Route("/api/tasks/{task_id}/history", task_history, methods=["GET"]),
    Route("/api/tasks/{task_id}/dependents", task_dependents, methods=["GET"]),
    Route("/api/stats", get_stats, methods=["GET"]),
    Route("/api/workers", get_workers, methods=["GET"]),
    Route("/api/tasks/{task_id}/status", get_task_status, methods=["GET"]),
    Route("/api/schedules", create_schedule, methods=["POST"]),
    Route("/api/schedules", list_schedules, methods=["GET"]),
    Route("/api/schedules/{schedule_id}", get_schedule, methods=["GET"], name="get_schedule"),
    Route("/api/schedules/{schedule_id}", replace_schedule, methods=["PUT"]),
    Route("/api/schedules/{schedule_id}", delete_schedule, methods=["DELETE"]),
    Route("/api/types", list_types, methods=["GET"]),
    Route("/api/events", stream_events, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/metrics", prometheus_metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
