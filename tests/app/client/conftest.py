from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.settings import Settings
from tests.support import api_process, engine_worker


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    """The Procfile's API with the test task types, and an engine worker running what it queues."""
    url = str(settings.redis_url)
    with api_process(url) as port, engine_worker(url, env={"RQFLOW_CONCURRENCY": "4"}):
        yield f"http://127.0.0.1:{port}"
