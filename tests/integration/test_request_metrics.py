"""The request series: labelled by route template, bounded label values, scrapes not counted."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def _samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("flask_http_request_total", "flask_http_request_duration_seconds_count")
    }


def _count(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_each_answer_is_counted_once_under_its_route_and_status(client, auth):
    for _ in range(3):
        assert client.get("/v1/users/u-1/recommendations", headers=auth).status_code == 200
    assert client.get("/v1/users/u-2/recommendations?limit=0", headers=auth).status_code == 400
    assert client.get("/no/such/route").status_code == 404
    samples = _samples(client)
    route = "/v1/users/<user_id>/recommendations"
    duration = "flask_http_request_duration_seconds_count"
    assert _count(samples, duration, method="GET", path=route, status="200") == 3
    assert _count(samples, duration, method="GET", path=route, status="400") == 1
    assert _count(samples, duration, method="GET", path="<unmatched>", status="404") == 1
    assert _count(samples, "flask_http_request_total", method="GET", status="200") == 3


def test_scrapes_are_not_traffic(client):
    _samples(client)
    samples = _samples(client)
    assert not any(dict(labels).get("path") == "/metrics" for _, labels in samples)


def test_an_invented_method_does_not_create_a_series_of_its_own(client):
    for method in ("BREW", "WHEN", "PROPFIND"):
        assert client.open("/healthz", method=method).status_code == 405
    samples = _samples(client)
    methods = {dict(labels)["method"] for _, labels in samples}
    assert methods <= {"GET", "other"}
    assert _count(samples, "flask_http_request_total", method="other", status="405") == 3
