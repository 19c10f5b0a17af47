"""The Grafana dashboard in deploy/ asks only for metrics that /metrics serves."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.support import ROOT

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"


def test_every_panel_queries_a_metric_the_api_serves(client: TestClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    served = {family.name for family in text_string_to_metric_families(client.get("/metrics").text)}
    asked = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\brqflow_[a-z_]+", target["expr"]):
                asked.add(re.sub(r"_(total|bucket|count|sum)$", "", name))
    assert asked and asked <= served, asked - served
    # Every family /metrics serves is on the dashboard somewhere.
    assert served <= asked, served - asked
