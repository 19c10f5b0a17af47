"""Writing a large batch's new jobs: their hashes and dependency sets, packed without redis-py.

A job is a hash of some twenty fields and, with parents, two set additions; a 10,000-task batch
is 30,000 such commands, and redis-py's share of each (checking and packing its arguments,
queueing it, then reading its QUEUED reply) took longer than Redis takes to run them. Most of a
hash's fields are the same for every task of one shape (factory.Shapes.template), and a batch's
tasks share their creation time, so `JobWriter` packs those once per shape and formats each job's
own fields into the rest of its command in one step, then hands the packed commands to the
batch's transaction (bulk.FastTransaction), which sends them as they come. Redis runs exactly
the commands the plain path would, in the same MULTI.
"""

from __future__ import annotations

from typing import Any

from hiredis import pack_command
from rq.job import JobStatus

from app.jobs.factory import OWN_NAMES, PARENTS_NAME, Planned, Shapes
from app.jobs.job import TaskJob


def _around(key: str) -> tuple[bytes, bytes]:
    """A key name made for the id "{}", in two: what comes before the id and what after."""
    before, after = key.split("{}")
    return before.encode(), after.encode()


_JOB_KEY = _around(TaskJob.key_for("{}"))
_DEPENDENTS = _around(TaskJob.dependents_key_for("{}"))
_DEPENDENCIES = _around(TaskJob.dependencies_key_for("{}"))


def _words(*words: Any) -> bytes:
    """Words of a command, packed, without the count of words: to be joined to others."""
    packed: bytes = pack_command(words)
    return packed[packed.index(b"\r\n") + 2 :]


def _word(value: str) -> bytes:
    """One constant word, packed, ready for %-formatting."""
    return _words(value).replace(b"%", b"%%")


_VALUE = b"$%d\r\n%b\r\n"
_HSET_HEAD = b"*%d\r\n" + _word("HSET") + _VALUE
_OWN = b"".join(_word(name) + _VALUE for name in OWN_NAMES)
_OWN_PARENTS = _OWN + _word(PARENTS_NAME) + _VALUE
_HSET_WORDS = 2 + 2 * len(OWN_NAMES)
"""HSET, the key, and the own fields of every job, before the shared ones."""
_SADD = b"*%d\r\n" + _word("SADD") + _VALUE


class JobWriter:
    """Queues new jobs' writes on `target`: packed on a FastTransaction (`packed`), else as plain
    commands (a dry run's stand-in, and the reference the packed commands are tested against)."""

    def __init__(self, target: Any, shapes: Shapes, *, packed: bool) -> None:
        self.target = target
        self.shapes = shapes
        self.packed = packed
        self._shared: dict[int, tuple[bytes, int, list[Any]]] = {}
        """By each template's id: the packed words it and the batch's times make, their count, and
        the template (held, so that no other list can take its id meanwhile)."""

    def add(self, p: Planned, status: JobStatus) -> None:
        """A new DEFERRED or QUEUED job: its hash, and its dependency sets if it has parents."""
        if not self.packed:
            template, own_fields = self.shapes.parts(p, status)
            self.target.execute_command("HSET", TaskJob.key_for(p.task_id), *template, *own_fields)
            if p.spec.dependencies:
                add_dependencies(self.target, p.task_id, [e.parent for e in p.spec.dependencies])
            return
        shapes = self.shapes
        form = shapes.form(p, status)
        shared = self._shared.get(id(form.template))
        if shared is None:
            fields = [*form.template, *shapes.times(status)]
            shared = self._shared[id(form.template)] = (_words(*fields), len(fields), form.template)
        task_id = p.task_id.encode()
        key = _JOB_KEY[0] + task_id + _JOB_KEY[1]
        data, description, spec, fingerprint, *ids = shapes.own(p, status, form)
        description, fingerprint = description.encode(), fingerprint.encode()
        own = (len(data), data, len(description), description, len(spec), spec, len(fingerprint), fingerprint)
        if not ids:
            head = _HSET_HEAD % (_HSET_WORDS + shared[1], len(key), key)
            self.target.queue_packed([b"".join((head, _OWN % own, shared[0]))])
            return
        head = _HSET_HEAD % (_HSET_WORDS + 2 + shared[1], len(key), key)
        commands = [b"".join((head, _OWN_PARENTS % (*own, len(ids[0]), ids[0]), shared[0]))]
        parents = [e.parent.encode() for e in p.spec.dependencies]
        for parent in parents:
            dependents = _DEPENDENTS[0] + parent + _DEPENDENTS[1]
            commands.append(_SADD % (3, len(dependents), dependents) + _VALUE % (len(task_id), task_id))
        dependencies = _DEPENDENCIES[0] + task_id + _DEPENDENCIES[1]
        last = _SADD % (2 + len(parents), len(dependencies), dependencies)
        commands.append(last + b"".join(_VALUE % (len(parent), parent) for parent in parents))
        self.target.queue_packed(commands)


def add_dependencies(target: Any, job_id: str, parents: list[str]) -> None:
    """Queue RQ's dependency sets of a new job on `target`: it among each parent's dependents, and
    its parents as its dependencies."""
    for parent in parents:
        target.execute_command("SADD", TaskJob.dependents_key_for(parent), job_id)
    target.execute_command("SADD", TaskJob.dependencies_key_for(job_id), *parents)
