"""Live payments' features: the feature service's views read from Feast's online store, then its
on-demand features computed from them and the payment.

:class:`OnlineFeatures` resolves the feature service :data:`~include.mlops.features.FEATURE_SERVICE_NAME`
once: the features of its feature views (plus the view columns its on-demand views take as input)
are read with one ``get_online_features`` call per batch of payments, and each of its on-demand
views' own transformation (the function Feast runs, offline and online) is applied to the whole
batch at once. Feast's own on-demand step converts the batch to Arrow and back for every view,
which costs more than the rest of a request together; the transformation and its inputs are the
same, so the features are the same (the service's online/offline agreement test holds it).

Also the features' freshness: the ``event_timestamp`` of the customer's and merchant's snapshot
that served each payment (``None`` for an entity the store does not know).

Feast and pandas are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.core.settings import resolve_settings
from include.mlops.features import ENTITY_KEYS, FEATURE_COLUMNS, FEATURE_SERVICE_NAME

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    import pandas as pd

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Freshness:
    """The snapshot the store holds for an entity of a payment, and whether it served the payment."""

    as_of: dt.datetime | None
    """When the snapshot was taken (``None``: the entity is not in the store)."""
    used: bool
    """Whether its features went into the payment's score: as offline, a snapshot serves payments
    from its timestamp until the view's TTL after it; otherwise the features are missing."""

    def age_seconds(self, now: dt.datetime) -> float | None:
        """Seconds between the snapshot and ``now`` (``None`` when the entity is unknown)."""
        return None if self.as_of is None else round((now - self.as_of).total_seconds(), 3)


@dataclass(frozen=True)
class _Transform:
    """One on-demand view of the service: its transformation and the outputs the service takes."""

    name: str
    udf: Callable[[pd.DataFrame], pd.DataFrame]
    outputs: tuple[str, ...]


