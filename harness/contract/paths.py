"""Where the contract tier's files live."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWLIST_PATH = ROOT / "contract-allowlist.toml"
CONFIG_PATH = Path(__file__).with_name("schemathesis.toml")
