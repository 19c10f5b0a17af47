from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RQFLOW_API_KEYS", "k1, k2")
    monkeypatch.setenv("RQFLOW_TASK_MODULES", "a.b,c")
    monkeypatch.setenv("RQFLOW_TYPE_LIMITS", '{"data_processing": {"concurrency": 2, "max_attempts": 5}}')
    monkeypatch.setenv("RQFLOW_WORKERS", "4")
    settings = Settings()
    assert settings.api_keys == ["k1", "k2"]
    assert settings.task_modules == ["a.b", "c"]
    assert settings.type_limits["data_processing"].concurrency == 2
    assert settings.workers == 4


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RQFLOW_REDIS_URL", "RQFLOW_HOST", "RQFLOW_PORT", "RQFLOW_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 2)
    assert settings.effective_redis_url == "redis://127.0.0.1:6399/0"
    assert settings.max_body_bytes == 1_048_576
    assert settings.result_ttl_s == 604_800


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.org", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert Settings(host=host).binds_loopback_only is loopback


def test_bad_limits_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RQFLOW_TYPE_LIMITS", '{"data_processing": {"concurrency": 0}}')
    with pytest.raises(ValidationError):
        Settings()


def test_a_log_level_is_read_in_any_case_and_a_wrong_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RQFLOW_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.setenv("RQFLOW_LOG_LEVEL", "loud")
    with pytest.raises(ValidationError, match="log_level"):
        Settings()
