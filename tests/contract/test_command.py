"""`reco-harness contract`: `st run` against a live server, reports, verdict and exit codes."""

from __future__ import annotations

import dataclasses
import json
import threading
import xml.etree.ElementTree as ET  # noqa: S405 - parses the run's own junit.xml
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from harness.cli import main
from harness.contract.allowlist import load
from harness.contract.config import API_KEY_ENV, PEER_API_KEY_ENV
from harness.contract.fixtures import contract_settings
from harness.contract.links import declared
from harness.contract.paths import ALLOWLIST_PATH
from harness.contract.runner import ContractRun, execute
from harness.contract.summary import check_counts
from harness.guardrails import check_dir, parse_rules
from harness.pytest_plugins.gunicorn import GunicornServer
from harness.pytest_plugins.service import API_KEY, OTHER_API_KEY
from service.api.common import client_id
from service.app import create_app
from service.problems import ApiProblem

BUDGET = ["--max-examples", "5", "--timeout", "150"]
SHORT_BUDGET = ["--max-examples", "2", "--timeout", "150"]
PEER = ["--peer-api-key", OTHER_API_KEY]  # the second API client of every served app
EVENT_READ = "GET /v1/events/{event_id}"


@pytest.fixture(scope="module")
def gunicorn_url(contract_database_url) -> Iterator[str]:
    """The API under gunicorn (2 workers) on loopback, against the module's database."""
    server = GunicornServer(
        {
            "RECO_ENV": "test",
            "RECO_DATABASE_URL": contract_database_url,
            "RECO_API_KEYS": f"dev:{API_KEY},other:{OTHER_API_KEY}",
            "RECO_LOG_LEVEL": "WARNING",
        },
        workers=2,
    )
    try:
        yield server.url
    finally:
        server.stop()


def _serve(app) -> tuple[str, Callable]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=10)

    return f"http://127.0.0.1:{server.server_port}", stop


@pytest.fixture
def served_app(contract_database_url):
    """Serve a fresh app (which a test may break first) from a thread on loopback."""
    started = []

    def serve(change=None, **settings) -> str:
        app = create_app(dataclasses.replace(contract_settings(contract_database_url), **settings))
        if change:
            change(app)
        url, stop = _serve(app)
        started.append((app, stop))
        return url

    yield serve
    for app, stop in started:
        stop()
        app.extensions["reco"].db.pool.close()


def _summary(out: Path) -> dict:
    return json.loads((out / "contract.json").read_text())


def _contract(url: str, out: Path, capsys, *args: str) -> tuple[int, str, dict]:
    """Run the command against ``url`` into ``out``: exit code, what it printed, contract.json."""
    code = main(["contract", "--url", url, "--out", str(out), *args])
    return code, capsys.readouterr().out, _summary(out)


def _failed_cases(out: Path) -> dict[str, str | None]:
    """Each junit.xml test case that failed or errored: its name and message."""
    root = ET.parse(out / "junit.xml").getroot()  # noqa: S314 - the run's own report
    return {
        case.get("name", "?"): outcome.get("message")
        for case in root.iter("testcase")
        for outcome in [*case.findall("failure"), *case.findall("error")]
    }


