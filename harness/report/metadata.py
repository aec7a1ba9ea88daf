"""The run metadata section: what ran, where, with which versions and command line."""

from __future__ import annotations

from typing import Any

from harness.report.html import code, esc, num, pairs, section, table, utc


def _value(value: Any) -> str:
    if isinstance(value, list | dict):
        return code(value)
    return num(value) if isinstance(value, int | float) else esc(value if value else "—")


def metadata_section(
    run: dict | None, journal: dict | None, summary: dict | None, root: str, t0: float | None
) -> str:
    """Run facts from run.json (load runs), journal.json (chaos runs) and summary.json."""
    facts: list[tuple[str, str]] = [("run directory", code(root))]
    if journal:
        load = journal.get("load") or {}
        facts += [
            ("experiment", esc(journal.get("experiment"))),
            ("title", esc(journal.get("title"))),
            ("status", esc(journal.get("status"))),
            ("exit code", _value(journal.get("exit_code"))),
            ("load started", utc(load.get("started"))),
            ("ended", utc(journal.get("ended"))),
            ("load command", code(load.get("argv") or "—")),
        ]
    if run:
        versions = run.get("versions") or {}
        facts += [
            ("command", code(run.get("command") or "—")),
            ("Locust command", code(run.get("locust_command") or "—")),
            ("profile", esc(run.get("profile"))),
            ("target URL", esc(run.get("url"))),
            ("Locust workers", _value(run.get("workers"))),
            ("stack started by the run", _value(run.get("started_stack"))),
            ("git commit", code(run.get("git_commit") or "not recorded")),
            ("started", utc(run.get("start"))),
            ("ended", utc(run.get("end"))),
            ("Locust exit code", _value(run.get("locust_exit_code"))),
        ]
        facts += [
            (f"{name} version" if name != "platform" else "machine", esc(v or "—"))
            for name, v in versions.items()
        ]
    if summary:
        facts += [
            (k.replace("_", " "), _value(summary[k]))
            for k in ("profile", "user_rps", "duration_s", "knee", "aborted")
            if k in summary and not (run and k == "profile")
        ]
    if not run:
        facts.append(
            (
                "git commit, machine, versions",
                '<span class="missing">not recorded (no run.json)</span>',
            )
        )
    body = pairs(facts)
    if journal:
        body += _journal_tables(journal, t0)
    return section("metadata", "Run metadata", body)


def _journal_tables(journal: dict, t0: float | None) -> str:
    def at(t: Any) -> str:
        if isinstance(t, int | float) and t0 is not None:
            return f"{t - t0:+.1f} s"
        return utc(t)

    out = ""
    steady = journal.get("steady_state") or {}
    rows = [
        [
            esc(when),
            esc(p.get("probe")),
            "yes" if p.get("ok") else "<strong>NO</strong>",
            _value(p.get("observed")),
            _value(p.get("tolerance")),
        ]
        for when in ("before", "after")
        for p in steady.get(when) or []
        if isinstance(p, dict)
    ]
    if rows:
        out += table(
            ["When", "Probe", "Held", "Observed", "Tolerance"], rows, caption="Steady-state probes"
        )
    method = [
        [
            esc(m.get("label")),
            code(m.get("fault") or {}),
            at(m.get("start")),
            esc(m.get("error") or "—"),
        ]
        for m in journal.get("method") or []
        if isinstance(m, dict)
    ]
    if method:
        out += table(
            ["Fault", "Action", "Applied at", "Error"],
            method,
            caption="Method (times from the start of the run)",
        )
    rollbacks = [
        [esc(r.get("label")), at(r.get("at")), esc(r.get("status")), _value(r.get("result"))]
        for r in journal.get("rollbacks") or []
        if isinstance(r, dict)
    ]
    if rollbacks:
        out += table(["Fault", "Undone at", "Status", "Result"], rollbacks, caption="Rollbacks")
    return out
