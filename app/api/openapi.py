"""The published contract: `GET /openapi.json` (OpenAPI 3.1) and `GET /docs`, its reference page.

Request and response schemas are generated from the pydantic models that validate requests and
describe answers (app.api.schemas); the table below says, for every route, which of them it takes
and answers, and with which statuses and headers. A test holds the table to the routes (every
route is in it, nothing else) and the answers to their schemas, so the document cannot drift.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from app.api.auth import needed, protected
from app.api.schemas import (
    BatchIn,
    BatchOut,
    BatchQuery,
    BatchSummaryOut,
    EventOut,
    ListQuery,
    ProblemOut,
    ScheduleIn,
    ScheduleOut,
    TaskIn,
    TaskOut,
    TaskStatusOut,
    TaskUpdateIn,
    TypeOut,
)
from app.defaults import MAX_NDJSON_BATCH
from app.jobs import events
from app.model import TaskStatus

PROBLEMS = {
    400: "the body is not JSON, or not strict JSON (NaN, duplicate keys, ...)",
    401: "no API key, or an unknown one (when keys are configured)",
    403: "the API key lacks the scope this needs",
    404: "no such task or schedule",
    409: "the id is taken by a different body, or the task's state does not allow this",
    413: "the body is over its limit, or a task's payload is",
    422: "a value does not fit: each error names its field",
    429: "over RQFLOW_RATE_LIMIT; nothing was done",
    500: "the stored record cannot be decoded (written by hand or another version); DELETE removes it",
    503: "Redis is unreachable or full, or RQFLOW_MAX_UNFINISHED is reached; nothing was done",
}

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "the path of what was created", "schema": {"type": "string"}},
    "Link": {"description": 'the next page: `<path?cursor=...>; rel="next"`', "schema": {"type": "string"}},
    "Retry-After": {
        "description": "seconds to wait before sending the same request again",
        "schema": {"type": "integer"},
    },
    "RateLimit-Policy": {
        "description": 'the rate limit, `"rqflow";q=<requests>;w=<seconds>` (with RQFLOW_RATE_LIMIT)',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'what is left of it, `"rqflow";r=<remaining>;t=<seconds until all is back>`',
        "schema": {"type": "string"},
    },
    "Preference-Applied": {
        "description": "`return=minimal` when the client asked for only ids and statuses",
        "schema": {"type": "string"},
    },
}

TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
SCHEDULE_ID = {"name": "schedule_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A query model's fields as query parameters (a query has no null: an optional one is absent)."""
    found = []
    for name, schema in model.model_json_schema(ref_template="#/components/schemas/{model}")["properties"].items():
        branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
        schema = {**schema, **(branches[0] if len(branches) == 1 else {})}
        if schema.get("default", 0) is None:
            del schema["default"]
        described = {"description": schema["description"]} if "description" in schema else {}
        found.append({"name": name, "in": "query", "schema": schema, **described})
    return found


LIST_QUERY = _query(ListQuery)
"""`GET /api/tasks`'s parameters, from the model that validates them."""
BATCH_QUERY = _query(BatchQuery)


EVENT_ID = {"type": "string", "pattern": f"^{events.EVENT_ID.pattern}$"}
"""An event's id, as the stream checks it (app.jobs.events)."""

EVENT_FILTERS: list[dict[str, Any]] = [
    *(
        {"name": name, "in": "query", "required": False, "description": f"only events of this {name}", "schema": schema}
        for name, schema in (
            ("task", {"type": "string"}),
            ("type", {"type": "string"}),
            ("status", {"type": "string", "enum": [s.value for s in TaskStatus]}),
        )
    ),
    {
        "name": "last_event_id",
        "in": "query",
        "required": False,
        "description": "resume after this event, for a client that cannot send Last-Event-ID (which wins)",
        "schema": EVENT_ID,
    },
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "resume after this event (EventSource sends it when it reconnects)",
        "schema": EVENT_ID,
    },
]


def _operation_id(path: str, method: str) -> str:
    return f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}"


