"""Stored command lines never carry credentials (spec: no secrets in logs or artefacts)."""

from __future__ import annotations

import json
import sys

from harness import runmeta


def test_credential_options_and_url_passwords_are_replaced() -> None:
    argv = [
        "reco-harness", "load", "run", "--api-key", "k-1", "--api-key=k-2",
        "--locust-arg=--api-key=k-3", "--url", "http://u:k-4@127.0.0.1:8000/",
        "--database-url=postgresql://reco:k-5@127.0.0.1/reco", "--db-password", "k-6",
        "--profile", "steady", "-t", "30s", "--idempotency-keys", "10",
    ]  # fmt: skip
    redacted = runmeta.redact(argv)
    assert not any(f"k-{i}" in arg for arg in redacted for i in range(1, 7)), redacted
    assert redacted[-6:] == ["--profile", "steady", "-t", "30s", "--idempotency-keys", "10"]
    assert "http://u:***@127.0.0.1:8000/" in redacted


def test_a_credential_passed_through_in_two_parts_is_hidden() -> None:
    for argv in (
        ["load", "--locust-arg=--api-key", "--locust-arg=k-1"],
        ["load", "--locust-arg", "--api-key", "--locust-arg", "k-1"],
    ):
        redacted = runmeta.redact(argv)
        assert "k-1" not in " ".join(redacted), redacted
        assert redacted[:-1] == argv[:-1]


def test_run_metadata_stores_the_redacted_command(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["reco-harness", "smoke", "--api-key", "canary-secret"])
    assert "canary-secret" not in json.dumps(runmeta.collect())
