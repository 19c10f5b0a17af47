"""Every status RQ knows maps to a task status."""

from __future__ import annotations

import pytest
from rq.job import JobStatus

from app.jobs.status import task_status
from app.model import TaskStatus


@pytest.mark.parametrize("job_status", list(JobStatus))
def test_every_rq_status_maps_to_a_task_status(job_status: JobStatus) -> None:
    assert isinstance(task_status(job_status), TaskStatus)
