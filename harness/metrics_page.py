"""Read one metric family from a process's Prometheus /metrics page."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def family_value(text: str, family: str, sample: str) -> float | None:
    """Sum the ``sample`` series of ``family`` in a page; None when the page has no such family."""
    for found in text_string_to_metric_families(text):
        if found.name == family:
            return sum(s.value for s in found.samples if s.name == sample)
    return None


def scrape(metrics_url: str, family: str, sample: str, timeout_s: float) -> float | None:
    """``family_value`` of ``metrics_url``/metrics; None when it does not answer in time."""
    try:
        response = requests.get(metrics_url + "/metrics", timeout=timeout_s)
    except requests.RequestException:
        return None
    return family_value(response.text, family, sample) if response.ok else None
