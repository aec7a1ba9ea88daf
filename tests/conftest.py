"""Fixtures live in harness plugin modules; this file only loads them."""

pytest_plugins = [
    "harness.pytest_plugins.folders",
    "harness.pytest_plugins.distribution",
    "harness.pytest_plugins.services",
    "harness.pytest_plugins.service",
    "harness.pytest_plugins.gunicorn",
    "harness.pytest_plugins.stack",
    "harness.pytest_plugins.workers",
    "harness.pytest_plugins.bench_compare",
]
