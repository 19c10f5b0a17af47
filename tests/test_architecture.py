"""The shape of the code, checked on every run:
- imports point one way: app/api, workers and scheduler use the core in app/; the core uses none of
  them, and nothing but the API itself imports app/api; the client (app/client) imports nothing of
  the rest and nothing of the rest imports it, so a client machine needs httpx and typing-extensions alone;
- one package, app/jobs, is all of the core that knows RQ: no other module of app/ imports rq or
  rq_scheduler (workers/ and scheduler/ are RQ's and rq-scheduler's entry points by nature);
- no import cycle anywhere, imports inside functions included.
Each rule is also shown to catch a violation on synthetic files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("app", "workers", "scheduler")
BOUNDARY = "app.jobs"
"""The one package of the core that may import RQ and rq-scheduler."""
RQ = ("rq", "rq_scheduler")


def layer(module: str) -> str:
    if module == "app.api" or module.startswith("app.api."):
        return "api"
    if module == "app.client" or module.startswith("app.client."):
        return "client"
    return module.split(".")[0]


ALLOWED = {
    "client": {"client"},
    "app": {"app"},
    "api": {"app", "api"},
    "workers": {"app", "workers"},
    "scheduler": {"app", "scheduler"},
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module `path` imports, anywhere in it (inside functions too). `from pkg import name`
    counts as importing `pkg.name` when that is a module of `known`, else `pkg`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def sources(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))}


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = sources(root)
    known = set(modules)
    return {m: {i for i in imports(p, known) if i in known and i != m} for m, p in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def rq_imports(root: Path) -> dict[str, list[str]]:
    """Modules of the core outside the boundary that import RQ or rq-scheduler, with what they import."""
    wrong = {}
    for module, path in sources(root).items():
        if layer(module) not in ("app", "api") or module == BOUNDARY or module.startswith(BOUNDARY + "."):
            continue
        found = sorted(i for i in imports(path, set()) if i.split(".")[0] in RQ)
        if found:
            wrong[module] = found
    return wrong


SOURCES = sorted(sources(ROOT).items())


@pytest.mark.parametrize(("module", "path"), SOURCES, ids=[m for m, _ in SOURCES])
def test_imports_point_one_way(module: str, path: Path) -> None:
    own = layer(module)
    wrong = sorted(m for m in graph(ROOT)[module] if layer(m) not in ALLOWED[own])
    assert not wrong, f"{module} ({own}) must not import {wrong}"


def test_only_the_boundary_package_imports_rq() -> None:
    assert rq_imports(ROOT) == {}


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph(ROOT)) == []


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_rules_catch_what_they_are_for(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/api/__init__.py": "",
            "app/api/main.py": "",
            "app/jobs/__init__.py": "",
            "app/jobs/job.py": "from rq.job import Job\n",  # allowed: the boundary
            "app/model.py": "import rq\n",
            "app/tasks.py": "from rq_scheduler import Scheduler\nfrom app import model\n",
            "app/dag.py": "from app.job import x\n",
            "app/job.py": "def later():\n    from app import dag\n",  # a cycle through a function
            "app/bad.py": "from workers.entry import run_task\nimport app.api.main\n",
            "workers/__init__.py": "",
            "workers/entry.py": "import rq\n",  # allowed: RQ's entry point
            "scheduler/__init__.py": "",
        },
    )
    edges = graph(root)
    assert {layer(m) for m in edges["app.bad"]} - ALLOWED["app"] == {"workers", "api"}
    assert rq_imports(root) == {"app.model": ["rq"], "app.tasks": ["rq_scheduler"]}
    assert cycles(edges) == [["app.dag", "app.job"]]
