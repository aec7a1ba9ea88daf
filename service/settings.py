"""Settings for every process, built from the environment in one place."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ENVIRONMENTS = ("development", "test", "production")
# Secrets that must never reach production: well-known defaults of the components and of
# examples (compared case-insensitively for passwords).
KNOWN_DEFAULT_SECRETS = frozenset(
    {"", "admin", "changeme", "dev-key", "guest", "password", "postgres", "secret", "test"}
)
DEV_API_KEY = "dev-key"  # noqa: S105 - development default, refused in production
# Names logging.Logger.setLevel takes (upper-cased first, as service/logs.py does).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The test-only switches of docs/events.md: a misspelt one would leave a negative control
# silently off, so the test it belongs to would pass for the wrong reason.
TEST_FAULTS = frozenset(
    {
        "relay_mark_before_confirm",
        "consumer_ack_before_commit",
        "consumer_skip_inbox",
        "relay_pause_before_confirm",
        "relay_pause_before_commit",
        "consumer_pause_before_commit",
        "consumer_pause_after_commit",
        "wall_clock_offset",
    }
)
# API-key secrets carry at least 32 bytes of entropy: guessing one is not a threat model.
MIN_API_KEY_CHARS = 32
HEX_DIGITS = frozenset("0123456789abcdef")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean, got {raw!r}")


def _api_key_entries(raw: str) -> list[tuple[str, str]]:
    """Split ``id:secret,...`` into (id, secret) pairs; the secret may be ``sha256=<hex>``."""
    entries = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        client_id, sep, secret = item.partition(":")
        if not sep or not client_id or not secret:
            raise ValueError("expected comma-separated 'client_id:secret' entries")
        entries.append((client_id, secret))
    return entries


def _parse_api_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """Parse ``id:secret`` or ``id:sha256=<hex>`` pairs into (id, sha256 hex) tuples."""
    pairs = []
    for client_id, secret in _api_key_entries(raw):
        if secret.startswith("sha256="):
            digest = secret.removeprefix("sha256=").lower()
            # A digest that is not hex can never equal a key's: the client would be locked out.
            if len(digest) != 64 or not set(digest) <= HEX_DIGITS:
                raise ValueError(f"sha256 digest for {client_id!r} must be 64 hex chars")
        else:
            digest = hashlib.sha256(secret.encode()).hexdigest()
        pairs.append((client_id, digest))
    return tuple(pairs)


def _field(env: str, default: Any, parse: Callable[[str], Any] = str, doc: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Typed, immutable configuration for the service and the workers."""

    environment: str = _field("RECO_ENV", "development", doc="development, test or production")
    database_url: str = _field(
        "RECO_DATABASE_URL",
        "postgresql://postgres@127.0.0.1:5432/reco",
        doc="libpq URL or key=value string",
    )
    amqp_url: str = _field(
        "RECO_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F", doc="AMQP 0-9-1 URL"
    )
    api_keys: tuple[tuple[str, str], ...] = _field(
        "RECO_API_KEYS",
        _parse_api_keys(f"dev:{DEV_API_KEY}"),
        _parse_api_keys,
        "client_id:secret or client_id:sha256=<hex>, comma-separated",
    )
    amqp_namespace: str = _field(
        "RECO_AMQP_NAMESPACE", "reco", doc="prefix of exchange and queue names"
    )
    log_level: str = _field(
        "RECO_LOG_LEVEL", "INFO", doc="level of the service's and workers' JSON logs"
    )
    log_batch_lines: int = _field(
        "RECO_LOG_BATCH_LINES",
        64,
        int,
        "service log lines per write (1: one each); WARNING and above are written at once",
    )
    log_batch_flush_ms: int = _field(
        "RECO_LOG_BATCH_FLUSH_MS",
        500,
        int,
        "longest a buffered log line waits before it is written",
    )
    # HTTP service
    db_pool_size: int = _field("RECO_DB_POOL_SIZE", 4, int, "connections per worker")
    db_checkout_timeout_ms: int = _field(
        "RECO_DB_CHECKOUT_TIMEOUT_MS", 200, int, "wait for a pooled connection, then 503"
    )
    db_connect_timeout_s: int = _field("RECO_DB_CONNECT_TIMEOUT_S", 2, int, "libpq minimum is 2")
    db_tcp_user_timeout_ms: int = _field(
        "RECO_DB_TCP_USER_TIMEOUT_MS", 2000, int, "libpq tcp_user_timeout"
    )
    statement_timeout_ms: int = _field(
        "RECO_STATEMENT_TIMEOUT_MS", 1000, int, "API connections' statement_timeout"
    )
    lock_timeout_ms: int = _field(
        "RECO_LOCK_TIMEOUT_MS",
        200,
        int,
        "lock_timeout of the API's, relay's and consumer's connections",
    )
    idle_in_tx_timeout_ms: int = _field(
        "RECO_IDLE_IN_TX_TIMEOUT_MS", 5000, int, "API idle_in_transaction_session_timeout"
    )
    read_deadline_ms: int = _field(
        "RECO_READ_DEADLINE_MS", 800, int, "database budget of a read request"
    )
    write_deadline_ms: int = _field(
        "RECO_WRITE_DEADLINE_MS", 1500, int, "database budget of a write request"
    )
    breaker_failure_threshold: int = _field(
        "RECO_BREAKER_FAILURES", 3, int, "consecutive failures that open the breaker"
    )
    breaker_reset_s: float = _field(
        "RECO_BREAKER_RESET_S", 2.0, float, "open breaker: one trial request this often"
    )
    max_inflight: int = _field("RECO_MAX_INFLIGHT", 32, int, "in-flight requests per worker")
    max_queue_ms: int = _field(
        "RECO_MAX_QUEUE_MS", 1000, int, "shed requests queued longer (X-Request-Start); 0 = off"
    )
    max_content_length: int = _field("RECO_MAX_CONTENT_LENGTH", 262_144, int, "bytes")
    client_timeout_s: float = _field(
        "RECO_CLIENT_TIMEOUT_S",
        10.0,
        float,
        "seconds a client's socket may stay silent while a sync worker reads or writes; 0 = off",
    )
    popular_cache_s: float = _field(
        "RECO_POPULAR_CACHE_S", 1.0, float, "seconds a worker reuses the popular pool; 0 = off"
    )
    idempotency_ttl_s: int = _field(
        "RECO_IDEMPOTENCY_TTL_S", 86_400, int, "how long an Idempotency-Key is remembered"
    )
    retry_after_s: int = _field("RECO_RETRY_AFTER_S", 1, int, "Retry-After of 503 and 429 answers")
    rate_limit_per_s: float = _field(
        "RECO_RATE_LIMIT_PER_S", 0.0, float, "requests/s per API client and worker; 0 = off"
    )
    rate_limit_burst: float = _field(
        "RECO_RATE_LIMIT_BURST", 50.0, float, "requests a client may send at once"
    )
    # Recommendation poisoning (OWASP API6): bulk events for one user_id from any key.
    user_event_rate_per_s: float = _field(
        "RECO_USER_EVENT_RATE_PER_S", 0.0, float, "events/s per user_id and worker; 0 = off"
    )
    user_event_burst: float = _field(
        "RECO_USER_EVENT_BURST", 200.0, float, "events one user_id may get at once (>= 100)"
    )
    # Generous: a misconfigured client or a test suite must not meet it (Schemathesis' auth
    # checks alone make ~200 failures in 4 s from one client); keys of 32+ characters are not
    # guessed at any rate, so it only caps floods of bad keys.
    auth_failure_rate_per_s: float = _field(
        "RECO_AUTH_FAILURE_RATE_PER_S",
        50.0,
        float,
        "failed authentications/s per client IP and worker, then 429; 0 = off",
    )
    auth_failure_burst: float = _field(
        "RECO_AUTH_FAILURE_BURST",
        500.0,
        float,
        "failed authentications a client IP may make at once",
    )
    event_max_future_s: float = _field(
        "RECO_EVENT_MAX_FUTURE_S",
        300.0,
        float,
        "an event's occurred_at may be this far ahead of the service clock; later is 422",
    )
    # Workers
    relay_batch_size: int = _field(
        "RECO_RELAY_BATCH_SIZE", 200, int, "outbox rows claimed per batch"
    )
    relay_poll_interval_ms: int = _field(
        "RECO_RELAY_POLL_MS", 100, int, "idle relay polls this often (NOTIFY wakes it sooner)"
    )
    relay_confirm_timeout_s: float = _field(
        "RECO_RELAY_CONFIRM_TIMEOUT_S", 5.0, float, "unconfirmed after this: rows stay pending"
    )
    relay_retry_base_s: float = _field(
        "RECO_RELAY_RETRY_BASE_S",
        1.0,
        float,
        "a row the broker refused is claimed again after this, doubling per attempt",
    )
    relay_retry_max_s: float = _field(
        "RECO_RELAY_RETRY_MAX_S", 30.0, float, "longest wait before a refused row is retried"
    )
    relay_idle_in_tx_timeout_ms: int = _field(
        "RECO_RELAY_IDLE_IN_TX_TIMEOUT_MS", 30_000, int, "relay idle_in_transaction_session_timeout"
    )
    relay_retention_hours: float = _field(
        "RECO_RELAY_RETENTION_HOURS", 24.0, float, "published outbox rows kept this long"
    )
    relay_retention_interval_s: float = _field(
        "RECO_RELAY_RETENTION_INTERVAL_S", 60.0, float, "how often a relay purges published rows"
    )
    queue_max_length: int = _field(
        "RECO_QUEUE_MAX_LENGTH", 1_000_000, int, "x-max-length of the feature queue; 0 = none"
    )
    consumer_prefetch: int = _field(
        "RECO_CONSUMER_PREFETCH", 300, int, "unacked deliveries per consumer"
    )
    consumer_batch_size: int = _field(
        "RECO_CONSUMER_BATCH_SIZE", 100, int, "deliveries applied per transaction"
    )
    consumer_batch_wait_ms: int = _field(
        "RECO_CONSUMER_BATCH_WAIT_MS", 20, int, "longest a partial batch waits for more; 0 = none"
    )
    delivery_limit: int = _field(
        "RECO_DELIVERY_LIMIT", 20, int, "deliveries of one message before the DLQ"
    )
    amqp_heartbeat_s: int = _field("RECO_AMQP_HEARTBEAT_S", 15, int, "AMQP heartbeat")
    amqp_blocked_timeout_s: int = _field(
        "RECO_AMQP_BLOCKED_TIMEOUT_S", 30, int, "broker flow block tolerated, then reconnect"
    )
    amqp_socket_timeout_s: float = _field(
        "RECO_AMQP_SOCKET_TIMEOUT_S", 5.0, float, "AMQP connect and socket timeout"
    )
    backoff_max_s: float = _field(
        "RECO_BACKOFF_MAX_S", 30.0, float, "longest retry backoff of a worker"
    )
    metrics_port: int = _field("RECO_METRICS_PORT", 0, int, "worker metrics port; 0 = off")
    metrics_host: str = _field(
        "RECO_METRICS_HOST",
        "127.0.0.1",
        doc="worker metrics address; 0.0.0.0 where a scraper on another host or container reads it",
    )
    # Test-only switches that break guarantees on purpose (negative controls).
    unsafe_test_faults: str = _field(
        "RECO_UNSAFE_TEST_FAULTS", "", doc="comma list; honoured only when RECO_ENV=test"
    )
    test_clock_file: str = _field(
        "RECO_TEST_CLOCK_FILE",
        "",
        doc="file holding the seconds the wall_clock_offset test fault adds to the clock",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (``os.environ`` by default), validating each value."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = field.metadata["env"]
            if name not in environ:
                continue
            try:
                values[field.name] = field.metadata["parse"](environ[name])
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}: {exc}") from None
        settings = cls(**values)
        settings.validate(environ.get("RECO_API_KEYS", ""))
        return settings

    def validate(self, raw_api_keys: str = "") -> None:
        """Refuse impossible combinations and, in production, default or weak secrets."""
        if self.environment not in ENVIRONMENTS:
            raise ConfigError(f"RECO_ENV: must be one of {', '.join(ENVIRONMENTS)}")
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            raise ConfigError(
                f"RECO_LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)} (any case),"
                f" got {self.log_level!r}"
            )
        self._validate_finite()
        self._validate_ranges()
        self._validate_names()
        if self.lock_timeout_ms >= self.statement_timeout_ms:
            raise ConfigError("RECO_LOCK_TIMEOUT_MS: must be below RECO_STATEMENT_TIMEOUT_MS")
        self._validate_bursts()
        if not 0 <= self.relay_retry_base_s <= self.relay_retry_max_s:
            raise ConfigError(
                "RECO_RELAY_RETRY_BASE_S: must be between 0 and RECO_RELAY_RETRY_MAX_S"
            )
        if self.environment == "production":
            self._validate_production(raw_api_keys)

    def _validate_finite(self) -> None:
        # float() takes nan and inf: a comparison with nan is always false, so no bound or
        # "0 = off" test would catch it, and inf turns a timeout or an interval off.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                env = field.metadata["env"]
                raise ConfigError(f"{env}: must be a finite number, got {value}")

    def _validate_ranges(self) -> None:
        # Zero turns most of these off (no timeout, unlimited prefetch, no heartbeat) or
        # makes a worker spin on empty batches: refuse it by name instead.
        fields = {field.name: field for field in dataclasses.fields(self)}
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                env = fields[name].metadata["env"]
                raise ConfigError(
                    f"{env}: must be between {_plain(low)} and {_plain(high)}, got {_plain(value)}"
                )

    def _validate_names(self) -> None:
        # An empty namespace would name the exchange ".events", shared by every deployment
        # that made the same mistake.
        if not self.amqp_namespace.strip():
            raise ConfigError("RECO_AMQP_NAMESPACE: must not be empty")
        unknown = sorted(self._test_fault_names() - TEST_FAULTS)
        if unknown:
            raise ConfigError(
                f"RECO_UNSAFE_TEST_FAULTS: unknown {', '.join(unknown)};"
                f" known: {', '.join(sorted(TEST_FAULTS))}"
            )
        if "wall_clock_offset" in self._test_fault_names() and not self.test_clock_file:
            raise ConfigError("RECO_TEST_CLOCK_FILE: required by the wall_clock_offset test fault")

    def _test_fault_names(self) -> set[str]:
        """The switches listed in RECO_UNSAFE_TEST_FAULTS, blanks dropped."""
        return {f.strip() for f in self.unsafe_test_faults.split(",")} - {""}

    def _validate_bursts(self) -> None:
        # A bucket that holds less than one token never lets a request through: 429 for ever.
        for rate_env, burst_env, rate, burst in (
            (
                "RECO_RATE_LIMIT_PER_S",
                "RECO_RATE_LIMIT_BURST",
                self.rate_limit_per_s,
                self.rate_limit_burst,
            ),
            (
                "RECO_AUTH_FAILURE_RATE_PER_S",
                "RECO_AUTH_FAILURE_BURST",
                self.auth_failure_rate_per_s,
                self.auth_failure_burst,
            ),
        ):
            if rate > 0 and burst < 1:
                raise ConfigError(f"{burst_env}: must be at least 1 (or {rate_env} 0)")

    def _validate_production(self, raw_api_keys: str) -> None:
        # Messages name the variable (and a key's client id) but never the secret itself.
        _refuse_weak_api_keys(self.api_keys, raw_api_keys)
        for env, url in (
            ("RECO_DATABASE_URL", self.database_url),
            ("RECO_AMQP_URL", self.amqp_url),
        ):
            passwords = (
                _dsn_passwords(env, url) if env == "RECO_DATABASE_URL" else _url_passwords(env, url)
            )
            if not passwords or any(p.lower() in KNOWN_DEFAULT_SECRETS for p in passwords):
                raise ConfigError(f"{env}: production needs a non-default password")
        if self.unsafe_test_faults:
            raise ConfigError("RECO_UNSAFE_TEST_FAULTS: not allowed in production")
        if self.test_clock_file:
            raise ConfigError("RECO_TEST_CLOCK_FILE: not allowed in production")

    def test_fault(self, name: str) -> bool:
        """Tell whether a deliberate test-only fault is switched on."""
        if self.environment != "test":
            return False
        return name in self._test_fault_names()

    @staticmethod
    def documented() -> list[tuple[str, str, str]]:
        """List (variable, default, description) for every setting."""
        rows = []
        for field in dataclasses.fields(Settings):
            default = field.default
            if field.name == "api_keys":
                default = f"dev:{DEV_API_KEY}"
            rows.append((field.metadata["env"], str(default), field.metadata["doc"]))
        return rows


