"""Prometheus metrics of the API (``GET /metrics``, text exposition format 0.0.4).

=================================================  =========  ===========================================
metric                                             type       labels / meaning
=================================================  =========  ===========================================
``flinkrec_api_requests_total``                    counter    ``method``, ``route`` (the path template),
                                                              ``status``
``flinkrec_api_request_duration_seconds``          histogram  ``method``, ``route``: time in the app
``flinkrec_api_recommendation_age_seconds``        histogram  age (now - ``processed_at``) of the
                                                              recommendations served
``flinkrec_api_events_total``                      counter    ``outcome``: accepted, rejected, failed
``flinkrec_job_last_update_age_seconds``           gauge      age of the newest entry of ``rec:users``
                                                              at scrape time (NaN: none, or Redis down)
``flinkrec_job_users``                             gauge      users with recommendations (``ZCARD``)
=================================================  =========  ===========================================

Each app has its own registry, so several apps in one process (tests) do not collide. Requests that
match no route are counted under ``route="<unmatched>"`` to keep the label set bounded.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
UNMATCHED = "<unmatched>"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
AGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


class ApiMetrics:
    """The metric objects of one app and the registry they live in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("flinkrec_api_requests", "HTTP requests answered, by route template and status",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("flinkrec_api_request_duration_seconds",
                                 "Time from request to the end of the response, in the app", ("method", "route"),
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rec_age = Histogram("flinkrec_api_recommendation_age_seconds",
                                 "Age (now - processed_at) of the recommendations served", buckets=AGE_BUCKETS,
                                 registry=self.registry)
        self.events = Counter("flinkrec_api_events", "Events received by POST /events, by outcome", ("outcome",),
                              registry=self.registry)
        self.job_age = Gauge("flinkrec_job_last_update_age_seconds",
                             "Age of the newest recommendation update (rec:users) at scrape time; NaN if unknown",
                             registry=self.registry)
        self.job_users = Gauge("flinkrec_job_users", "Users with recommendations in Redis (ZCARD rec:users)",
                               registry=self.registry)
        for outcome in ("accepted", "rejected", "failed"):
            self.events.labels(outcome)
        self.job_age.set(float("nan"))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request (cheaper than ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path_format", None) or UNMATCHED  # the template without converters
            self.metrics.observe(scope.get("method", "GET"), path, status, time.perf_counter() - started)
