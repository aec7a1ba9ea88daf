"""The Flask application factory."""

from __future__ import annotations

import dataclasses
import time

from flask import Flask

from service import errors, logs, metrics, middleware, wallclock
from service.db.access import Database
from service.popular_cache import PopularPool
from service.settings import Settings
from service.shedding import InflightLimiter, TokenBucket


@dataclasses.dataclass
class Runtime:
    """Everything a request needs besides Flask: settings, database, limits, metrics."""

    settings: Settings
    db: Database
    limiter: InflightLimiter
    rate_limit: TokenBucket
    auth_failures: TokenBucket  # per client address, spent only by failed authentications
    user_events: TokenBucket  # per user_id, spent by each event posted for the user
    metrics: metrics.ServiceMetrics
    popular: PopularPool


class SyncFlask(Flask):
    """Flask for an app whose views and hooks are all synchronous."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._checked: dict = {}

    def ensure_sync(self, func):
        # Flask asks inspect whether each hook and view is a coroutine function on every
        # request (about ten per request here); the answer never changes, so ask once.
        known = self._checked.get(func)
        if known is None:
            known = self._checked[func] = super().ensure_sync(func)
        return known


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; no I/O happens here (pools open lazily in each worker)."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, settings.log_batch_lines, settings.log_batch_flush_ms)
    wallclock.configure(settings)
    app = SyncFlask(__name__)
    # Werkzeug answers a path with a doubled slash (/v1//events) with a 308 text/html redirect
    # whose Location is built from the client's Host header: no route of ours has one, so
    # such a path is a 404 problem like any other unknown path.
    app.url_map.merge_slashes = False
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length, PROVIDE_AUTOMATIC_OPTIONS=False
    )
    service_metrics = metrics.install(app)
    app.extensions["reco"] = Runtime(
        settings=settings,
        db=Database(settings, service_metrics),
        limiter=InflightLimiter(settings.max_inflight),
        rate_limit=TokenBucket(
            settings.rate_limit_per_s, settings.rate_limit_burst, time.monotonic
        ),
        auth_failures=TokenBucket(
            settings.auth_failure_rate_per_s, settings.auth_failure_burst, time.monotonic
        ),
        user_events=TokenBucket(
            settings.user_event_rate_per_s, settings.user_event_burst, time.monotonic
        ),
        metrics=service_metrics,
        popular=PopularPool(settings.popular_cache_s),
    )
    middleware.install(app)
    errors.install(app)
    from service.api import events, health, recommendations

    app.register_blueprint(health.blueprint)
    app.register_blueprint(recommendations.blueprint)
    app.register_blueprint(events.blueprint)
    return app
