"""The workers' metrics server listens on the configured address."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry

from service.settings import Settings
from workers.metrics import Health, serve


def test_the_address_comes_from_the_settings_and_defaults_to_loopback():
    assert Settings.from_env({}).metrics_host == "127.0.0.1"
    host = Settings.from_env({"RECO_METRICS_HOST": "127.0.0.2"}).metrics_host
    server = serve(0, CollectorRegistry(), Health(stall_after_s=60), host)
    try:
        address, port = server.server_address[:2]
        assert address == "127.0.0.2"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy env
        with direct.open(f"http://127.0.0.2:{port}/metrics", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.shutdown()
        server.server_close()
