"""The Schemathesis configuration of the contract tier and its budget knobs."""

from __future__ import annotations

import copy
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.contract.paths import CONFIG_PATH

MAX_EXAMPLES_ENV = "RECO_CONTRACT_MAX_EXAMPLES"
SEED_ENV = "RECO_CONTRACT_SEED"
API_KEY_ENV = "RECO_CONTRACT_API_KEY"
PEER_API_KEY_ENV = "RECO_CONTRACT_PEER_API_KEY"
# The identities of a run with two API keys, as Schemathesis names them in its findings.
PRIMARY, PEER = "primary", "peer"
API_KEY_TABLE = "[auth.openapi.apiKey]"


def raw_config(path: Path = CONFIG_PATH) -> dict[str, Any]:
    """The shared schemathesis.toml (or another Schemathesis file) as a dict."""
    return tomllib.loads(path.read_text(encoding="utf-8"))


def st_config(api_key: str, path: Path = CONFIG_PATH):
    """A schemathesis.Config of the file as `st run --config-file` reads it, given the key."""
    import schemathesis

    data = raw_config(path)
    _set_api_key(data, api_key)
    return schemathesis.Config.from_dict(data, base_dir=str(path.parent))


def _set_api_key(data: dict[str, Any], api_key: str) -> None:
    """Put the key where the file reads it from the environment ([auth.openapi.apiKey])."""
    scheme = data.get("auth", {}).get("openapi", {}).get("apiKey")
    if scheme is not None:
        scheme["api_key"] = api_key


def write_peers_config(
    api_key: str, peer_api_key: str, directory: Path, path: Path = CONFIG_PATH
) -> Path:
    """Write ``path`` with both keys as [auth.wfc] peers into ``directory``; return the copy.

    Schemathesis allows one way of authenticating per configuration, so the one key's table
    gives way to a Web Fuzzing Commons auth file naming both. Every request still goes out as
    ``PRIMARY`` (pinned); object_level_authorization replays its reads as ``PEER``.
    """
    auth = directory / "auth.json"
    identities = [(PRIMARY, api_key), (PEER, peer_api_key)]
    auth.write_text(json.dumps({"auth": [_fixed_header(n, k) for n, k in identities]}))
    wfc = {"path": str(auth), "user": PRIMARY, "peers": [PRIMARY, PEER]}
    # JSON strings and arrays of strings are valid TOML values.
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in wfc.items())
    copy_path = directory / path.name
    text = _without_table(path.read_text(encoding="utf-8"), API_KEY_TABLE)
    copy_path.write_text(f"{text.rstrip()}\n\n[auth.wfc]\n{table}", encoding="utf-8")
    if "openapi" in raw_config(copy_path)["auth"]:
        raise ValueError(f"{path}: authentication other than {API_KEY_TABLE} cannot take peers")
    return copy_path


def _fixed_header(name: str, api_key: str) -> dict[str, Any]:
    """One identity of a Web Fuzzing Commons auth file: the key in its header."""
    from service.auth import HEADER

    return {"name": name, "fixedHeaders": [{"name": HEADER, "value": api_key}]}


def _without_table(text: str, header: str) -> str:
    """``text`` without the TOML table ``header``: its lines up to the next table's header."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("["):
            inside = line.strip() == header
        if not inside:
            kept.append(line)
    return "".join(kept)


def budget(environ: Mapping[str, str] | None = None) -> tuple[int, int | None]:
    """(max examples per operation, explicit seed or None): the CI budget unless overridden."""
    environ = os.environ if environ is None else environ
    data = raw_config()
    max_examples = int(data["generation"]["max-examples"])
    seed = None
    try:
        if environ.get(MAX_EXAMPLES_ENV):
            max_examples = int(environ[MAX_EXAMPLES_ENV])
        if environ.get(SEED_ENV):
            seed = int(environ[SEED_ENV])
    except ValueError:
        raise ValueError(f"{MAX_EXAMPLES_ENV} and {SEED_ENV} must be integers") from None
    if max_examples < 1:
        raise ValueError(f"{MAX_EXAMPLES_ENV} must be at least 1")
    return max_examples, seed


def in_process_config(api_key: str, environ: Mapping[str, str] | None = None):
    """A schemathesis.Config for in-process tests: the shared file with the key and budget set."""
    import schemathesis

    data = copy.deepcopy(raw_config())
    max_examples, seed = budget(environ)
    if seed is None:
        data["generation"]["deterministic"] = True
    else:
        data["seed"] = seed
    data["generation"]["max-examples"] = max_examples
    _set_api_key(data, api_key)
    return schemathesis.Config.from_dict(data)
