"""The HTTP benchmark's report: gated ratios against the observed baseline, plain ones optional."""

from __future__ import annotations

from harness.bench.http import Measurement, _report, worker_env


def _runs(*rps: float) -> list[Measurement]:
    return [Measurement(r, 1.0, 5.0, 0, 0.5, 0.1) for r in rps]


def _raw(plain: bool) -> dict:
    return {
        "hello": {"baseline": _runs(4000, 4000)},
        "R_http": {
            "plain": _runs(2200, 2200, 2200) if plain else [],
            "baseline": _runs(2000, 2000, 2000),
            "service": _runs(1500, 1600),
        },
        "R_write": {
            "plain": _runs(1600, 1600, 1600) if plain else [],
            "baseline": _runs(1500, 1500, 1500),
            "service": _runs(750, 900),
        },
    }


def test_gated_ratios_use_the_observed_baseline_and_plain_ones_are_information():
    report = _report(_raw(plain=True), 0.0, {})
    ratios = report["ratios"]
    assert ratios["R_http"]["median"] == 0.775 and ratios["R_http"]["target"] == 0.75
    assert ratios["R_write"]["median"] == 0.55
    assert ratios["R_http_plain"] == {**ratios["R_http_plain"], "info": True}
    assert ratios["R_http_plain"]["median"] == round(1550 / 2200, 4)
    assert ratios["R_hello"]["median"] == 0.55  # the plain /db over the plain /hello
    assert report["absolute"]["B2_db_plain_rps"] == 2200


def test_without_plain_runs_the_report_has_only_the_gated_ratios():
    report = _report(_raw(plain=False), 0.0, {})
    assert "R_http_plain" not in report["ratios"] and "R_write_plain" not in report["ratios"]
    assert report["ratios"]["R_http"]["median"] == 0.775
    assert report["ratios"]["R_hello"]["median"] == 0.5  # then /db and /hello are observed
    assert "B2_db_plain_rps" not in report["absolute"]


def test_every_app_of_a_run_gets_the_same_worker_settings():
    assert worker_env(None, None) == {}  # the config's own: 4 sync workers
    assert worker_env(None, 2) == {"RECO_GUNICORN_WORKERS": "2"}
    assert worker_env("gthread", None) == {
        "RECO_GUNICORN_WORKER_CLASS": "gthread",
        "RECO_GUNICORN_WORKERS": "2",
        "RECO_GUNICORN_THREADS": "4",
    }
    assert worker_env("gthread", 3)["RECO_GUNICORN_WORKERS"] == "3"  # an explicit count wins
