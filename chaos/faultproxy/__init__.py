"""A Toxiproxy-compatible TCP fault-injection proxy: server, client helper and locator."""

VERSION = "2.12.0"
