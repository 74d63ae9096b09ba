"""Perceptual and intrusive speech metrics behind one contract (see :mod:`sealign.metrics.base`)."""

from sealign.metrics.base import Metric, MetricInfo, MetricResult, MetricUnavailable, Utterance
from sealign.metrics.registry import build_metric, metric_info, metric_names, register

__all__ = [
    "Metric",
    "MetricInfo",
    "MetricResult",
    "MetricUnavailable",
    "Utterance",
    "build_metric",
    "metric_info",
    "metric_names",
    "register",
]