def test_passes_against_gunicorn_and_writes_reports(gunicorn_url, tmp_path, capsys):
    """Zero failures against the real service; JUnit, NDJSON and contract.json are written."""
    out = tmp_path / "run"
    code, printed, summary = _contract(gunicorn_url, out, capsys, *PEER, *BUDGET)
    assert code == 0, printed[-3000:]
    assert summary["passed"] is True
    assert summary["operations"] == 6 and summary["failures"] == 0
    assert summary["checks"] > 0 and isinstance(summary["allowlisted"], int)
    # Two API clients and a response-time limit below the request timeout: every check judged.
    assert summary["not_run"] == {} and summary["run"]["peer_api_key"] is True
    assert {
        "ignored_auth",
        "negative_data_rejection",
        "unsupported_method",
        "object_level_authorization",
        "max_response_time",
    } <= set(summary["check_names"])
    # Recommendations are shared by design (one tenant per deployment): the allow-list excuses
    # the second client reading them; another client's event was refused, or it had failed.
    assert summary["allowlist"]["matched"].get("recommendations-shared-across-clients", 0) > 0
    # The keys lived in a temporary auth file: no report holds the second one.
    leaked = [f for f in out.rglob("*") if f.is_file() and OTHER_API_KEY.encode() in f.read_bytes()]
    assert not leaked
    assert (out / "junit.xml").read_text().startswith("<?xml")
    assert (out / "events.ndjson").stat().st_size > 0
    # The allow-list is printed with each entry's expiry.
    assert "events-unknown-item" in printed and "expires 20" in printed
    # Valid generated batches mostly reach the 202 path; every declared link is reported.
    assert summary["warnings"].get("validation_mismatch") is None, summary["warnings"]
    assert summary["valid_rates"]["POST /v1/events"]["accepted_share"] >= 0.5, summary
    assert set(summary["links"]) == set(declared())


def test_a_regression_fails_the_command(served_app, tmp_path, capsys):
    """A wrong-typed response field served over HTTP: exit 1, and the finding is reported."""

    def score_as_string(app):
        @app.after_request
        def change(response):
            if response.status_code == 200 and response.is_json:
                body = response.get_json()
                for item in body.get("items", []):
                    item["score"] = str(item["score"])
                response.set_data(json.dumps(body))
            return response

    out = tmp_path / "broken"
    code = main(["contract", "--url", served_app(score_as_string), "--out", str(out), *BUDGET])
    printed = capsys.readouterr().out
    summary = _summary(out)
    assert code == 1, printed[-3000:]
    assert summary["passed"] is False and summary["failures"] >= 1
    assert any(f["title"] == "Response violates schema" for f in summary["failure_details"])
    # Reproduction material is printed: a curl command and the replay id.
    assert "curl -X GET" in printed and "st replay" in printed


def events_readable_by_any_client(app) -> None:
    """Object-level authorization dropped: the other client's event reads are served as dev's."""
    inner = app.wsgi_app  # the key is swapped before the view authenticates it

    def as_dev(environ, start_response):
        read = environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"].startswith("/v1/events/")
        if read and environ.get("HTTP_X_API_KEY") == OTHER_API_KEY:
            environ["HTTP_X_API_KEY"] = API_KEY
        return inner(environ, start_response)

    app.wsgi_app = as_dev


def test_another_clients_event_read_fails_object_level_authorization(served_app, tmp_path, capsys):
    """With a second key, an event read answered for any client fails the run (API1)."""
    url = served_app(events_readable_by_any_client)
    out = tmp_path / "bola"
    code, printed, summary = _contract(url, out, capsys, *PEER, *SHORT_BUDGET)
    assert code == 1, printed[-3000:]
    # The one finding is the bypass, on the event read; the shared recommendations stay excused.
    assert [(f["code"], f["operations"]) for f in summary["failure_details"]] == [
        ("ST402", [EVENT_READ])
    ], summary["failure_details"]
    judged = check_counts(out / "events.ndjson")[EVENT_READ]
    assert judged[("object_level_authorization", "failure")] > 0, judged


def every_item_unknown(app) -> None:
    """Refuse every authenticated batch as unknown-item: a finding only the allow-list excuses."""

    def refuse(**_kwargs):
        client_id()
        raise ApiProblem(422, "unknown-item", "events refer to items not in the catalogue")

    app.view_functions["events.post_events"] = refuse


def test_valid_requests_mostly_refused_fail_the_run(served_app, tmp_path, capsys):
    """Allow-listed refusals of every valid batch: no failure, but validation_mismatch fails it."""
    out = tmp_path / "refused"
    code = main(["contract", "--url", served_app(every_item_unknown), "--out", str(out), *BUDGET])
    printed = capsys.readouterr().out
    summary = _summary(out)
    assert code == 1, printed[-3000:]
    assert summary["failures"] == 0 and summary["allowlisted"] > 0
    assert summary["warnings"]["validation_mismatch"] == ["POST /v1/events"]
    assert summary["valid_rates"]["POST /v1/events"]["accepted_share"] == 0
    assert summary["errors"] == 1  # the fired fail-on warning: a failures/errors gate fails too
    # So does a CI that reads only junit.xml.
    assert _failed_cases(out) == {
        "warning: validation_mismatch": (
            "Schemathesis warning validation_mismatch fired on 1 operation: POST /v1/events"
        )
    }


