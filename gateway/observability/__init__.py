"""Metrics (Prometheus) for the gateway. Only this package imports prometheus_client."""

from gateway.observability.metrics import Metrics

__all__ = ["Metrics"]
