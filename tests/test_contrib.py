"""The files in ``contrib/``: Prometheus alert rules and the Grafana dashboard.

Both may name only the metrics the exporter serves (docs/prometheus.md), and every query
in them must be valid PromQL.  ``promtool`` (Debian's ``prometheus`` package) checks the
rules, runs their unit tests (``contrib/prometheus/alerts_test.yml``) and parses the
dashboard's queries; where it is absent those tests are skipped, saying how to install
it (``.ci/run`` does, so CI runs them).
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

from milonga.monitor.metrics import FAMILIES

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
ALERTS = CONTRIB / "prometheus" / "alerts.yml"
ALERTS_TEST = CONTRIB / "prometheus" / "alerts_test.yml"
DASHBOARD = CONTRIB / "grafana" / "event-system.json"
ALERT_COUNT = 8
"""The rules in alerts.yml: the patterns of these tests must find every one."""
PROMTOOL_SECONDS = 120.0  # a safety net only: promtool ends by itself in well under 1 s

METRICS = frozenset(
    f"{family.name}{suffix}"
    for family in FAMILIES
    for suffix in (("_bucket", "_sum", "_count") if family.kind == "histogram" else ("",))
)
"""Every series name the exporter serves (`milonga.monitor.metrics.FAMILIES`)."""
PROMETHEUS_SERIES = frozenset({"up"})
"""Series Prometheus itself keeps for each target, which alerts may use too."""

PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
)
"""Identifiers in a PromQL expression that are neither metric nor label names."""

_REMOVED = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # string literals
    r"|\{[^}]*\}"  # label matchers
    r"|\[[^\]]*\]"  # range and subquery selectors
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|\$\{?\w+\}?"  # Grafana variables
)
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?")

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: install Debian's Prometheus with "
    "`apt-get install -y prometheus` (.ci/run does) to check the contrib/ queries",
)

GRAFANA_VARIABLES = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
GRAFANA_INTERVALS = frozenset({"__rate_interval", "__interval", "__range"})


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: its identifiers once strings, label matchers,
    ranges, label lists and Grafana variables are taken out, less function calls and
    PromQL keywords."""
    bare = _REMOVED.sub(" ", expr)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(bare)
        if match.group(2) is None and match.group(1).lower() not in PROMQL_WORDS
    }


def alert_exprs() -> list[str]:
    """The ``expr`` of every rule in alerts.yml, each written on one line."""
    exprs = re.findall(r"^\s*expr:\s*(.+?)\s*$", ALERTS.read_text(), flags=re.MULTILINE)
    assert exprs, f"no `expr:` line in {ALERTS}"
    assert not [e for e in exprs if e in ("|", ">", "|-", ">-")], (
        "write each alert expression on its `expr:` line so that this test reads it"
    )
    return exprs


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of ``board``, those inside rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in panels(dashboard()) for target in panel["targets"]]


def substituted(expr: str) -> str:
    """``expr`` with Grafana's variables replaced as Grafana would: intervals by ``5m``,
    the others (``$server``, a regular expression of its values) by ``.*``."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return "5m" if name in GRAFANA_INTERVALS else ".*"

    return GRAFANA_VARIABLES.sub(value, expr)


def promtool(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_SECONDS,
        check=False,
    )


def test_metric_names_finds_selected_metrics_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, server) (rate(a_bucket{server=~"$server",'
        'kind="x_y"}[$__rate_interval]))) - on (stream) group_right b_total > bool 0 '
        "or time() - c_seconds offset 5m"
    )

    assert metric_names(expr) == {"a_bucket", "b_total", "c_seconds"}


def test_alerts_name_only_exported_metrics() -> None:
    for expr in alert_exprs():
        names = metric_names(expr)
        assert names, f"no metric found in alert expression {expr!r}"
        known = METRICS | PROMETHEUS_SERIES
        assert names <= known, f"{expr!r} uses {sorted(names - known)}, not exported"


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", ALERTS.name, cwd=ALERTS.parent)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {ALERT_COUNT} rules found" in result.stdout


@needs_promtool
def test_each_alert_fires_when_it_should_and_not_on_healthy_series() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = set(re.findall(r"^\s*- alert:\s*(\w+)", ALERTS.read_text(), flags=re.MULTILINE))
    tested = ALERTS_TEST.read_text()

    assert len(alerts) == ALERT_COUNT
    for alert in alerts:
        firing = re.search(rf"alertname: {alert}\n\s*exp_alerts:\n\s*- exp_labels:", tested)
        quiet = re.search(rf"alertname: {alert}\n\s*exp_alerts: \[\]", tested)
        assert firing, f"{ALERTS_TEST.name} must show {alert} firing"
        assert quiet, f"{ALERTS_TEST.name} must show {alert} quiet"


def test_every_alert_has_severity_summary_and_description() -> None:
    text = ALERTS.read_text()
    rules = re.split(r"^\s*- alert:", text, flags=re.MULTILINE)[1:]

    assert len(rules) == ALERT_COUNT
    for rule in rules:
        assert re.search(r"severity: (critical|warning)\n", rule), rule
        assert "summary:" in rule, rule
        assert "description:" in rule, rule
        assert re.search(r"docs/(findings|prometheus)\.md", rule), rule


def test_dashboard_has_datasource_and_server_variables() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}

    assert board["schemaVersion"] >= 36
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    server = variables["server"]
    assert server["query"]["query"] == "label_values(tango_server_up, server)"
    assert server["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert len({panel["id"] for panel in panels(board)}) == len(board["panels"])


def test_every_panel_queries_only_exported_metrics() -> None:
    board = dashboard()
    seen: set[str] = set()
    for panel in panels(board):
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            assert names <= METRICS, (
                f"panel {panel['title']!r} uses {sorted(names - METRICS)}, not exported"
            )
            seen |= names
    assert {"tango_server_up", "milonga_finding", "tango_event_pushed_total"} <= seen


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = [substituted(expr) for expr in dashboard_exprs()]
    assert not [expr for expr in exprs if "$" in expr], exprs
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expr}
                    for index, expr in enumerate(exprs)
                ],
            }
        ]
    }
    # JSON is YAML: promtool reads the file as it is.
    (tmp_path / "dashboard.yml").write_text(json.dumps(rules))

    result = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@needs_promtool
def test_promtool_check_rejects_an_invalid_query(tmp_path: Path) -> None:
    """The check above would pass vacuously if promtool did not parse the queries."""
    rules = {"groups": [{"name": "bad", "rules": [{"record": "bad:q", "expr": "rate(x[5m]"}]}]}
    (tmp_path / "bad.yml").write_text(json.dumps(rules))

    assert promtool("check", "rules", "bad.yml", cwd=tmp_path).returncode != 0