def _links(parameter: str, targets: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """OpenAPI links from an answer's `id` to the operations `targets` names (path, method)."""
    return {
        name: {"operationId": _operation_id(path, method), "parameters": {parameter: "$response.body#/id"}}
        for name, (path, method) in targets.items()
    }


TASK_LINKS = _links(
    "task_id",
    {
        "GetTask": ("/api/tasks/{task_id}", "get"),
        "ChangeTask": ("/api/tasks/{task_id}", "put"),
        "CancelTask": ("/api/tasks/{task_id}/cancel", "post"),
        "RetryTask": ("/api/tasks/{task_id}/retry", "post"),
        "TaskHistory": ("/api/tasks/{task_id}/history", "get"),
        "TaskDependents": ("/api/tasks/{task_id}/dependents", "get"),
        "DeleteTask": ("/api/tasks/{task_id}", "delete"),
    },
)
"""What can be done with a task an answer names (OpenAPI links, for clients and stateful tests)."""

SCHEDULE_LINKS = _links(
    "schedule_id",
    {
        "GetSchedule": ("/api/schedules/{schedule_id}", "get"),
        "ReplaceSchedule": ("/api/schedules/{schedule_id}", "put"),
        "DeleteSchedule": ("/api/schedules/{schedule_id}", "delete"),
    },
)


@dataclass(frozen=True)
class Op:
    summary: str
    answers: dict[int, type[BaseModel] | list[type[BaseModel]] | dict[str, Any] | None]
    """Success statuses and what they answer (a model, a list of one, any JSON object, or nothing)."""
    body: type[BaseModel] | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    problems: tuple[int, ...] = ()
    headers: dict[int, tuple[str, ...]] = field(default_factory=dict)
    links: dict[str, Any] = field(default_factory=dict)
    """OpenAPI links of its success answers."""
    media: str = "application/json"
    """The media type of its success answers."""


ANY_OBJECT: dict[str, Any] = {"type": "object"}

OPERATIONS: dict[tuple[str, str], Op] = {
    ("/api/tasks", "post"): Op(
        "Submit one task",
        {201: TaskOut, 200: TaskOut},
        body=TaskIn,
        problems=(400, 409, 413, 422),
        headers={201: ("Location",), 200: ("Location",)},
        links=TASK_LINKS,
    ),
    ("/api/tasks", "get"): Op(
        "List tasks, newest first",
        {200: [TaskOut]},
        parameters=LIST_QUERY,
        problems=(422,),
        headers={200: ("Link",)},
    ),
    ("/api/tasks/batch", "post"): Op(
        "Submit a batch (a DAG), all or nothing",
        {201: BatchOut, 200: BatchOut},
        body=BatchIn,
        parameters=BATCH_QUERY,
        problems=(400, 409, 413, 422),
        headers={201: ("Preference-Applied",), 200: ("Preference-Applied",)},
    ),
    ("/api/tasks/{task_id}", "get"): Op("Read a task", {200: TaskOut}, parameters=[TASK_ID], problems=(404, 500)),
    ("/api/tasks/{task_id}", "put"): Op(
        "Change a task that has not started",
        {200: TaskOut},
        body=TaskUpdateIn,
        parameters=[TASK_ID],
        problems=(400, 404, 409, 413, 422),
    ),
    ("/api/tasks/{task_id}", "delete"): Op(
        "Delete a task (canceling it first)", {204: None}, parameters=[TASK_ID], problems=(404, 409)
    ),
    ("/api/tasks/{task_id}/cancel", "post"): Op(
        "Cancel a task (a running one is asked to stop)",
        {200: TaskOut, 202: TaskOut},
        parameters=[TASK_ID],
        problems=(404, 409),
    ),
    ("/api/tasks/{task_id}/retry", "post"): Op(
        "Run a FAILED or CANCELED task again", {200: TaskOut}, parameters=[TASK_ID], problems=(404, 409)
    ),
    ("/api/tasks/{task_id}/history", "get"): Op(
        "A task's events, oldest first", {200: [EventOut]}, parameters=[TASK_ID], problems=(404, 500)
    ),
    ("/api/tasks/{task_id}/dependents", "get"): Op(
        "The tasks that depend on this one, oldest first",
        {200: [TaskOut]},
        parameters=[TASK_ID],
        problems=(404,),
    ),
    ("/api/tasks/{task_id}/status", "get"): Op(
        "A task's status alone", {200: TaskStatusOut}, parameters=[TASK_ID], problems=(404,)
    ),
    ("/api/stats", "get"): Op("Counts by status, queues, throughput, Redis memory", {200: ANY_OBJECT}),
    ("/api/workers", "get"): Op("Workers alive, with what they run", {200: {"type": "array", "items": ANY_OBJECT}}),
    ("/api/types", "get"): Op("Registered task types", {200: [TypeOut]}),
    ("/api/schedules", "post"): Op(
        "Create a recurring schedule",
        {201: ScheduleOut, 200: ScheduleOut},
        body=ScheduleIn,
        problems=(400, 409, 413, 422),
        headers={201: ("Location",), 200: ("Location",)},
        links=SCHEDULE_LINKS,
    ),
    ("/api/schedules", "get"): Op("List schedules", {200: [ScheduleOut]}),
    ("/api/schedules/{schedule_id}", "get"): Op(
        "Read a schedule", {200: ScheduleOut}, parameters=[SCHEDULE_ID], problems=(404, 500)
    ),
    ("/api/schedules/{schedule_id}", "put"): Op(
        "Replace a schedule",
        {200: ScheduleOut},
        body=ScheduleIn,
        parameters=[SCHEDULE_ID],
        problems=(400, 404, 409, 413, 422),
    ),
    ("/api/schedules/{schedule_id}", "delete"): Op(
        "Delete a schedule", {204: None}, parameters=[SCHEDULE_ID], problems=(404,)
    ),
    ("/api/events", "get"): Op(
        "Server-Sent Events of what happens to tasks, schedules and workers, as it happens",
        {
            200: {
                "type": "string",
                "description": "`id: <entry id>/<n>` and `data: <JSON>` (task, event, status, type, at, and "
                "attempt, worker, error where they apply) an event; `event: reset` when events after "
                "Last-Event-ID were trimmed away; a comment line every 15 s of quiet",
            }
        },
        parameters=EVENT_FILTERS,
        problems=(422,),
        media="text/event-stream",
    ),
    ("/health", "get"): Op("Redis reachable, its persistence and memory, with warnings", {200: ANY_OBJECT}),
    ("/metrics", "get"): Op(
        "Prometheus metrics of tasks, queues, workers and requests",
        {200: {"type": "string", "description": "the Prometheus text format 0.0.4"}},
        media="text/plain",
    ),
}


def _schema(answer: Any, ref: dict[type[BaseModel], Any]) -> dict[str, Any]:
    if isinstance(answer, list):
        return {"type": "array", "items": ref[answer[0]]}
    if isinstance(answer, dict):
        return answer
    return dict(ref[answer])


def _problem(status: int, ref: dict[type[BaseModel], Any], headers: tuple[str, ...] = ()) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": PROBLEMS[status],
        "content": {"application/problem+json": {"schema": ref[ProblemOut]}},
    }
    if headers:
        answer["headers"] = _header_refs(headers)
    return answer