def _plain(number: float) -> str:
    """A bound as people write it: 2147483647, 0.1 (never 2.14748e+09)."""
    return str(int(number)) if number == int(number) else f"{number:g}"


MAX_INT = float(2**31 - 1)
# Inclusive bounds of every numeric setting (a test keeps them complete). Zero is allowed
# only where the settings table says what it means ("0 = off"); elsewhere a zero or negative
# value would switch off a timeout or a bound the service and the workers rely on, or make
# them spin. AMQP limits are 16-bit fields.
RANGES: dict[str, tuple[float, float]] = {
    "log_batch_lines": (1, MAX_INT),
    "log_batch_flush_ms": (1, MAX_INT),
    "db_pool_size": (1, 64),
    "max_inflight": (1, MAX_INT),
    "max_queue_ms": (0, MAX_INT),  # 0 = off; below it every request with X-Request-Start is shed
    "popular_cache_s": (0, MAX_INT),  # 0 = off
    "rate_limit_per_s": (0, MAX_INT),  # 0 = off
    "rate_limit_burst": (0, MAX_INT),  # at least 1 while the rate is on (_validate_bursts)
    "auth_failure_rate_per_s": (0, MAX_INT),  # 0 = off
    "auth_failure_burst": (0, MAX_INT),
    "event_max_future_s": (0, MAX_INT),
    "db_checkout_timeout_ms": (1, MAX_INT),
    "db_connect_timeout_s": (1, 3600),  # libpq: 0 waits for ever
    "db_tcp_user_timeout_ms": (1, MAX_INT),
    "statement_timeout_ms": (1, MAX_INT),
    "lock_timeout_ms": (1, MAX_INT),
    "idle_in_tx_timeout_ms": (1, MAX_INT),
    "read_deadline_ms": (1, MAX_INT),
    "write_deadline_ms": (1, MAX_INT),
    "breaker_failure_threshold": (1, MAX_INT),
    "breaker_reset_s": (0.001, 86_400),
    "max_content_length": (1, MAX_INT),
    # 0 = off; at most 25 s, so a stalled client is dropped before gunicorn's 30 s timeout.
    "client_timeout_s": (0, 25),
    "idempotency_ttl_s": (1, MAX_INT),
    "retry_after_s": (1, 86_400),
    "user_event_rate_per_s": (0, MAX_INT),
    "user_event_burst": (100, MAX_INT),  # a whole batch (maxItems 100) for one user must fit
    "relay_batch_size": (1, 10_000),
    "relay_poll_interval_ms": (1, MAX_INT),
    "relay_confirm_timeout_s": (0.001, 3600),
    "relay_retry_base_s": (0, MAX_INT),  # 0: a refused row may be claimed again at once
    "relay_retry_max_s": (0.001, MAX_INT),
    "relay_idle_in_tx_timeout_ms": (1, MAX_INT),
    # At or below 0 every row is purged as soon as it is published. Far in the past, now()
    # minus the retention is out of PostgreSQL's timestamp range: about a century at most.
    "relay_retention_hours": (0.001, 876_000),
    "relay_retention_interval_s": (0.001, MAX_INT),
    "queue_max_length": (0, MAX_INT),  # 0 = no x-max-length (workers/topology.py)
    "consumer_prefetch": (1, 65_535),
    "consumer_batch_size": (1, 65_535),
    "consumer_batch_wait_ms": (0, MAX_INT),  # 0 = apply what is buffered at once
    "delivery_limit": (1, MAX_INT),
    "amqp_heartbeat_s": (1, 65_535),
    "amqp_blocked_timeout_s": (1, 86_400),
    "amqp_socket_timeout_s": (0.001, 3600),
    "backoff_max_s": (0.1, 86_400),  # the backoff starts at 0.1 s
    "metrics_port": (0, 65_535),  # 0 = no metrics server (workers/main.py)
}


