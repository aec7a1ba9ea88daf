"""Settings come from the environment in one place and refuse unsafe production values."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from service.settings import RANGES, TEST_FAULTS, ConfigError, Settings

PROD = {
    "RECO_ENV": "production",
    "RECO_API_KEYS": "shop:" + "s" * 40,
    "RECO_DATABASE_URL": "postgresql://app:Str0ng-pass@db:5432/reco",
    "RECO_AMQP_URL": "amqp://relay:An0ther-pass@mq:5672/%2F",
}


def test_defaults_are_development():
    settings = Settings.from_env({})
    assert settings.environment == "development"
    assert settings.api_keys[0][0] == "dev"


def test_typed_coercion_and_named_errors():
    assert Settings.from_env({"RECO_DB_POOL_SIZE": "7"}).db_pool_size == 7
    with pytest.raises(ConfigError, match="RECO_DB_POOL_SIZE"):
        Settings.from_env({"RECO_DB_POOL_SIZE": "many"})
    with pytest.raises(ConfigError, match="RECO_ENV"):
        Settings.from_env({"RECO_ENV": "staging"})
    with pytest.raises(ConfigError, match="RECO_LOCK_TIMEOUT_MS"):
        Settings.from_env({"RECO_LOCK_TIMEOUT_MS": "5000"})


def test_api_keys_are_stored_hashed():
    settings = Settings.from_env({"RECO_API_KEYS": "a:secret-a,b:sha256=" + "0" * 64})
    assert settings.api_keys == (("a", hashlib.sha256(b"secret-a").hexdigest()), ("b", "0" * 64))
    assert "secret-a" not in repr(settings)


def test_production_accepts_real_secrets():
    assert Settings.from_env(PROD).environment == "production"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECO_API_KEYS", "dev:dev-key"),
        ("RECO_DATABASE_URL", "postgresql://postgres:postgres@db/reco"),
        ("RECO_DATABASE_URL", "postgresql://app@db/reco"),
        ("RECO_AMQP_URL", "amqp://guest:guest@mq:5672/%2F"),
        ("RECO_UNSAFE_TEST_FAULTS", "consumer_ack_before_commit"),
    ],
)
def test_production_refuses_defaults_and_names_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable) as err:
        Settings.from_env({**PROD, variable: value})
    assert "guest" not in str(err.value) and "postgres:postgres" not in str(err.value)


def test_test_faults_only_in_test_mode():
    faults = {"RECO_UNSAFE_TEST_FAULTS": "consumer_skip_inbox,relay_pause_before_commit"}
    assert Settings.from_env({**faults, "RECO_ENV": "test"}).test_fault("relay_pause_before_commit")
    assert not Settings.from_env(faults).test_fault("relay_pause_before_commit")


def test_env_example_lists_every_variable():
    from pathlib import Path

    from service.__main__ import env_example

    text = (Path(__file__).parents[2] / ".env.example").read_text()
    missing = [name for name, _, _ in Settings.documented() if name not in text]
    assert missing == []
    assert text == env_example(), "regenerate: python -m service env-example > .env.example"


def test_env_example_lists_what_the_gunicorn_config_reads_without_setting_it():
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    config = (root / "service" / "gunicorn.conf.py").read_text()
    read = set(re.findall(r'(?:os\.environ(?:\.get\(|\[)|_count\()"([A-Z_]+)"', config))
    assert read >= {"RECO_GUNICORN_WORKERS", "PROMETHEUS_MULTIPROC_DIR"}
    lines = (root / ".env.example").read_text().splitlines()
    assert [n for n in sorted(read) if not any(n in line for line in lines)] == []
    # An active line would make every copy of the file share one directory nobody creates.
    assert not [line for line in lines if line.startswith("PROMETHEUS_MULTIPROC_DIR=")]


def test_the_operations_guide_lists_every_setting_as_the_code_defines_it():
    from pathlib import Path

    from service.__main__ import settings_table

    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert settings_table() in text, "paste the output of: python -m service settings-table"
    for name in ("RECO_BIND", "RECO_GUNICORN_BACKLOG", "RECO_GUNICORN_LOGLEVEL"):
        assert f"`{name}`" in text  # read by gunicorn.conf.py, outside Settings


def _digest(secret: str) -> str:
    return "sha256=" + hashlib.sha256(secret.encode()).hexdigest()


def test_production_accepts_long_plain_keys_and_digests():
    keys = "shop:" + "k" * 32 + ",crm:" + _digest("a long and random key nobody guesses")
    settings = Settings.from_env({**PROD, "RECO_API_KEYS": keys})
    assert [client for client, _ in settings.api_keys] == ["shop", "crm"]


@pytest.mark.parametrize(
    "secret",
    [
        "s" * 31,  # plain-text keys need at least 32 characters
        "changeme",
        "admin",
        _digest("dev-key"),
        _digest("password"),
        _digest("Secret"),
        _digest("GUEST"),
        _digest("test"),
        _digest(""),
    ],
)
def test_production_refuses_short_or_default_api_keys_without_echoing_them(secret):
    with pytest.raises(ConfigError, match="RECO_API_KEYS") as err:
        Settings.from_env({**PROD, "RECO_API_KEYS": "shop:" + "s" * 40 + ",crm:" + secret})
    assert "'crm'" in str(err.value)  # names the client whose key is refused
    assert secret not in str(err.value) and secret.removeprefix("sha256=") not in str(err.value)


def test_development_and_test_keep_short_keys():
    for environment in ("development", "test"):
        assert Settings.from_env({"RECO_ENV": environment, "RECO_API_KEYS": "dev:dev-key"})


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("RECO_DATABASE_URL", "postgresql://app:password@db:5432/reco"),
        ("RECO_DATABASE_URL", "postgresql://app:Postgres@db:5432/reco"),
        ("RECO_DATABASE_URL", "postgresql://app:%70ostgres@db:5432/reco"),  # percent-encoded
        ("RECO_DATABASE_URL", "postgresql://app:@db:5432/reco"),
        ("RECO_DATABASE_URL", "postgresql://app@db:5432/reco?password=changeme"),
        ("RECO_DATABASE_URL", "postgresql://app:Str0ng-pass@db/reco?password=secret"),
        ("RECO_DATABASE_URL", "postgresql://app:x@[::1/reco"),  # not a URL at all
        ("RECO_AMQP_URL", "amqp://relay:changeme@mq:5672/%2F"),
        ("RECO_AMQP_URL", "amqp://relay:secret@mq:5672/%2F"),
        ("RECO_AMQP_URL", "amqp://relay:@mq:5672/%2F"),
    ],
)
def test_production_refuses_default_url_passwords_without_echoing_them(variable, url):
    with pytest.raises(ConfigError, match=variable) as err:
        Settings.from_env({**PROD, variable: url})
    assert url not in str(err.value) and "app:" not in str(err.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app@db:5432/reco?password=Str0ng-pass",
        "host=db port=5432 dbname=reco user=app password=Str0ng-pass",  # libpq key=value
        "host=db dbname=reco user=app password='Str0ng pass'",
    ],
)
def test_production_accepts_a_password_given_as_a_libpq_parameter(dsn):
    assert Settings.from_env({**PROD, "RECO_DATABASE_URL": dsn}).database_url == dsn


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("host=db dbname=reco user=app password=postgres", "non-default password"),
        ("host=db dbname=reco user=app", "non-default password"),
        ("host=db dbname=reco user=app password", "not a valid libpq URL or key=value"),
    ],
)
def test_production_judges_a_key_value_dsn_by_its_password(dsn, says):
    with pytest.raises(ConfigError, match=f"RECO_DATABASE_URL: .*{says}") as err:
        Settings.from_env({**PROD, "RECO_DATABASE_URL": dsn})
    assert "password=" not in str(err.value)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"RECO_AUTH_FAILURE_BURST": "0"}, "RECO_AUTH_FAILURE_BURST"),
        ({"RECO_EVENT_MAX_FUTURE_S": "-1"}, "RECO_EVENT_MAX_FUTURE_S"),
    ],
)
def test_throttle_and_skew_settings_are_checked(environ, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(environ)


def test_auth_failure_throttle_can_be_switched_off():
    settings = Settings.from_env(
        {"RECO_AUTH_FAILURE_RATE_PER_S": "0", "RECO_AUTH_FAILURE_BURST": "0"}
    )
    assert settings.auth_failure_rate_per_s == 0


def test_relay_retry_base_must_not_exceed_its_cap():
    env = {"RECO_RELAY_RETRY_BASE_S": "90", "RECO_RELAY_RETRY_MAX_S": "60"}
    with pytest.raises(ConfigError, match="RECO_RELAY_RETRY_BASE_S"):
        Settings.from_env(env)
    assert Settings.from_env({"RECO_RELAY_RETRY_BASE_S": "0"}).relay_retry_base_s == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECO_CONSUMER_PREFETCH", "0"),  # basic.qos 0 is unlimited prefetch
        ("RECO_CONSUMER_PREFETCH", "70000"),  # beyond AMQP's 16-bit field
        ("RECO_CONSUMER_BATCH_SIZE", "0"),  # the consumer would spin on empty batches
        ("RECO_RELAY_BATCH_SIZE", "0"),
        ("RECO_AMQP_HEARTBEAT_S", "0"),  # no heartbeats: a dead peer is never noticed
        ("RECO_DB_CONNECT_TIMEOUT_S", "0"),  # libpq waits for ever
        ("RECO_STATEMENT_TIMEOUT_MS", "0"),
        ("RECO_RELAY_CONFIRM_TIMEOUT_S", "-1"),
        ("RECO_BACKOFF_MAX_S", "0"),
        ("RECO_MAX_QUEUE_MS", "-1"),  # shed every request carrying X-Request-Start
        ("RECO_RELAY_RETENTION_HOURS", "-1"),  # purged every row just published
        ("RECO_RELAY_RETENTION_HOURS", "0"),
        ("RECO_RELAY_RETENTION_HOURS", "1000000"),  # now() minus it leaves timestamp range
        ("RECO_LOG_BATCH_LINES", "-1"),
        ("RECO_LOG_BATCH_FLUSH_MS", "-1"),
        ("RECO_POPULAR_CACHE_S", "-1"),
        ("RECO_RATE_LIMIT_PER_S", "-1"),
        ("RECO_AUTH_FAILURE_RATE_PER_S", "-1"),
        ("RECO_AUTH_FAILURE_BURST", "-1"),
        ("RECO_CONSUMER_BATCH_WAIT_MS", "-1"),
    ],
)
def test_a_setting_that_would_switch_off_a_bound_is_refused_by_name(variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}: must be between"):
        Settings.from_env({variable: value})


def test_every_bounded_setting_is_a_setting_and_its_default_is_in_bounds():
    defaults = Settings.from_env({})
    for name, (low, high) in RANGES.items():
        assert low <= getattr(defaults, name) <= high, name


FLOAT_VARIABLES = [
    f.metadata["env"] for f in dataclasses.fields(Settings) if isinstance(f.default, float)
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
@pytest.mark.parametrize("variable", FLOAT_VARIABLES)
def test_a_float_setting_that_is_not_a_finite_number_is_refused_by_name(variable, value):
    # nan slipped through every bound and then crashed start-up while the message was built.
    with pytest.raises(ConfigError, match=f"^{variable}: must be a finite number"):
        Settings.from_env({variable: value})


def test_log_level_is_a_logging_level_name_in_any_case():
    assert Settings.from_env({"RECO_LOG_LEVEL": "warning"}).log_level == "warning"
    # An unknown name crashed the relay with a traceback and kept the API workers from booting.
    with pytest.raises(ConfigError, match="^RECO_LOG_LEVEL: must be one of DEBUG, INFO"):
        Settings.from_env({"RECO_LOG_LEVEL": "bogus"})


@pytest.mark.parametrize("value", ["70000", "65536", "-1"])
def test_metrics_port_outside_tcp_ports_is_refused_by_name(value):
    # bind() raised OverflowError with a traceback instead.
    with pytest.raises(ConfigError, match="^RECO_METRICS_PORT: must be between 0 and 65535"):
        Settings.from_env({"RECO_METRICS_PORT": value})


def test_metrics_port_zero_still_means_off():
    assert Settings.from_env({"RECO_METRICS_PORT": "0"}).metrics_port == 0


def test_queue_max_length_zero_means_no_limit_as_documented():
    # docs/events.md and workers/topology.py give 0 a meaning the bounds used to refuse.
    assert Settings.from_env({"RECO_QUEUE_MAX_LENGTH": "0"}).queue_max_length == 0
    with pytest.raises(ConfigError, match="^RECO_QUEUE_MAX_LENGTH: must be between 0"):
        Settings.from_env({"RECO_QUEUE_MAX_LENGTH": "-1"})


@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_bad_relay_retry_cap_is_refused_under_its_own_name(value):
    # The message named RECO_RELAY_RETRY_BASE_S, which the operator had not set.
    with pytest.raises(ConfigError, match="^RECO_RELAY_RETRY_MAX_S: must be between"):
        Settings.from_env({"RECO_RELAY_RETRY_MAX_S": value})


@pytest.mark.parametrize("environ", [{}, PROD])
def test_an_api_key_digest_must_be_hex(environ):
    keys = "app:sha256=" + "z" * 64
    with pytest.raises(ConfigError, match="^RECO_API_KEYS: .*must be 64 hex chars"):
        Settings.from_env({**environ, "RECO_API_KEYS": keys})
    upper = "app:sha256=" + "AB" * 32
    assert Settings.from_env({"RECO_API_KEYS": upper}).api_keys == (("app", "ab" * 32),)


def test_every_numeric_setting_is_bounded():
    numeric = {f.name for f in dataclasses.fields(Settings) if isinstance(f.default, int | float)}
    assert sorted(numeric - set(RANGES)) == []


def test_a_rate_limit_that_is_on_needs_a_burst_of_at_least_one():
    # A burst of 0 answered every request 429 for ever.
    env = {"RECO_RATE_LIMIT_PER_S": "5", "RECO_RATE_LIMIT_BURST": "0"}
    with pytest.raises(ConfigError, match="^RECO_RATE_LIMIT_BURST: must be at least 1"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "RECO_RATE_LIMIT_PER_S": "0"}).rate_limit_burst == 0


@pytest.mark.parametrize(
    "variable",
    [
        "RECO_MAX_QUEUE_MS",
        "RECO_POPULAR_CACHE_S",
        "RECO_RATE_LIMIT_PER_S",
        "RECO_AUTH_FAILURE_RATE_PER_S",
        "RECO_CONSUMER_BATCH_WAIT_MS",
        "RECO_METRICS_PORT",
        "RECO_QUEUE_MAX_LENGTH",
    ],
)
def test_zero_is_accepted_where_the_table_says_what_it_means(variable):
    doc = next(doc for env, _, doc in Settings.documented() if env == variable)
    assert "0 = " in doc
    assert Settings.from_env({variable: "0"})


@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_an_empty_amqp_namespace_is_refused(value):
    with pytest.raises(ConfigError, match="^RECO_AMQP_NAMESPACE: must not be empty"):
        Settings.from_env({"RECO_AMQP_NAMESPACE": value})


def test_an_unknown_test_fault_is_refused_by_name():
    # A misspelt switch left the negative control off without a word.
    env = {"RECO_ENV": "test", "RECO_UNSAFE_TEST_FAULTS": "consumer_skip_inbox, relay_mark_bfore"}
    with pytest.raises(ConfigError, match="^RECO_UNSAFE_TEST_FAULTS: unknown relay_mark_bfore;"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "RECO_UNSAFE_TEST_FAULTS": "consumer_skip_inbox,"})


def test_the_known_test_faults_are_those_the_code_asks_for_and_the_docs_list():
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    asked = set()
    for path in [*(root / "workers").glob("*.py"), *(root / "service").glob("*.py")]:
        text = path.read_text()
        asked |= set(re.findall(r'test_fault\(\s*"(\w+)"', text))
        asked |= set(re.findall(r'pause_point\(\s*self\.settings,\s*"(\w+)"', text))
    assert asked == TEST_FAULTS
    events = (root / "docs" / "events.md").read_text()
    switches = events.split("## Test-only switches")[1].split("\n## ")[0]
    assert set(re.findall(r"^\| `(\w+)` \|", switches, re.M)) == TEST_FAULTS
    for path in (root / "chaos" / "experiments").glob("*.toml"):
        for switch in re.findall(r'^switch = "(\w+)"', path.read_text(), re.M):
            assert switch in TEST_FAULTS, path.name


def test_the_lock_timeout_help_names_every_role_it_applies_to():
    from service.db.connect import ROLE_TIMEOUTS

    probe = dataclasses.replace(Settings(), lock_timeout_ms=123, statement_timeout_ms=456)
    roles = {role for role, get in ROLE_TIMEOUTS.items() if get(probe)[1] == 123}
    assert roles == {"api", "relay", "consumer"}
    doc = next(doc for env, _, doc in Settings.documented() if env == "RECO_LOCK_TIMEOUT_MS")
    # It said "API connections' lock_timeout", though the workers' connections use it too.
    assert all(role in doc.lower() for role in roles)


def test_the_operations_guide_gives_the_header_line_gunicorn_serves():
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    config = (root / "service" / "gunicorn.conf.py").read_text()
    limit = int(re.search(r"^limit_request_field_size = (\d+)", config, re.M).group(1))
    text = " ".join((root / "docs" / "operations.md").read_text().split())
    # gunicorn counts the line's CRLF: 8188 bytes before it are served, 8189 are 431.
    assert f"≤ {limit} bytes counting the line's CRLF" in text
    assert f"header line of {limit - 2} bytes is served, {limit - 1} is refused" in text
