"""The CLI's shape and exit codes, and doctor's view of a bare machine."""

from __future__ import annotations

from harness.cli import main
from harness.doctor import render, run_checks


def test_help_lists_the_stack_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("up", "down", "status", "doctor", "migrate"):
        assert f"  {name} " in out


def test_usage_errors_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    assert main(["status", "--bogus"]) == 2


def test_doctor_names_missing_pieces_with_the_install_command():
    checks = run_checks(
        which=lambda _name: None,
        pg_bin=lambda: None,
        rabbit_bin=lambda: None,
        has_user=lambda _user: False,
        environ={},
    )
    by_name = {c.name: c for c in checks}
    assert not by_name["postgresql server"].ok
    assert by_name["postgresql server"].fix == "apt-get install -y postgresql"
    assert not by_name["rabbitmq-server"].ok
    assert by_name["rabbitmq-server"].fix == "apt-get install -y rabbitmq-server"
    assert "built-in chaos.faultproxy" in by_name["toxiproxy"].found
    text = render(checks)
    assert "MISSING" in text and "fix: apt-get install -y rabbitmq-server" in text


def test_doctor_honours_external_services():
    checks = run_checks(
        which=lambda name: f"/usr/bin/{name}",
        pg_bin=lambda: None,
        rabbit_bin=lambda: None,
        environ={
            "RECO_DATABASE_URL": "postgresql://x",
            "RECO_AMQP_URL": "amqp://y",
            "TOXIPROXY_URL": "http://127.0.0.1:8474",
        },
    )
    assert all(c.ok for c in checks if c.required)
    assert any("real server: http://127.0.0.1:8474" in c.found for c in checks)


def test_sigterm_runs_the_commands_cleanup_and_exits_2(capsys):
    import os
    import signal

    import click

    from harness.cli import cli

    cleaned = []

    @click.command("sigterm-probe")
    def probe() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises as this call returns
            return 0
        finally:
            cleaned.append(True)

    cli.add_command(probe)
    try:
        before = signal.getsignal(signal.SIGTERM)
        assert main(["sigterm-probe"]) == 2
        assert signal.getsignal(signal.SIGTERM) is before  # restored afterwards
    finally:
        cli.commands.pop("sigterm-probe", None)
    assert cleaned == [True]
    assert "aborted" in capsys.readouterr().err
