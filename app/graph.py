"""The rules of the dependency graph, apart from any storage: when an edge is met, what a set of
parents decides for their child, and the order (or the cycle) of a DAG.

A parent that COMPLETED meets every edge; one that FAILED meets only edges with `allow_failure`;
one that was CANCELED meets none. A parent that no longer exists expired after it finished, and
meets every edge (RQ treats it the same way). Any other parent has not decided yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.errors import DependencyCycle
from app.model import Edge, ErrorType, TaskStatus


def edge_met(status: TaskStatus | None, allow_failure: bool) -> bool | None:
    """True: this edge lets the child run. False: it never will. None: not yet decided."""
    if status is None or status is TaskStatus.COMPLETED:
        return True
    if status is TaskStatus.FAILED:
        return allow_failure
    if status is TaskStatus.CANCELED:
        return False
    return None


def edges_from_spec(raw: Iterable[object]) -> tuple[Edge, ...]:
    """Edges as stored in a task's spec: `{"id", "allow_failure"}` objects (or bare ids)."""
    edges = []
    for item in raw:
        if isinstance(item, dict):
            edges.append(Edge(parent=str(item["id"]), allow_failure=bool(item.get("allow_failure"))))
        else:
            edges.append(Edge(parent=str(item)))
    return tuple(edges)


@dataclass(frozen=True)
class Verdict:
    blocking: Edge | None = None
    """The edge that will never be met, if one is."""
    blocking_status: TaskStatus | None = None
    open: tuple[str, ...] = ()
    """The parents not decided yet."""

    @property
    def met(self) -> bool | None:
        """True: every edge is met. False: one never will be. None: some are still open."""
        if self.blocking is not None:
            return False
        return None if self.open else True


def judge(edges: Sequence[Edge], statuses: Sequence[TaskStatus | None]) -> Verdict:
    open_parents = []
    for edge, status in zip(edges, statuses, strict=True):
        met = edge_met(status, edge.allow_failure)
        if met is False:
            return Verdict(blocking=edge, blocking_status=status)
        if met is None:
            open_parents.append(edge.parent)
    return Verdict(open=tuple(open_parents))


def dependency_failed_error(parent: str, status: TaskStatus | None) -> dict[str, str]:
    shown = status.value if status else "missing"
    # `dependency` lets a retry of the parent find and re-arm the tasks it took down.
    return {
        "type": ErrorType.DEPENDENCY_FAILED.value,
        "message": f"dependency {parent!r} ended {shown}",
        "dependency": parent,
    }


def topological_order(parents: dict[str, list[str]]) -> list[str]:
    """Ids ordered so that every task comes after its parents (edges to ids not in `parents` are
    ignored), and otherwise in the order of `parents` as far as that allows: a batch's ready
    tasks are queued first sent, first run. Raises DependencyCycle with the ids of one cycle when
    there is one."""
    children: dict[str, list[str]] = {node: [] for node in parents}
    waiting = {node: 0 for node in parents}
    for node, ups in parents.items():
        for up in ups:
            if up in parents:
                children[up].append(node)
                waiting[node] += 1
    ready = deque(node for node, count in waiting.items() if count == 0)
    order = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for child in children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) < len(parents):
        raise DependencyCycle(_a_cycle({n for n, c in waiting.items() if c}, parents))
    return order


def _a_cycle(stuck: set[str], parents: dict[str, list[str]]) -> list[str]:
    # Every stuck node has a stuck parent, so walking up from any of them must revisit a node.
    path: list[str] = []
    seen: dict[str, int] = {}
    node = next(iter(sorted(stuck)))
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(up for up in parents[node] if up in stuck)
    return path[seen[node] :][::-1]
