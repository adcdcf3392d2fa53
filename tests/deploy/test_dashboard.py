"""The Grafana dashboard: well formed, provisioned, and querying only what the gateway exports.

Every query in the dashboard and every rule expression names a metric `/metrics` can show
(`exported_metric_names()`), or a recording rule defined in the rules file; every `tenant` and
`tune` label filter uses the dashboard's variables, and every metric carrying those labels is
filtered by them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from gateway.observability.metrics import Metrics, exported_metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tunegate.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "tunegate.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "tunegate.rules.yaml"
DOCS = ROOT / "docs" / "observability.md"

DATASOURCE = "${datasource}"
VARIABLES = {"tenant": "$tenant", "tune": "$tune"}
SUFFIXES = ("", "_total", "_created", "_bucket", "_sum", "_count")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# An identifier not preceded by a word character, `$` (a Grafana variable), `.` or `:`.
_IDENT = re.compile(r"(?<![\w$.:])[A-Za-z_:][\w:]*")
# A metric name and the label matchers that follow it, if any.
_SELECTOR = re.compile(
    r'(?<![\w$.:])(tunegate_\w+)\s*(\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\})?(?=\s*(?:[\[)},\s]|$))'
)
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def promql_names(expr: str) -> set[str]:
    """The metric and recording-rule names an expression reads (label values are skipped).

    Functions (`rate(`), keywords (`by`, `on`), label names and durations never start with
    `tunegate_` or contain a colon, so every identifier that does is a series name.
    """
    bare = _STRING.sub('""', expr)
    return {
        m.group(0)
        for m in _IDENT.finditer(bare)
        if m.group(0).startswith("tunegate_") or ":" in m.group(0)
    }


def selectors(expr: str) -> Iterator[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (operator, value)}) for every `tunegate_` selector in `expr`."""
    for m in _SELECTOR.finditer(expr):
        matchers = {label: (op, value) for label, op, value in _MATCHER.findall(m.group(2) or "")}
        yield m.group(1), matchers


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as fh:
        return json.load(fh)


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels and the panels folded inside collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation query."""
    out = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            out.append(
                (f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
            )
    for ann in dashboard["annotations"]["list"]:
        if "expr" in ann:
            out.append((f"annotation {ann['name']!r}", ann["expr"]))
    return out


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out.append(
                (f"variable {var['name']}", query if isinstance(query, str) else query["query"])
            )
    return out


def metric_labels() -> dict[str, set[str]]:
    """Series name -> label names, for every series the gateway exports."""
    exported = exported_metric_names()
    labels: dict[str, set[str]] = {}
    for wrapper in vars(Metrics()).values():
        if isinstance(wrapper, MetricWrapperBase):
            for suffix in SUFFIXES:
                if wrapper._name + suffix in exported:
                    labels[wrapper._name + suffix] = set(wrapper._labelnames)
    assert set(labels) == exported, "every exported series maps to one metric"
    return labels


def load_rules() -> list[dict[str, Any]]:
    with RULES.open() as fh:
        doc = yaml.safe_load(fh)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


def promtool() -> str:
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if path is None:
        pytest.fail("promtool is missing: `make test` installs it (Debian's prometheus package)")
    return path


# --- The extractor itself ---------------------------------------------------------------------


def test_promql_names_finds_metrics_and_recordings_but_not_label_values() -> None:
    expr = (
        'sum by (tune) (rate(tunegate_a_total{tenant=~"$tenant", x="tunegate_fake"}[$__rate_interval]))'
        " / tunegate:b:rate5m>0 and on (tune) tunegate_c and tunegate_d_bucket[5m:1m]"
        " or label_values(tunegate_e_total, tenant) or (tunegate_f)"
    )
    assert promql_names(expr) == {
        "tunegate_a_total",
        "tunegate:b:rate5m",
        "tunegate_c",
        "tunegate_d_bucket",
        "tunegate_e_total",
        "tunegate_f",
    }
    found = dict(selectors(expr))
    assert found["tunegate_a_total"] == {"tenant": ("=~", "$tenant"), "x": ("=", "tunegate_fake")}
    assert found["tunegate_c"] == {}


# --- Structure ----------------------------------------------------------------------------------


def test_dashboard_is_provisioning_ready() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "tunegate"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None, "a provisioned dashboard carries no database id"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"

    for name in ("tenant", "tune"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == {"type": "prometheus", "uid": DATASOURCE}
        assert var["multi"] is True
        assert var["includeAll"] is True
        assert var["allValue"] == ".*", "All must match the empty tenant of refused requests"
        query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        assert re.fullmatch(rf"label_values\(.+,\s*{name}\)", query), query


def test_panels_have_datasource_ids_and_layout() -> None:
    panels = all_panels(load_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel.get("gridPos")
        assert pos is not None, f"panel {panel['id']} has no gridPos"
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), panel["id"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, (
                    f"panel {panel['id']} overlaps panel {occupied[(x, y)]}"
                )
                occupied[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE
            assert target["expr"].strip()
    for ann in load_dashboard()["annotations"]["list"]:
        if "expr" in ann:
            assert ann["datasource"] == {"type": "prometheus", "uid": DATASOURCE}


def test_dashboard_has_the_expected_sections() -> None:
    titles = " | ".join(p["title"].lower() for p in all_panels(load_dashboard()))
    for words in (
        "requests/s by tenant",
        "requests/s by tune",
        "requests/s by status",
        "error ratio",
        "time to first token",
        "time between tokens",
        "tokens/s",
        "429s by reason",
        "policy denials",
        "safety",
        "adapter loads",
        "adapter load duration",
        "evictions",
        "adapters resident",
        "kv cache",
        "engine ready",
        "audit queue",
        "audit write latency",
        "store fallbacks",
        "rollouts",
        "version",
    ):
        assert words in titles, f"no panel about {words!r}"


# --- Queries --------------------------------------------------------------------------------------


def test_every_dashboard_query_names_an_exported_metric() -> None:
    exported = exported_metric_names()
    allowed = exported | recorded_names()
    dashboard = load_dashboard()
    for where, expr in panel_queries(dashboard) + variable_queries(dashboard):
        names = promql_names(expr)
        assert names, f"{where}: no Tunegate metric in {expr!r}"
        assert names <= allowed, f"{where}: {sorted(names - allowed)} not exported"


def test_every_rule_expression_names_an_exported_metric() -> None:
    exported = exported_metric_names()
    rules = load_rules()
    recorded = recorded_names()
    for name in recorded:
        assert re.fullmatch(r"tunegate(:[a-z0-9_]+){2}", name), f"{name}: level:metric:operation"
    for rule in rules:
        names = promql_names(rule["expr"])
        where = rule.get("record") or rule["alert"]
        metrics = {n for n in names if ":" not in n}
        assert metrics <= exported, f"{where}: {sorted(metrics - exported)} not exported"
        assert names - metrics <= recorded, f"{where}: unknown recording {names - metrics}"
        if "record" in rule:
            assert metrics and not names - metrics, f"{where}: records from exported metrics only"
        # `up` is the one series Prometheus itself writes.
        assert names or rule["expr"].lstrip().startswith("up{"), where


def test_tenant_and_tune_filters_use_the_variables() -> None:
    labels = metric_labels()
    dashboard = load_dashboard()
    for where, expr in panel_queries(dashboard) + variable_queries(dashboard):
        found = list(selectors(expr))
        assert found, f"{where}: no selector in {expr!r}"
        for metric, matchers in found:
            for label, variable in VARIABLES.items():
                if label in matchers:
                    assert matchers[label] == ("=~", variable), (
                        f'{where}: {metric} must filter {label}=~"{variable}", not {matchers[label]}'
                    )
                elif label in labels[metric] and not where.startswith("variable"):
                    pytest.fail(f'{where}: {metric} carries {label}: filter {label}=~"{variable}"')


def test_dashboard_shows_every_metric() -> None:
    used = set().union(*(promql_names(e) for _, e in panel_queries(load_dashboard())))
    for wrapper in vars(Metrics()).values():
        if isinstance(wrapper, MetricWrapperBase):
            series = {wrapper._name + s for s in SUFFIXES}
            assert series & used, f"no panel shows {wrapper._name}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query, with Grafana's variables replaced by plain values."""
    rules = []
    for i, (_, expr) in enumerate(panel_queries(load_dashboard())):
        plain = (
            expr.replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$tenant", ".*")
            .replace("$tune", ".*")
        )
        rules.append({"record": f"dashboard:query_{i}:check", "expr": plain})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- Provisioning -------------------------------------------------------------------------------


def test_grafana_provisioning_files() -> None:
    with DATASOURCES.open() as fh:
        datasources = yaml.safe_load(fh)
    assert datasources["apiVersion"] == 1
    [prometheus] = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["uid"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"

    with PROVIDERS.open() as fh:
        providers = yaml.safe_load(fh)
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == prometheus["uid"]


def test_docs_describe_every_metric() -> None:
    docs = DOCS.read_text()
    for wrapper in vars(Metrics()).values():
        if isinstance(wrapper, MetricWrapperBase):
            assert wrapper._name in docs, f"docs/observability.md does not describe {wrapper._name}"
