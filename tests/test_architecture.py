"""Imports point one way: app/api, workers and scheduler use the core in app/; the core uses none of
them, and nothing but the API itself imports app/api."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("app", "workers", "scheduler")


def layer(module: str) -> str:
    if module == "app.api" or module.startswith("app.api."):
        return "api"
    return module.split(".")[0]


ALLOWED = {
    "app": {"app"},
    "api": {"app", "api"},
    "workers": {"app", "workers"},
    "scheduler": {"app", "scheduler"},
}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in PACKAGES}


SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = layer(module)
    wrong = sorted(m for m in imported_modules(path) if layer(m) not in ALLOWED[own])
    assert not wrong, f"{module} ({own}) must not import {wrong}"


def test_the_rule_would_catch_a_core_module_importing_a_worker(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from workers.entry import run_task\nimport app.api.main\n")
    assert {layer(m) for m in imported_modules(bad)} - ALLOWED["app"] == {"workers", "api"}
