"""Fixtures of the deployment tests (helpers that tests import live in deploy_checks.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exported_metric_names() -> set[str]:
    """Every sample name the service's /metrics can contain, from its own registry: a counter
    `x` exports `x_total`, a histogram `x_bucket`, `x_sum`, `x_count`, and so on."""
    from service.metrics.prometheus import Metrics

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names = set()
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    assert names, "service.metrics.prometheus.Metrics registers no metrics?"
    return names
