"""The Grafana dashboard and the alert rules: only metrics the service exposes, and the alerts the issue asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from flask import Flask

from app import metrics
from tests.metrics.scrapes import samples

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/batchq.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
_NAME = re.compile(r"\bbatchq_[a-z_]+")


def exposed(app: Flask) -> set[str]:
    """Every sample name /metrics can show: the gauges as scraped, the counters and histograms as defined."""
    names = {name for name, _ in samples(app.test_client().get("/metrics").text)}
    names.add("batchq_beat_last_seen_seconds")  # present once a beat has recorded a heartbeat
    for metric in (
        metrics.ITEMS,
        metrics.ITEM_DURATION,
        metrics.HANDOFF,
        metrics.TIME_QUEUED,
        metrics.REPAIRS,
        metrics.HTTP_REQUESTS,
        metrics.HTTP_DURATION,
    ):
        for family in metric.describe():
            names |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    return names


def test_dashboard_and_alerts_name_only_exposed_metrics(app: Flask, clean: None) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    used = {name for panel in panels for target in panel["targets"] for name in _NAME.findall(target["expr"])}
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    used |= {name for rule in rules for name in _NAME.findall(rule["expr"])}
    assert used, "the parser found no metric"
    assert used - exposed(app) == set()


def test_alerts_cover_workers_a_stuck_queue_repairs_and_the_handoff() -> None:
    rules = {rule["alert"]: rule for rule in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]}
    assert {"BatchqNoWorker", "BatchqQueueNotMoving", "BatchqRepairsClimbing", "BatchqSlowHandoff"} <= set(rules)
    assert rules["BatchqNoWorker"]["for"] == "1m"
    assert (
        rules["BatchqQueueNotMoving"]["for"] == "10m" and "batchq_queue_paused" in rules["BatchqQueueNotMoving"]["expr"]
    )
    assert "0.99" in rules["BatchqSlowHandoff"]["expr"] and "> 1" in rules["BatchqSlowHandoff"]["expr"]
