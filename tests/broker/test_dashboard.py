"""deploy/grafana's dashboard names only metrics a real running broker exports.

Every PromQL expression is parsed (promql-parser, the Prometheus grammar) and each metric
it selects is looked up in `/metrics` of a broker process (`python -m broker.serve`)
behind `MISBROKER_METRICS_TOKEN`, after an upload and a refused read made the counters move.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.mis.synthetic import SyntheticMis
from broker.demo import upload_full
from broker.resources import Resources
from tests.agents.agent_broker import ROOT, LiveBroker, add_school, live_broker
from tests.support.partners import exampro_credentials

pytestmark = pytest.mark.slow

DASHBOARD = ROOT / "deploy" / "grafana" / "misbroker.json"
TOKEN = "metrics-bearer-token-for-the-test"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = []
    for panel in dashboard["panels"]:
        found += [t["expr"] for t in panel.get("targets", [])]
        found += expressions({"panels": panel.get("panels", [])})
    return found


def selected_metrics(node: Any) -> set[str]:
    """Every metric name a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        assert node.name, "a selector without a metric name"
        return {node.name}
    children: list[Any] = []
    if isinstance(node, promql_parser.MatrixSelector):
        children = [node.vector_selector]
    elif isinstance(node, promql_parser.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif isinstance(node, promql_parser.AggregateExpr):
        children = [node.expr, node.param]
    elif isinstance(node, promql_parser.Call):
        children = list(node.args)
    elif isinstance(
        node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
    ):
        children = [node.expr]
    names: set[str] = set()
    for child in children:
        if child is not None:
            names |= selected_metrics(child)
    return names


def exported(text: str) -> dict[str, list[Any]]:
    """Every series name the exposition offers (a counter's `_total`, a histogram's
    `_bucket`...), with its samples; a labelled metric nobody has used yet has none."""
    names: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        names.setdefault(family.name, [])
        for suffix in _SUFFIXES.get(family.type, ()):
            names.setdefault(family.name + suffix, [])
        for sample in family.samples:
            names.setdefault(sample.name, []).append(sample)
    return names


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("metrics-broker")
    with live_broker(
        data_dir, redis_url, MISBROKER_METRICS_TOKEN=TOKEN, MISBROKER_LOG_LEVEL="WARNING"
    ) as running:
        yield running


def test_the_dashboard_parses_and_names_only_exported_metrics(
    broker: LiveBroker, tmp_path: Path
) -> None:
    school_id, agent_key = add_school(broker.data_dir, broker.redis_url, "Dash Academy", "3830003")
    resources = Resources.build(broker.settings())
    try:
        client_id, secret = exampro_credentials(resources, datetime.now(UTC))
    finally:
        resources.close()
    with httpx.Client(base_url=broker.url, timeout=60) as client:
        mis = SyntheticMis(seed=3, pupils=5, phase="primary", day=date(2025, 11, 19))
        records = list(mis.extract("students.basic"))
        upload_full(client, agent_key, "students.basic", records, datetime.now(UTC))
        token = client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        ).json()["access_token"]
        refused = client.get(
            f"/v1/schools/{school_id}/data/students.basic",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert refused.status_code == 403, refused.text  # no consent: a denied decision
        assert client.get("/metrics").status_code == 404  # the token is required
        scrape = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scrape.status_code == 200
    series = exported(scrape.text)

    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = expressions(dashboard)
    assert len(exprs) >= 12
    named: set[str] = set()
    for expr in exprs:
        named |= selected_metrics(promql_parser.parse(expr))
    assert named, exprs
    assert sorted(named - series.keys()) == []
    # The list: reads, decisions, uploads, queue depth, webhook failures, cache tiers.
    for wanted in (
        "misbroker_partner_reads_total",
        "misbroker_consent_decisions_total",
        "misbroker_agent_uploads_total",
        "misbroker_queue_depth",
        "misbroker_webhook_deliveries_failing",
        "misbroker_cache_areas",
    ):
        assert wanted in named, wanted

    # The counters count what just happened, and the deployment gauges read real state.
    def value(name: str, **labels: str) -> float:
        return sum(
            float(s.value)
            for s in series[name]
            if all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert value("misbroker_agent_uploads_total", outcome="applied") >= 1
    assert value("misbroker_agent_upload_records_total") >= 1
    assert value("misbroker_consent_decisions_total", result="denied") >= 1
    assert value("misbroker_cache_areas", tier="warm") >= 1
    assert value("misbroker_queue_depth") >= 0  # reachable (-1 when it is not)
    assert value("misbroker_webhook_deliveries_failing") == 0