def _header_refs(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def document(task_types: list[str] | None = None, keys: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API; of a running one with its registered `task_types`
    (the only values `type` may take) and whether it has API keys (without, no operation needs
    one, and none answers 401 or 403)."""
    models: list[type[BaseModel]] = [ProblemOut, TaskIn, TaskUpdateIn, ScheduleIn, BatchIn]
    models += [TaskOut, TaskStatusOut, BatchOut, BatchSummaryOut, EventOut, ScheduleOut, TypeOut]
    mode: dict[type[BaseModel], JsonSchemaMode] = {
        m: "validation" if m.__name__.endswith("In") else "serialization" for m in models
    }
    refs, defs = models_json_schema([(m, mode[m]) for m in models], ref_template="#/components/schemas/{model}")
    ref = {m: refs[(m, mode[m])] for m in models}
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), op in OPERATIONS.items():
        # The scope a key needs is the auth middleware's own rule, so the two cannot disagree.
        access = needed(method.upper(), path).name.lower() if protected(path) else None
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(path, method),
            "parameters": list(op.parameters),
            "responses": {},
        }
        if access is None or not keys:
            operation["security"] = []
        else:
            operation["description"] = f"Needs an API key with the `{access}` scope (when keys are configured)."
        if op.body is not None:
            content: dict[str, Any] = {"application/json": {"schema": ref[op.body]}}
            if op.body is BatchIn:
                content["application/x-ndjson"] = {
                    "schema": {
                        "type": "string",
                        "description": f"one task (a TaskIn) a line, up to {MAX_NDJSON_BATCH}; answered with "
                        "a BatchSummaryOut unless `Prefer: return=representation` or `return=minimal`",
                    }
                }
            operation["requestBody"] = {"required": True, "content": content}
        limited = ("RateLimit-Policy", "RateLimit") if access and path.startswith("/api/") else ()
        for status, answer in op.answers.items():
            response: dict[str, Any] = {"description": "done" if status < 300 else "accepted"}
            if answer is not None:
                schema = _schema(answer, ref)
                if op.body is BatchIn:
                    schema = {"oneOf": [schema, ref[BatchSummaryOut]]}
                response["content"] = {op.media: {"schema": schema}}
            if op.links and status < 300:
                response["links"] = op.links
            names = (*op.headers.get(status, ()), *limited)
            if names:
                response["headers"] = _header_refs(names)
            operation["responses"][str(status)] = response
        statuses = set(op.problems) | ({429, 503} if limited else {503}) | ({401, 403} if access and keys else set())
        for status in sorted(statuses):
            retry = ("Retry-After",) if status in (409, 429, 503) else ()
            operation["responses"][str(status)] = _problem(status, ref, retry + (limited if status == 429 else ()))
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rqflow",
            "version": "1",
            "description": "Tasks with dependencies, schedules, limits and retries, run by RQ workers.",
        },
        "paths": paths,
        "components": {
            "schemas": _with_types(defs.get("$defs", {}), task_types),
            "headers": HEADERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _with_types(schemas: dict[str, Any], task_types: list[str] | None) -> dict[str, Any]:
    """The task bodies' `type` held to the registered types, where they are known."""
    if task_types:
        for name in ("TaskIn", "TaskTemplateIn"):
            schemas[name]["properties"]["type"]["enum"] = sorted(task_types)
    return schemas


def reference_page(doc: dict[str, Any]) -> str:
    """`GET /docs`: the document as one HTML page, rendered here (no script, nothing fetched)."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>rqflow API</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "h2{margin-top:2em}code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow:auto}"
        "summary{cursor:pointer}.m{font-weight:bold;text-transform:uppercase}</style></head><body>",
        f"<h1>{esc(doc['info']['title'])} API</h1><p>{esc(doc['info']['description'])}</p>",
        '<p>The machine-readable contract: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>',
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2><span class=m>{esc(method)}</span> <code>{esc(path)}</code></h2>")
            parts.append(f"<p>{esc(op['summary'])}. {esc(op.get('description', ''))}</p>")
            if op["parameters"]:
                rows = "".join(f"<li><code>{esc(p['name'])}</code> ({esc(p['in'])})</li>" for p in op["parameters"])
                parts.append(f"<p>Parameters:</p><ul>{rows}</ul>")
            if "requestBody" in op:
                for media, body in op["requestBody"]["content"].items():
                    shown = json.dumps(body["schema"], indent=2)
                    parts.append(f"<details><summary>Body ({esc(media)})</summary><pre>{esc(shown)}</pre></details>")
            rows = "".join(
                f"<li><code>{esc(status)}</code> {esc(answer['description'])}</li>"
                for status, answer in op["responses"].items()
            )
            parts.append(f"<p>Answers:</p><ul>{rows}</ul>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        shown = esc(json.dumps(schema, indent=2))
        parts.append(f"<details id={esc(name)}><summary>{esc(name)}</summary><pre>{shown}</pre></details>")
    parts.append("</body></html>")
    return "".join(parts)
