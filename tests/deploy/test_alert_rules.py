"""Prometheus: the scrape config and the alert rules pass promtool, and every alert is tested.

`promtool check rules` and `promtool test rules` run the rules and their unit tests; every alert
must fire in those tests and stay quiet in at least one case, and carry `for`, a severity, a
summary, a description and a runbook section in docs/observability.md.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules" / "tunegate.rules.yaml"
RULE_TESTS = PROMETHEUS / "tests" / "tunegate.rules.test.yaml"
DOCS = ROOT / "docs" / "observability.md"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if path is None:
        pytest.fail("promtool is missing: `make test` installs it (Debian's prometheus package)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=300)


def load_yaml(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def alerts() -> list[dict[str, Any]]:
    groups = load_yaml(RULES)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_unit_tests_load_the_rules_file() -> None:
    rule_files = load_yaml(RULE_TESTS)["rule_files"]
    assert [(RULE_TESTS.parent / f).resolve() for f in rule_files] == [RULES.resolve()]


def test_prometheus_config() -> None:
    config = load_yaml(CONFIG)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "tunegate"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    assert [t for c in job["static_configs"] for t in c["targets"]] == ["gateway:8000"]

    done = promtool("check", "config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_loads_the_rules(tmp_path: Path) -> None:
    """The same config, its rule_files pointed at this checkout: promtool checks the rules too."""
    config = load_yaml(CONFIG)
    config["rule_files"] = [str(RULES.parent / "*.yaml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = promtool("check", "config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert RULES.name in done.stdout + done.stderr, "the rules glob matched no file"


def test_every_alert_is_complete() -> None:
    docs = DOCS.read_text()
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert len(names) >= 14
    for rule in alerts():
        name = rule["alert"]
        assert rule.get("for"), f"{name}: no `for`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        assert annotations.get("description"), f"{name}: no description"
        assert annotations.get("runbook") == f"docs/observability.md#{name.lower()}", name
        assert f"\n### {name}\n" in docs, f"docs/observability.md has no runbook for {name}"


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts never fired in the unit tests"
    assert names - quiet == set(), "alerts never checked quiet in the unit tests"
    assert (fires | quiet) <= names, "unit tests name alerts that do not exist"


def test_documented_alerts_exist() -> None:
    names = {rule["alert"] for rule in alerts()}
    documented = {
        line.removeprefix("### ").strip()
        for line in DOCS.read_text().splitlines()
        if line.startswith("### Tunegate")
    }
    assert documented == names