def test_a_key_the_service_refuses_fails_the_run(gunicorn_url, tmp_path, capsys):
    """Every authenticated operation answering only 401 tested nothing behind the key: exit 1."""
    out = tmp_path / "bad-key"
    code = main(
        ["contract", "--url", gunicorn_url, "--out", str(out), "--api-key", "not-a-key", *BUDGET]
    )
    printed = capsys.readouterr().out
    summary = _summary(out)
    assert code == 1, printed[-3000:]
    assert summary["passed"] is False and summary["failures"] == 0
    assert "POST /v1/events" in summary["warnings"]["missing_auth"]
    assert summary["errors"] == 1  # the fired fail-on warning
    assert "POST /v1/events" in _failed_cases(out)["warning: missing_auth"]
    assert set(summary["links"].values()) == {0}


def test_a_service_answering_mostly_429_fails_the_run(served_app, tmp_path, capsys):
    """Operations answered mostly with 429 were not tested: exit 1, not a pass."""
    url = served_app(rate_limit_per_s=0.2, rate_limit_burst=1.0)
    out = tmp_path / "limited"
    code = main(["contract", "--url", url, "--out", str(out), *BUDGET])
    printed = capsys.readouterr().out
    summary = _summary(out)
    assert code == 1, printed[-3000:]
    assert summary["passed"] is False and summary["failures"] == 0, summary["failure_details"]
    assert "POST /v1/events" in summary["warnings"]["rate_limited"]
    assert summary["errors"] == 1  # the fired fail-on warning
    assert "POST /v1/events" in _failed_cases(out)["warning: rate_limited"]


def _statuses(out: Path) -> set[int]:
    """Every status the run's cases were judged on, from the NDJSON event stream."""
    statuses = set()
    for line in (out / "events.ndjson").read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
        for interaction in (recorder.get("interactions") or {}).values():
            statuses.add((interaction.get("response") or {}).get("status_code"))
    return statuses


def test_rate_limit_paces_the_run_under_the_services_limit(served_app, tmp_path, capsys):
    """--rate-limit is handed to st: under the service's limit no case is judged on a 429."""
    # Unpaced, this budget's ~250 requests get some 100 answers of 429 from this limit. The
    # budget is smaller than the other runs': a paced run lasts its requests over the rate.
    url = served_app(rate_limit_per_s=30.0, rate_limit_burst=30.0)
    out = tmp_path / "paced"
    budget = ["--max-examples", "1", "--timeout", "150"]
    code = main(["contract", "--url", url, "--out", str(out), "--rate-limit", "25/s", *budget])
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    assert 429 not in _statuses(out) and 202 in _statuses(out)
    summary = _summary(out)
    assert summary["run"]["rate_limit"] == "25/s"
    # One API key: object_level_authorization had nothing to judge by, and says what it needs.
    assert "--peer-api-key" in summary["not_run"]["object_level_authorization"]
    assert "object_level_authorization" not in summary["check_names"]
    assert "max_response_time" in summary["check_names"]


def test_a_second_key_the_service_refuses_is_a_harness_error(gunicorn_url, tmp_path, capsys):
    """Every replay with a refused key would be refused: exit 2 before Schemathesis runs."""
    out = tmp_path / "bad-peer"
    code, _printed, summary = _contract(gunicorn_url, out, capsys, "--peer-api-key", "not-a-key")
    assert code == 2 and summary["passed"] is False and summary["errors"] == 1
    assert summary["error"].startswith("the service refuses --peer-api-key (GET /v1/events/")
    assert summary["run"]["st_exit_code"] is None and not (out / "events.ndjson").exists()
    assert _failed_cases(out) == {"contract run": summary["error"]}


