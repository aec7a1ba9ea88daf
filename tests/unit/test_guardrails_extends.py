"""Guardrail files that extend another: merged settings, replaced rules, errors with file, line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.commands.guardrails import command as guardrails_command
from harness.guardrails import GuardrailError, evaluate, load_rules

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
[settings]
warmup = "3s"
abort_on_fail = false

[slo]
p99_ms = 300

[[rule]]
name = "reads fast"
expr = "p(99) < 200"

[[rule]]
name = "few errors (server)"
source = "server"
expr = "fail_ratio < 0.5%"

[[rule]]
name = "nothing lost"
source = "audit"
expr = "lost_count == 0"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def reads_relaxed(directory: Path) -> Path:
    """A base and a file extending it that replaces its first rule, keeping the name."""
    write(directory, "base.toml", BASE)
    return write(
        directory,
        "child.toml",
        'extends = "base.toml"\n[[rule]]\nreplaces = "reads fast"\nexpr = "p(99) < 500"\n',
    )


def failure(path: Path) -> GuardrailError:
    with pytest.raises(GuardrailError) as info:
        load_rules(path)
    return info.value


def test_rules_are_inherited_in_order_replaced_in_place_and_added_at_the_end(
    tmp_path: Path,
) -> None:
    base = write(tmp_path, "base.toml", BASE)
    child = write(
        tmp_path / "experiments",
        "stall.toml",
        '# comment\nextends = "../base.toml"\n\n[settings]\nwarmup = "10s"\n\n'
        "[slo]\nerror_ratio = 0.01\n\n"
        '[[rule]]\nreplaces = "few errors (server)"\nname = "504s allowed (server)"\n'
        'source = "server"\nexpr = "fail_ratio < 2%"\n\n'
        '[[rule]]\nname = "drained"\nsource = "audit"\ninvariant = false\nexpr = "drained == 1"\n',
    )
    ruleset = load_rules(child)
    assert [r.name for r in ruleset.rules] == [
        "reads fast",
        "504s allowed (server)",
        "nothing lost",
        "drained",
    ]
    reads, server, audit, drained = ruleset.rules
    # Inherited rules say where they are written; the file's own rules do not.
    assert (reads.file, reads.line) == (str(base), 8)
    assert (audit.file, audit.line, audit.invariant) == (str(base), 17, True)
    assert (server.file, server.line) == (None, 10)
    assert server.exprs[0].text == "fail_ratio < 2%"
    assert (drained.file, drained.invariant) == (None, False)
    # Settings and slo merge key by key: the extending file wins where both say something.
    assert ruleset.settings.warmup_s == 10.0
    assert (ruleset.slo.p99_ms, ruleset.slo.error_ratio) == (300.0, 0.01)
    assert ruleset.path == str(child)
    assert ruleset.extends == (str(base),)  # normalised: no "experiments/.."


def test_a_replacement_without_a_name_keeps_the_inherited_name(tmp_path: Path) -> None:
    child = reads_relaxed(tmp_path)
    reads = load_rules(child).rules[0]
    assert (reads.name, reads.exprs[0].number, reads.file) == ("reads fast", 500.0, None)


def test_a_chain_of_files_and_a_tolerated_ratio_from_a_base(tmp_path: Path) -> None:
    grand_text = BASE.replace("[settings]\n", "[settings]\ntolerated_fail_ratio = 0.01\n")
    grand = write(tmp_path, "grand.toml", grand_text)
    write(
        tmp_path, "parent.toml", 'extends = "grand.toml"\n[[rule]]\nname = "p"\nexpr = "rps > 1"\n'
    )
    child = write(
        tmp_path,
        "child.toml",
        'extends = "parent.toml"\n[[rule]]\nreplaces = "p"\nexpr = "rps > 2"\n',
    )
    ruleset = load_rules(child)
    names = [r.name for r in ruleset.rules]
    assert names == ["tolerated failure ratio", "reads fast", "few errors (server)",
                     "nothing lost", "p"]  # fmt: skip
    tolerated = ruleset.rules[0]
    assert (tolerated.file, tolerated.line) == (str(grand), 2)
    assert ruleset.rules[-1].exprs[0].number == 2.0
    assert [Path(p).name for p in ruleset.extends] == ["parent.toml", "grand.toml"]


@pytest.mark.parametrize(
    ("child", "line", "reason"),
    [
        (
            'extends = "base.toml"\n[[rule]]\nname = "reads fast"\nexpr = "p(99) < 9"\n',
            2,
            "'reads fast' is inherited through extends: add replaces = 'reads fast'",
        ),
        (
            'extends = "base.toml"\n[[rule]]\nreplaces = "reads slow"\nexpr = "p(99) < 9"\n',
            3,
            "rule replaces 'reads slow': names no inherited rule",
        ),
        (
            'extends = "base.toml"\n[[rule]]\nreplaces = "reads fast"\nexpr = "p(99) < 9"\n'
            '[[rule]]\nreplaces = "reads fast"\nexpr = "p(99) < 8"\n',
            6,
            "rule replaces 'reads fast': is replaced twice",
        ),
        ('extends = "nowhere.toml"\n', 1, "extends 'nowhere.toml': cannot read"),
        ("extends = 3\n", 1, "extends must be the path of a guardrail file"),
        ('extends = "child.toml"\n', 1, "makes a cycle: child.toml -> child.toml"),
        (
            '[[rule]]\nreplaces = "reads fast"\nexpr = "p(99) < 9"\n',
            2,
            "only a file with 'extends' inherits rules",
        ),
        ('extends = "base.toml"\n[[rule]]\nreplaces = ""\nexpr = "p(99) < 9"\n', 3, "replaces"),
    ],
)
def test_mistakes_name_the_extending_file_and_line(
    tmp_path: Path, child: str, line: int, reason: str
) -> None:
    write(tmp_path, "base.toml", BASE)
    path = write(tmp_path, "child.toml", child)
    err = failure(path)
    assert (err.path, err.line) == (str(path), line), str(err)
    assert reason in err.reason, str(err)


def test_a_cycle_through_two_files_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'extends = "b.toml"\n')
    b = write(tmp_path, "b.toml", '# b\nextends = "a.toml"\n')
    err = failure(tmp_path / "a.toml")
    assert (err.path, err.line) == (str(b), 2)
    assert "cycle: a.toml -> b.toml -> a.toml" in err.reason


def test_a_mistake_in_the_base_names_the_base(tmp_path: Path) -> None:
    base = write(tmp_path, "base.toml", BASE.replace('expr = "lost_count == 0"', 'expr = "lost"'))
    err = failure(write(tmp_path, "child.toml", 'extends = "base.toml"\n'))
    assert (err.path, err.line) == (str(base), 20)
    bad_setting = write(tmp_path, "b2.toml", '[settings]\nwarmup = "soon"\n')
    err = failure(write(tmp_path, "c2.toml", 'extends = "b2.toml"\n'))
    assert (err.path, err.line) == (str(bad_setting), 2)


def test_results_of_inherited_rules_carry_their_file(tmp_path: Path) -> None:
    base = write(tmp_path, "base.toml", BASE)
    child = write(tmp_path, "child.toml", 'extends = "base.toml"\n')
    verdict = evaluate(load_rules(child), {"audit": {"lost_count": 0}})
    (lost,) = [r for r in verdict.results if r.source == "audit"]
    assert (lost.status, lost.file, lost.line) == ("pass", str(base), 17)


def test_validate_lists_inherited_rules_with_their_file(tmp_path: Path) -> None:
    child = reads_relaxed(tmp_path)
    result = CliRunner().invoke(guardrails_command, ["validate", str(child)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["2", "locust/global/run:", "p(99)", "<", "500"]
    assert "(base.toml)" in lines[1] and "server/global/run" in lines[1]
    assert lines[-1].endswith("3 rules OK, extending " + str(tmp_path / "base.toml"))


def test_the_commit_stall_guardrails_are_the_chaos_ones_with_one_rule_changed() -> None:
    base = load_rules(ROOT / "chaos" / "guardrails.toml")
    stall = load_rules(ROOT / "chaos" / "guardrails-commit-stall.toml")
    assert stall.extends == (str(ROOT / "chaos" / "guardrails.toml"),)
    assert stall.settings == base.settings and stall.slo == base.slo
    changed = [
        (old, new)
        for old, new in zip(base.rules, stall.rules, strict=True)
        if (old.name, old.exprs) != (new.name, new.exprs)
    ]
    assert len(changed) == 1
    old, new = changed[0]
    assert (old.source, new.source, new.file) == ("server", "server", None)
    assert (old.exprs[0].text, new.exprs[0].text) == ("fail_ratio < 0.5%", "fail_ratio < 2%")
    assert all(r.file == str(ROOT / "chaos" / "guardrails.toml") for r in stall.rules if r != new)
