"""Prometheus metrics. One registry per app, so several apps (tests) can live in one process."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    latency: Histogram
    sockets: Gauge
    socket_events: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        return cls(
            requests=Counter("parlor_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry),
            latency=Histogram(
                "parlor_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=registry
            ),
            sockets=Gauge("parlor_sockets_connected", "Socket.IO connections on this process", registry=registry),
            socket_events=Counter(
                "parlor_socket_events", "Socket.IO client events handled", ["event", "outcome"], registry=registry
            ),
        )
