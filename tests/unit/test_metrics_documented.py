"""Every series the API exports is in the operations guide's metrics table."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from service.metrics import ServiceMetrics

GUIDE = Path(__file__).parents[2] / "docs" / "operations.md"


def _exported(family: Metric) -> str:
    # prometheus_client names a counter's family without the _total its samples carry.
    return family.name + "_total" if family.type == "counter" else family.name


def test_the_operations_guide_lists_every_api_series():
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    names = {_exported(family) for family in registry.collect()}
    text = GUIDE.read_text()
    missing = sorted(name for name in names if f"| `{name}` |" not in text)
    assert len(names) >= 10 and not missing, f"add to docs/operations.md, Metrics (API): {missing}"
    assert "| `reco_service_info` |" in text  # registered by install(), outside ServiceMetrics
