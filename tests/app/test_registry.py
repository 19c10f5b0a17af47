from __future__ import annotations

import pytest

from app.errors import UnknownTaskType
from app.registry import load_registry, task_type
from app.settings import TypeLimits


def test_builtin_and_named_modules_are_loaded() -> None:
    registry = load_registry(["tests.handlers"])
    assert {"data_processing", "http_request", "echo", "flaky"} <= set(registry)
    assert registry["flaky"].max_attempts == 4


def test_type_limits_override_decorator_defaults() -> None:
    registry = load_registry([], {"data_processing": TypeLimits(concurrency=2, max_attempts=5, timeout_ms=60_000)})
    dp = registry.get_type("data_processing")
    assert (dp.concurrency, dp.max_attempts, dp.timeout_ms) == (2, 5, 60_000)


def test_limits_for_an_unknown_type_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown task types: nope"):
        load_registry([], {"nope": TypeLimits(concurrency=1)})


def test_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(UnknownTaskType, match="data_processing"):
        load_registry([]).get_type("missing")


def test_a_name_cannot_be_declared_twice() -> None:
    # The built-in types first: run before anything imported them, the lambda below would itself
    # become the declared data_processing, and every later registry in this process would fail.
    load_registry()
    with pytest.raises(ValueError, match="declared twice"):
        task_type("data_processing")(lambda payload, ctx: None)


def test_a_module_that_does_not_exist_fails_loudly() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_registry(["no.such.module"])


def test_a_handler_sees_only_the_settings_its_type_names() -> None:
    from app.settings import Settings

    http = load_registry()["http_request"]
    settings = Settings(api_keys=["secret-key"], http_allowed_hosts=["example.org"])
    seen = http.settings_for_handler(settings)
    assert dict(seen) == {"http_allowed_hosts": ["example.org"]}
    assert load_registry()["data_processing"].settings_for_handler(settings) == {}


@pytest.mark.parametrize(("names", "complaint"), [(["api_keys"], "secret"), (["no_such"], "do not exist")])
def test_a_type_cannot_ask_for_secrets_or_unknown_settings(names: list[str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        task_type("greedy", settings=names)