def test_the_same_key_as_peer_is_a_usage_error(capsys):
    """One client twice would report it reading its own events: refused before anything runs."""
    assert main(["contract", "--url", "http://127.0.0.1:9", "--peer-api-key", API_KEY]) == 2
    assert "another API client's key" in capsys.readouterr().err


def test_a_malformed_rate_limit_is_a_usage_error(capsys):
    """Refused before any stack starts or Schemathesis runs."""
    assert main(["contract", "--url", "http://127.0.0.1:9", "--rate-limit", "10/sec"]) == 2
    assert "N/UNIT" in capsys.readouterr().err


def test_expired_entries_are_not_honoured(served_app, tmp_path, capsys):
    """Past its expiry an entry stops hiding its finding, and the command says so."""
    # Generated batches are steered into the catalogue, so the refusal is injected.
    url = served_app(every_item_unknown)
    expired = ALLOWLIST_PATH.read_text().replace("expires = 20", "expires = 19")
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text(expired)
    out = tmp_path / "expired"
    code = main(
        ["contract", "--url", url, "--out", str(out), "--allowlist", str(allowlist)] + BUDGET
    )
    captured = capsys.readouterr()
    assert "EXPIRED, not honoured" in captured.out and "expired on 19" in captured.err
    assert code == 1, captured.out[-3000:]
    summary = _summary(out)
    assert summary["allowlisted"] == 0 and summary["failures"] >= 1
    assert set(summary["allowlist"]["expired"]) == {e.id for e in load(ALLOWLIST_PATH).entries}


def test_bad_allowlist_is_a_usage_error(tmp_path, capsys):
    """A malformed allow-list stops the command with exit 2 before anything runs."""
    bad = tmp_path / "allowlist.toml"
    bad.write_text('[[allow]]\nid = "x"\ncheck = "ignored_auth"\n')
    assert main(["contract", "--url", "http://127.0.0.1:9", "--allowlist", str(bad)]) == 2
    assert "missing" in capsys.readouterr().err


def test_unreachable_service_is_a_harness_error(tmp_path):
    """Nothing listening: Schemathesis cannot load the document, which is exit 2, not a pass."""
    run = ContractRun(
        url="http://127.0.0.1:9",
        out_dir=tmp_path / "nothing",
        max_examples=1,
        seed=None,
        api_key=API_KEY,
        allowlist=load(ALLOWLIST_PATH),
        timeout_s=60,
        wait_for_schema_s=1,
    )
    code, summary = execute(run, echo=lambda _line: None)
    assert code == 2 and summary["passed"] is False and "error" in summary
    assert json.loads((run.out_dir / "contract.json").read_text()) == summary
    assert _failed_cases(run.out_dir) == {"contract run": summary["error"]}
    # Judged by a rule that knows only failures and errors, the run still fails.
    rules = parse_rules(
        '[[rule]]\nsource = "contract"\nexpr = ["failures == 0", "errors == 0"]\n', "g"
    )
    assert check_dir(run.out_dir, rules).exit_code != 0


def test_without_a_url_the_stack_it_starts_has_a_second_client(tmp_path, capsys, monkeypatch):
    # Nothing from the environment decides the keys or the servers: the command's own stack.
    for name in (
        "RECO_API_KEYS",
        "RECO_DATABASE_URL",
        "RECO_AMQP_URL",
        API_KEY_ENV,
        PEER_API_KEY_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    canary = "peer-canary-0123456789abcdefghijklmnop"
    monkeypatch.setattr("harness.contract.runner.secrets.token_urlsafe", lambda _n: canary)
    out = tmp_path / "out"
    code = main(["contract", "--out", str(out), "--max-examples", "2", "--timeout", "150"])
    printed = capsys.readouterr().out
    summary = _summary(out)
    assert code == 0, printed
    assert summary["run"]["peer_api_key"] is True
    assert "object_level_authorization" in summary["check_names"], summary["not_run"]
    assert not summary["not_run"]
    # The peer's secret lives in the stack's environment only, never in a report.
    assert not any(f.is_file() and canary.encode() in f.read_bytes() for f in out.rglob("*"))
