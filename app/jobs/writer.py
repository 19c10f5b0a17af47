"""Writing a large batch's new jobs: their hashes and dependency sets, packed without redis-py.

A job is a hash of some twenty fields and, with parents, two set additions; a 10,000-task batch
is 30,000 such commands, and redis-py's share of each (checking and packing its arguments,
queueing it, then reading its QUEUED reply) took longer than Redis takes to run it. Most of a
hash's fields are the same for every task of one shape (factory.Shapes), so `JobWriter` packs a
shape's fields once and each job's own fields after them, and hands the packed commands to the
batch's transaction (bulk.FastTransaction), which sends them as they come. Redis runs exactly
the commands the plain path would, in the same MULTI.
"""

from __future__ import annotations

from typing import Any

from hiredis import pack_command

from app.jobs.job import TaskJob


def _packed(*words: Any) -> bytes:
    packed: bytes = pack_command(words)
    return packed


def _words(packed: bytes) -> memoryview:
    """A packed command without its count of words: the words alone, to be joined to others."""
    return memoryview(packed)[packed.index(b"\r\n") + 2 :]


class JobWriter:
    """Queues new jobs' writes on `target`: packed on a FastTransaction (`packed`), else as plain
    commands (a single task's writes, which go into a script of their own; a dry run's stand-in)."""

    def __init__(self, target: Any, *, packed: bool) -> None:
        self.target = target
        self.packed = packed
        self._templates: dict[int, tuple[memoryview, list[Any]]] = {}
        """Each template's packed words by its object's id, with the template (held, so that no
        other list can take its id meanwhile)."""

    def add(self, job_id: str, template: list[Any], own: list[Any], parents: list[str]) -> None:
        """A new job: its hash is `template`'s fields and `own`; `parents` are its dependencies."""
        key = TaskJob.key_for(job_id)
        if not self.packed:
            self.target.execute_command("HSET", key, *template, *own)
            if parents:
                add_dependencies(self.target, job_id, parents)
            return
        known = self._templates.get(id(template))
        if known is None:
            known = self._templates[id(template)] = (_words(pack_command(tuple(template))), template)
        head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + len(template) + len(own))
        commands = [b"".join((head, _words(pack_command((key, *own))), known[0]))]
        if parents:
            commands += [_packed("SADD", TaskJob.dependents_key_for(parent), job_id) for parent in parents]
            commands.append(_packed("SADD", TaskJob.dependencies_key_for(job_id), *parents))
        self.target.queue_packed(commands)


def add_dependencies(target: Any, job_id: str, parents: list[str]) -> None:
    """Queue RQ's dependency sets of a new job on `target`: it among each parent's dependents, and
    its parents as its dependencies."""
    for parent in parents:
        target.execute_command("SADD", TaskJob.dependents_key_for(parent), job_id)
    target.execute_command("SADD", TaskJob.dependencies_key_for(job_id), *parents)