def _default_digests() -> frozenset[str]:
    """SHA-256 digests of the known defaults as people write them (lower, upper, capitalised)."""
    spellings = {
        f(s) for s in KNOWN_DEFAULT_SECRETS for f in (str.lower, str.upper, str.capitalize)
    }
    return frozenset(hashlib.sha256(s.encode()).hexdigest() for s in spellings)


def _refuse_weak_api_keys(keys: tuple[tuple[str, str], ...], raw: str) -> None:
    """Production keys: none a known default (plain or as a digest), plain ones long enough."""
    if not keys:
        raise ConfigError("RECO_API_KEYS: production needs at least one key")
    defaults = _default_digests()
    for client_id, digest in keys:
        if digest in defaults:
            raise ConfigError(
                f"RECO_API_KEYS: the key of client {client_id!r} is a well-known default"
            )
    # Only plain-text keys have a length to check: a digest hides the key it was made from.
    for client_id, secret in _api_key_entries(raw):
        if not secret.startswith("sha256=") and len(secret) < MIN_API_KEY_CHARS:
            raise ConfigError(
                f"RECO_API_KEYS: the key of client {client_id!r} is shorter than"
                f" {MIN_API_KEY_CHARS} characters"
            )


def _dsn_passwords(env: str, dsn: str) -> list[str]:
    """The password libpq will send for ``dsn``, a URL or ``key=value`` string.

    libpq's own parser: a ``password`` parameter overrides the URL's, and ``key=value``
    strings have no URL to split. Imported here: only production settings need it.
    """
    import psycopg2.extensions

    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        raise ConfigError(f"{env}: not a valid libpq URL or key=value string") from None
    return [params["password"]] if params.get("password") else []


def _url_passwords(env: str, url: str) -> list[str]:
    """Every password a URL carries: in its authority and, as libpq allows, as a parameter."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        raise ConfigError(f"{env}: not a valid URL") from None
    found = [] if password is None else [unquote(password)]
    return found + parse_qs(parts.query, keep_blank_values=True).get("password", [])