class OnlineFeatures:
    """The feature service's features for live payments, from the profile's online store."""

    def __init__(self, settings: Settings | None = None) -> None:
        from include.mlops.features import feature_store

        self.settings = resolve_settings(settings)
        self.store = feature_store(self.settings)
        service = self.store.get_feature_service(FEATURE_SERVICE_NAME)
        on_demand = {v.name: v for v in self.store.list_on_demand_feature_views()}
        refs: list[str] = []
        transforms: list[_Transform] = []
        for projection in service.feature_view_projections:
            odfv = on_demand.get(projection.name)
            if odfv is None:
                refs += [f"{projection.name}:{f.name}" for f in projection.features]
                continue
            transforms.append(
                _Transform(
                    odfv.name, odfv.feature_transformation.udf, tuple(f.name for f in projection.features)
                )
            )
            for source in odfv.source_feature_view_projections.values():
                refs += [f"{source.name}:{f.name}" for f in source.features]
        self.refs: tuple[str, ...] = tuple(dict.fromkeys(refs))
        self._view_of = dict(reversed(r.split(":", 1)) for r in self.refs)
        self._describe_views()
        self.transforms: tuple[_Transform, ...] = tuple(transforms)
        served = [*(r.split(":", 1)[1] for r in self.refs), *(o for t in transforms for o in t.outputs)]
        missing = [c for c in FEATURE_COLUMNS if c not in served]
        if missing:
            raise RuntimeError(f"feature service {FEATURE_SERVICE_NAME!r} does not serve {missing}")

    def _describe_views(self) -> None:
        """Per feature view read: its TTL, its first feature (whose timestamp is the snapshot's), its
        text features; per entity, the view whose freshness is reported."""
        self._ttl: dict[str, dt.timedelta] = {}
        self._first: dict[str, str] = {}
        self._text: set[str] = set()
        self.entities: dict[str, str] = {}
        """The view whose snapshot each entity's freshness reports, by entity name (``customer``)."""
        for name, view_name in self._view_of.items():
            if view_name in self._ttl:
                continue
            view = self.store.get_feature_view(view_name)
            self._ttl[view_name] = view.ttl or dt.timedelta(0)
            self._first[view_name] = name
            # Text features stay Python objects; every other one becomes a float64 column at once
            # (None: NaN), which is what the transformations and the scorer make of them anyway.
            self._text.update(f.name for f in view.features if f.dtype.to_value_type().name == "STRING")
            for entity in view.entities:
                self.entities.setdefault(entity, view_name)

    def refresh(self) -> None:
        """Re-read Feast's registry now (off the request path: its cache would expire on one)."""
        self.store.refresh_registry()

    def lookup(self, payments: Sequence[dict[str, Any]]) -> tuple[pd.DataFrame, dict[str, list[Freshness]]]:
        """The payments with the feature service's features, in order, and each entity's freshness.

        The frame holds the payments' own fields, then every column of :data:`FEATURE_COLUMNS`
        (NaN or None where the store has nothing for the entity).
        """
        import numpy as np
        import pandas as pd

        rows = [{key: p[key] for key in ENTITY_KEYS} for p in payments]
        response = self.store.get_online_features(features=list(self.refs), entity_rows=rows)
        names = list(response.proto.metadata.feature_names.val)
        values = response.to_dict()
        columns: dict[str, Any] = {key: [p.get(key) for p in payments] for key in payments[0]}
        events = pd.DatetimeIndex(columns["event_timestamp"]).tz_convert("UTC")
        columns["event_timestamp"] = events
        freshness, unused = self._freshness(response, names, events)
        for name in names:
            if name in ENTITY_KEYS:
                continue
            text = name in self._text
            column = values[name] if text else np.asarray(values[name], dtype="float64")
            stale = unused[self._view_of[name]]
            if stale.any():
                # As offline: a snapshot out of its time range serves no features.
                column = (
                    [None if x else v for x, v in zip(stale, column, strict=True)]
                    if text
                    else np.where(stale, np.nan, column)
                )
            columns[name] = column
        frame = pd.DataFrame(columns)
        computed = {}
        for transform in self.transforms:
            out = transform.udf(frame)
            computed.update({name: out[name].to_numpy() for name in transform.outputs})
        frame = pd.concat([frame, pd.DataFrame(computed, index=frame.index)], axis=1)
        return frame, freshness

    def _freshness(
        self, response: Any, names: list[str], events: pd.DatetimeIndex
    ) -> tuple[dict[str, list[Freshness]], dict[str, np.ndarray]]:
        """Per entity, the snapshot each payment found; per view, which payments may not use it.

        A snapshot serves a payment when it is not later than the payment and not older than the
        view's TTL at the payment's time: what the offline store's point-in-time join allows.
        """
        import numpy as np

        freshness: dict[str, list[Freshness]] = {}
        unused: dict[str, np.ndarray] = {}
        for view, first in self._first.items():
            vector = response.proto.results[names.index(first)]
            stamps = [ts.seconds for ts in vector.event_timestamps]
            if len(stamps) != len(events):
                raise RuntimeError(f"the online store answered {len(stamps)} rows for {len(events)} payments")
            as_of = [dt.datetime.fromtimestamp(t, dt.UTC) if t > 0 else None for t in stamps]
            ttl = self._ttl[view]
            used = [
                a is not None and a <= e and (not ttl or e - a <= ttl)
                for a, e in zip(as_of, events.to_pydatetime(), strict=True)
            ]
            unused[view] = ~np.asarray(used, dtype=bool)
            for entity in (e for e, v in self.entities.items() if v == view):
                freshness[entity] = [Freshness(a, u) for a, u in zip(as_of, used, strict=True)]
        return freshness, unused

    def probe(self) -> None:
        """Read one unknown entity: raises when the online store cannot be read (not ready)."""
        self.store.get_online_features(
            features=list(self.refs[:1]), entity_rows=[dict.fromkeys(ENTITY_KEYS, "__readiness_probe__")]
        ).to_dict()
