"""`reco-harness contract --peer-api-key`: the configuration `st run` reads with two API keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import schemathesis

from harness.contract.allowlist import load
from harness.contract.check_plan import plan
from harness.contract.config import PEER, PRIMARY, raw_config, write_peers_config
from harness.contract.paths import ALLOWLIST_PATH, CONFIG_PATH
from harness.contract.runner import CHECKS, ContractRun, st_argv, st_config_path


def two_key_run(tmp_path: Path) -> ContractRun:
    return ContractRun(
        url="http://127.0.0.1:9",
        out_dir=tmp_path / "run",
        max_examples=5,
        seed=None,
        api_key="dev-key",
        peer_api_key="other-key",
        allowlist=load(ALLOWLIST_PATH),
    )


def test_both_keys_become_peers_and_every_request_goes_out_as_the_first(tmp_path: Path) -> None:
    path = write_peers_config("dev-key", "other-key", tmp_path)
    data = raw_config(path)
    wfc = data["auth"]["wfc"]
    assert data["auth"] == {"wfc": wfc}  # Schemathesis takes one way of authenticating
    assert wfc["user"] == PRIMARY and wfc["peers"] == [PRIMARY, PEER]
    auth = json.loads(Path(wfc["path"]).read_text())
    headers = {entry["name"]: entry["fixedHeaders"] for entry in auth["auth"]}
    assert headers == {
        PRIMARY: [{"name": "X-API-Key", "value": "dev-key"}],
        PEER: [{"name": "X-API-Key", "value": "other-key"}],
    }
    # The rest of the contract is the shared file's.
    shared = raw_config(CONFIG_PATH)
    assert {k: v for k, v in data.items() if k != "auth"} == {
        k: v for k, v in shared.items() if k != "auth"
    }
    schemathesis.Config.from_dict(data)  # as `st run --config-file` reads it


def test_with_a_peer_key_every_check_can_judge(tmp_path: Path) -> None:
    run = two_key_run(tmp_path)
    with st_config_path(run) as path:
        argv = st_argv(run, path)
        assert argv[argv.index("--config-file") + 1] == str(path)
        assert plan(run.api_key, CHECKS, run.request_timeout_s, path).cannot_judge == {}
        directory = path.parent
        assert directory.stat().st_mode & 0o077 == 0  # the keys are readable by the owner only
    assert not directory.exists()  # and gone with the run


def test_without_a_peer_key_the_shared_file_is_read(tmp_path: Path) -> None:
    run = dataclasses.replace(two_key_run(tmp_path), peer_api_key=None)
    with st_config_path(run) as path:
        assert path == CONFIG_PATH
    # Its response-time limit is below the request timeout: that check judges every response.
    reason = plan("dev-key", CHECKS, run.request_timeout_s).cannot_judge
    assert set(reason) == {"object_level_authorization"}
    assert "--peer-api-key ($RECO_CONTRACT_PEER_API_KEY)" in reason["object_level_authorization"]


def test_a_stack_the_command_starts_gets_a_second_client():
    from harness.contract.runner import own_stack_keys

    keys, peer = own_stack_keys("dev-key", {})
    assert keys == f"contract:dev-key,contract-peer:{peer}" and len(peer) >= 32
    assert own_stack_keys("dev-key", {})[1] != peer  # a fresh secret every run
    # Keys the operator named for the stack win; a key the form cannot hold gets no peer.
    assert own_stack_keys("dev-key", {"RECO_API_KEYS": "a:b"}) is None
    assert own_stack_keys("one,two", {}) is None
