"""Refuse to spread tests over pytest-xdist workers when two of them share a node id."""

from __future__ import annotations

import collections

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Stop the run when a worker collected duplicate node ids."""
    # xdist hands tests to workers by node id: of items sharing one (Schemathesis names every
    # operation of a parametrized test alike), only one would run and the rest would vanish.
    shared = sorted(nodeid for nodeid, count in collections.Counter(ids).items() if count > 1)
    if shared:
        pytest.exit(
            "these tests share a node id, so pytest-xdist would run only one of each: "
            + ", ".join(shared)
            + "; run their folder without -n (RECO_TEST_WORKERS=0)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
