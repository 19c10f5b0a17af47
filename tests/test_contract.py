"""Schemathesis against the running app (real Redis, a real engine worker, API keys on): every
operation of the published contract with every check: no 5xx, answers as documented (status,
content type, schema, headers), authentication enforced, invalid input refused, valid input
accepted.

Valid input may still be refused (422) for the rules a JSON Schema cannot state, and only for
those: each such refusal must name one of the fields in SEMANTIC (a dependency that does not
exist, a cron expression or a time zone that does not parse, two fields that exclude each other,
an id twice in a batch or a cycle in it, an id in the body other than the path's).

Schemathesis' own pytest integration does not run under this pytest (it reads a private node
attribute pytest 9 removed), so each operation is a parametrized test here, driven by Hypothesis
over Schemathesis' strategy for it."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from starlette.applications import Starlette
from starlette.testclient import TestClient

from app.api.auth import protected
from app.api.main import create_app
from app.api.openapi import document
from app.settings import Settings
from tests.support import RedisServer, engine_worker

# What the schema names but cannot spell out: a cron expression, an IANA time zone.
schemathesis.openapi.format("cron", st.sampled_from(["* * * * *", "*/5 * * * *", "0 9 * * 1-5", "30 2 1 * *"]))
schemathesis.openapi.format("time-zone", st.sampled_from(sorted(zoneinfo.available_timezones())))

ENDLESS = {"GET /api/events"}
"""An event stream never ends, so no generated case could be checked; tests/app/api/test_stream.py
holds it to its contract (its answers, its 422s)."""
LABELS = [
    label
    for result in schemathesis.openapi.from_dict(document()).get_all_operations()
    if (label := result.ok().label) not in ENDLESS
]
SECRET = "contract-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}

SEMANTIC = re.compile(
    r"^(tasks\.\d+\.)?(dependencies(\.\d+)?|delay_ms|run_at)$"  # dependencies exist; run_at or delay_ms
    r"|^(cron|interval_s|timezone|end_at)$"  # a cron or an interval; a zone for cron only; end after start
    r"|^task\.(delay_ms|run_at)$"
    r"|^tasks$|^tasks\.\d+\.id$"  # a cycle among the batch's dependencies; an id twice in it
    r"|^id$"  # a schedule's id in the body other than the one in its path
)


def refused_only_for_what_a_schema_cannot_state(case: Any, response: Any) -> None:
    """Schemathesis' acceptance of valid input, but a 422 for one of the SEMANTIC rules passes."""
    positive = case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE
    if positive and response.status_code == 422:
        fields = [e["field"] for e in response.json().get("errors") or [{"field": ""}]]
        assert all(SEMANTIC.match(f) for f in fields), f"valid input refused: {response.text}"


def sent_breaks_the_contract(case: Any, response: Any) -> bool:
    """Whether a negative case's request, as sent, still breaks the contract. Two of its breaches
    never reach the server: a missing or wrong key (the only header the contract declares) is
    replaced by AUTH, and a query parameter generated as an empty list is not sent at all."""
    negative = {location for location, info in case.meta.components.items() if info.mode.is_negative}
    negative.discard(ParameterLocation.HEADER)
    if ParameterLocation.QUERY in negative:
        sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
        if not all(name in sent for name in case.query or {}):
            negative.discard(ParameterLocation.QUERY)
    return bool(negative)


@pytest.fixture(scope="module")
def running_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    # A Redis of its own: its worker must not run the tasks of tests that share the session's.
    redis_server = RedisServer.start_new(tmp_path_factory.mktemp("contract-redis"))
    settings = Settings(
        redis_url=redis_server.url,
        task_modules=[],  # the built-in types only: the test's own ones crash, write files, hog memory
        var_dir=tmp_path_factory.mktemp("var"),
        api_keys=[f"fuzz:admin:{SECRET}"],  # so that the checks of authentication run too
    )
    app = create_app(settings)
    try:
        with engine_worker(redis_server.url), TestClient(app):  # the lifespan opens the app's Redis
            yield app
    finally:
        redis_server.kill()


@pytest.fixture(scope="module")
def api_schema(running_app: Starlette) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", running_app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("label", LABELS)
def test_every_operation_keeps_its_contract(label: str, mode: GenerationMode, api_schema: Any) -> None:
    """Valid input is accepted (or refused only for what a schema cannot state); input that breaks
    the contract is refused, never acted on."""
    operation = api_schema.find_operation_by_label(label)
    if mode is GenerationMode.NEGATIVE and not protected(operation.path):
        pytest.skip("nothing to send wrong: no parameters, body or key")  # /health

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        response = case.call(headers=AUTH)
        if mode is GenerationMode.NEGATIVE and not sent_breaks_the_contract(case, response):
            return  # what reached the server was valid input
        case.validate_response(
            response,
            headers=AUTH,
            excluded_checks=[schemathesis.checks.positive_data_acceptance],
            transport_kwargs={"headers": dict(AUTH)},  # for the checks that send it again
        )
        refused_only_for_what_a_schema_cannot_state(case, response)

    run()


def test_tasks_and_schedules_keep_the_contract_through_their_links(api_schema: Any, running_app: Starlette) -> None:
    """Stateful: a task (or schedule) is created, then read, changed, canceled, retried and deleted
    through the links its answer carries, in the orders Hypothesis tries."""
    machine = api_schema.as_state_machine()

    class Checked(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            # Each run from an empty store: what a step may do then depends on the run alone, as
            # Hypothesis needs when it replays one (it refuses runs that change under it).
            running_app.state.redis.flushdb()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": AUTH}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response,
                headers=AUTH,
                excluded_checks=[schemathesis.checks.positive_data_acceptance],
                transport_kwargs={"headers": dict(AUTH)},  # for the checks that send it again
            )
            refused_only_for_what_a_schema_cannot_state(case, response)

    Checked.run(
        settings=hypothesis_settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
