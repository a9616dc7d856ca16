"""The metrics in Prometheus' text format: for the authenticated endpoint and as node-exporter textfiles.

:func:`render` turns samples into the exposition format (``prometheus_client``, imported inside
the functions); :func:`collect` reads the sources' facts. In the embedded profile
:func:`refresh_after` rewrites one textfile per source (``mlops_lake.prom``,
``mlops_registry.prom`` in ``MLOPS_METRICS_TEXTFILE_DIR``) after a task that changes its facts
(:data:`REFRESH_AFTER`), so a node exporter's textfile collector serves them without any server of
the project's. Each file is written under a temporary name that does not end in ``.prom`` and
renamed into place, so the collector never reads half a file.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from include.mlops.core.alerting import OpsSettings
from include.mlops.core.settings import resolve_settings
from include.mlops.ops.catalogue import CATALOGUE, LAKE, REGISTRY, SOURCES, Sample

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the text exposition format."""

TEXTFILES = {LAKE: "mlops_lake.prom", REGISTRY: "mlops_registry.prom"}
"""The textfile of each source."""

REFRESH_AFTER: dict[tuple[str, str], tuple[str, ...]] = {
    ("ingest_transactions", "validate_and_land"): (LAKE,),
    ("ingest_labels", "validate_and_land"): (LAKE,),
    ("materialize_features", "compute_features"): (LAKE,),
    ("score_transactions", "score"): (LAKE,),
    ("monitor_drift", "check_drift"): (LAKE, REGISTRY),
    ("train_model", "train"): (REGISTRY,),
    ("train_model", "evaluate_and_promote"): (REGISTRY,),
    ("train_model", "rollback"): (REGISTRY,),
}
"""The sources whose facts a task changes, by ``(dag_id, task_id)``: what is refreshed after it."""


def collect(
    sources: Iterable[str] = SOURCES, settings: Settings | None = None, ops: OpsSettings | None = None
) -> list[Sample]:
    """The samples of ``sources``, read now."""
    from include.mlops.ops.lake_metrics import lake_samples
    from include.mlops.ops.registry_metrics import registry_samples

    s = resolve_settings(settings)
    found: list[Sample] = []
    for source in sources:
        found += lake_samples(s, ops) if source == LAKE else registry_samples(s)
    return found


def render(samples: Iterable[Sample], sources: Iterable[str] = SOURCES) -> bytes:
    """The exposition format of ``samples``: every family of ``sources`` (HELP and TYPE even without
    a sample, so that a scrape shows what the platform can export)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_families(list(samples), tuple(sources)))
    return generate_latest(registry)


def _families(samples: list[Sample], sources: tuple[str, ...]):
    from prometheus_client.core import GaugeMetricFamily

    class Families:
        def collect(self):
            by_name: dict[str, list[Sample]] = {}
            for s in samples:
                by_name.setdefault(s.name, []).append(s)
            for spec in CATALOGUE:
                if spec.source not in sources:
                    continue
                family = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
                for s in by_name.get(spec.name, ()):
                    family.add_metric(list(s.labels), s.value)
                yield family

    return Families()


def write_textfile(
    source: str, folder: Path, settings: Settings | None = None, ops: OpsSettings | None = None
) -> Path:
    """Rewrite the textfile of ``source`` in ``folder`` from the facts read now; returns its path."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TEXTFILES[source]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_families(collect((source,), settings, ops), (source,)))
    # The temporary file is "<name>.prom.<pid>.<thread>": the collector skips it, the rename is atomic.
    write_to_textfile(str(path), registry)
    return path


def refresh_after(
    dag_id: str, task_id: str, settings: Settings | None = None, ops: OpsSettings | None = None
) -> list[Path]:
    """Rewrite the textfiles whose facts the task ``dag_id.task_id`` changes (embedded profile; nothing
    when ``MLOPS_METRICS_TEXTFILE_DIR`` is off). Never raises: a failure is logged as a warning."""
    sources = REFRESH_AFTER.get((dag_id, task_id), ())
    if not sources:
        return []
    try:
        s = resolve_settings(settings)
        ops = ops or OpsSettings.from_env()
        folder = ops.textfile_dir(s)
        if folder is None:
            return []
        return [write_textfile(source, folder, s, ops) for source in sources]
    except Exception as exc:
        logger.warning("the metrics textfiles were not refreshed after %s.%s: %s", dag_id, task_id, exc)
        return []
