"""The local RabbitMQ node's scheduler count: half the cores unless configured."""

from __future__ import annotations

import os

import pytest

from harness.stack.procs import StackError
from harness.stack.rabbitmq import SCHEDULERS_ENV, RabbitServer, scheduler_count


def test_half_the_cores_by_default_and_never_zero(monkeypatch):
    monkeypatch.delenv(SCHEDULERS_ENV, raising=False)
    for cores, expected in ((1, 1), (2, 1), (3, 1), (8, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert scheduler_count() == expected


def test_the_environment_sets_it_and_reaches_the_node(monkeypatch, tmp_path):
    monkeypatch.setenv(SCHEDULERS_ENV, "2")
    server = RabbitServer(tmp_path, port=1, dist_port=2, epmd_port=3)
    assert server.env()["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] == "+S 2:2"


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_value_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(SCHEDULERS_ENV, value)
    with pytest.raises(StackError, match=SCHEDULERS_ENV):
        scheduler_count()
