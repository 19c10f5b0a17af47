"""A dependency graph laid out in layers, for the console to draw as SVG on the server.

Each task goes in the layer after its deepest parent (the longest path from a root), and each
layer is ordered by the mean place of its parents (one barycentre pass), which undoes most
crossings of the DAGs people submit. No script lays anything out in the browser.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NODE_W, NODE_H = 180, 40
GAP_X, GAP_Y = 28, 48
MARGIN = 8


@dataclass(frozen=True)
class Node:
    id: str
    status: str
    layer: int
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    parent: Node
    child: Node


@dataclass(frozen=True)
class Drawing:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layered(statuses: dict[str, str], edges: Iterable[tuple[str, str]]) -> Drawing:
    """Lay out the tasks of `statuses` (id -> status) with `edges` (parent, child) between them;
    edges to tasks not in `statuses` are left out."""
    parents: dict[str, list[str]] = {task_id: [] for task_id in statuses}
    for parent, child in edges:
        if parent in statuses and child in statuses and parent not in parents[child]:
            parents[child].append(parent)
    depth: dict[str, int] = {}

    def depth_of(task_id: str, seen: frozenset[str] = frozenset()) -> int:
        if task_id not in depth:
            ups = [p for p in parents[task_id] if p not in seen]  # a cycle cannot be stored; still, never loop
            depth[task_id] = 1 + max((depth_of(p, seen | {task_id}) for p in ups), default=-1)
        return depth[task_id]

    layers: list[list[str]] = []
    for task_id in sorted(statuses):
        d = depth_of(task_id)
        while len(layers) <= d:
            layers.append([])
        layers[d].append(task_id)
    place: dict[str, int] = {}
    for row in layers:
        row.sort(key=lambda t: (sum(place.get(p, 0) for p in parents[t]) / max(len(parents[t]), 1), t))
        place.update((t, n) for n, t in enumerate(row))
    widest = max((len(row) for row in layers), default=0)
    nodes: dict[str, Node] = {}
    for d, row in enumerate(layers):
        offset = (widest - len(row)) * (NODE_W + GAP_X) // 2
        nodes.update(
            (t, Node(t, statuses[t], d, MARGIN + offset + n * (NODE_W + GAP_X), MARGIN + d * (NODE_H + GAP_Y)))
            for n, t in enumerate(row)
        )
    drawn = [Edge(nodes[p], nodes[c]) for c, ps in parents.items() for p in ps]
    width = 2 * MARGIN + widest * NODE_W + max(widest - 1, 0) * GAP_X
    height = 2 * MARGIN + len(layers) * NODE_H + max(len(layers) - 1, 0) * GAP_Y
    return Drawing(list(nodes.values()), drawn, width, height)
