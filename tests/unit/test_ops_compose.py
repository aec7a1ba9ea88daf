"""docker-compose.yml parses and keeps its promises: hardened containers, required secrets,
health checks, a migration job before the apps, and stop grace periods above gunicorn's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APPS = ("api", "relay", "consumer", "migrate")
LONG_RUNNING = ("postgres", "rabbitmq", "toxiproxy", "api", "relay", "consumer")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def _graceful_timeout() -> int:
    text = (ROOT / "service" / "gunicorn.conf.py").read_text()
    return int(re.search(r"^graceful_timeout = (\d+)", text, re.M).group(1))


def test_every_component_is_there(services):
    assert set(services) >= {"postgres", "rabbitmq", "toxiproxy", *APPS}
    assert services["relay"]["command"] == ["python", "-m", "workers.relay"]
    assert services["consumer"]["command"] == ["python", "-m", "workers.consumer"]
    assert services["migrate"]["command"] == ["python", "-m", "migrations", "up"]


@pytest.mark.parametrize("name", APPS + ("toxiproxy",))
def test_our_containers_are_hardened(services, name):
    service = services[name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert any(str(mount).startswith("/tmp") for mount in service["tmpfs"])
    assert service.get("privileged") is not True
    assert service["pids_limit"] > 0 and service["mem_limit"]


@pytest.mark.parametrize("name", ("postgres", "rabbitmq"))
def test_infrastructure_drops_every_capability_it_does_not_need(services, name):
    service = services[name]
    assert service["cap_drop"] == ["ALL"]
    needed_to_drop_root = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}
    assert set(service.get("cap_add", [])) <= needed_to_drop_root
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["mem_limit"] and service["pids_limit"] > 0


def test_no_container_can_reach_the_docker_socket(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            assert "docker.sock" not in str(volume), name
        assert service.get("privileged") is not True, name
        assert service.get("network_mode") != "host", name


def test_secrets_are_required_and_have_no_defaults():
    text = COMPOSE.read_text()
    for name in ("RECO_API_KEYS", "RECO_DB_PASSWORD", "RECO_AMQP_PASSWORD"):
        uses = re.findall(r"\$\{" + name + r"(:?[-?+]?)", text)
        assert uses, f"{name} is not used"
        assert set(uses) == {":?"}, f"{name} must be ${{{name}:?...}} everywhere"
    assert not re.search(r"guest|dev-key|changeme|password123", text)


def test_apps_run_in_production_mode_with_urls_built_from_the_secrets(services):
    for name in APPS:
        env = services[name]["environment"]
        assert env["RECO_ENV"] == "production"
        assert "${RECO_DB_PASSWORD:?" in env["RECO_DATABASE_URL"]
        assert "${RECO_AMQP_PASSWORD:?" in env["RECO_AMQP_URL"]
        assert env["RECO_API_KEYS"].startswith("${RECO_API_KEYS:?")


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_health_checks(services, name):
    service = services[name]
    if name in ("relay", "consumer"):
        # The image's HEALTHCHECK probes RECO_HEALTH_URL: the worker's own /healthz.
        port = service["environment"]["RECO_METRICS_PORT"]
        assert service["environment"]["RECO_HEALTH_URL"] == f"http://127.0.0.1:{port}/healthz"
        return
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


def test_api_healthcheck_is_readiness(services):
    assert any("/readyz" in part for part in services["api"]["healthcheck"]["test"])


def test_apps_start_after_migrations_and_healthy_dependencies(services):
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "relay", "consumer"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["rabbitmq"]["condition"] == "service_healthy"


def test_stop_grace_periods_outlast_gunicorns_graceful_timeout(services):
    graceful = _graceful_timeout()
    assert graceful == 20
    for name in ("api", "relay", "consumer"):
        assert _seconds(services[name]["stop_grace_period"]) > graceful, name


def test_rabbitmq_defaults_to_quorum_queues(services):
    mounted = {str(v).split(":")[0] for v in services["rabbitmq"]["volumes"]}
    assert "./ops/rabbitmq/rabbitmq.conf" in mounted
    conf = (ROOT / "ops" / "rabbitmq" / "rabbitmq.conf").read_text()
    assert re.search(r"^default_queue_type = quorum$", conf, re.M)


def test_mounted_files_exist(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name}: {source}"


def test_toxiproxy_config_proxies_the_databases(services):
    proxies = yaml.safe_load((ROOT / "ops" / "toxiproxy" / "toxiproxy.json").read_text())
    assert {p["upstream"] for p in proxies} == {"postgres:5432", "rabbitmq:5672"}
    published = " ".join(services["toxiproxy"]["ports"])
    assert "127.0.0.1:8474:8474" in published


@pytest.mark.parametrize("name", ["relay", "consumer"])
def test_worker_metrics_listen_on_the_compose_network_without_a_published_port(services, name):
    env = services[name]["environment"]
    assert env["RECO_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - inside the container network
    assert int(env["RECO_METRICS_PORT"]) > 0
    assert "ports" not in services[name]
