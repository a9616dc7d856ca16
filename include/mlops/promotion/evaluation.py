"""Both models scored on the challenger's out-of-time days, rebuilt exactly as training saw them.

:func:`version_for_run` finds the version an Airflow run registered (:func:`challenger_run` its
training run, for the UI's link); :func:`evaluate` reads the
OOT days recorded on it (tags ``oot_start`` / ``oot_end``), rebuilds their rows from the lake and
Feast (:func:`include.mlops.training.oot_frame`) and scores them with both models. A model that
cannot be scored is not an error here: its :class:`~.policy.ModelScores` says why, and the
policy judges it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.policy import ModelScores

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.core.settings import Settings


class PromotionError(RuntimeError):
    """Promotion cannot proceed; the message says why and what to do."""


def _quote(value: str) -> str:
    """``value`` as a quoted literal of an MLflow search filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def version_for_run(airflow_run_id: str, settings: Settings | None = None) -> int:
    """The newest version registered by the Airflow run ``airflow_run_id`` (its version tag)."""
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    found = client.search_model_versions(
        f"name = {_quote(s.model_name)} and tags.airflow_run_id = {_quote(airflow_run_id)}"
    )
    if not found:
        raise PromotionError(
            f"no version of {s.model_name} is tagged airflow_run_id={airflow_run_id!r}: did the train task "
            "of that run succeed and register a model?"
        )
    return max(int(v.version) for v in found)


def run_of(client: Any, name: str, version: int) -> tuple[str | None, str | None]:
    """``(experiment_id, run_id)`` of the training run of ``version`` (``None`` when unknown)."""
    run_id = client.get_model_version(name, str(version)).run_id
    if not run_id:
        return None, None
    return client.get_run(run_id).info.experiment_id, run_id


def challenger_run(airflow_run_id: str, settings: Settings | None = None) -> tuple[str | None, str | None]:
    """``(experiment_id, run_id)`` of the training run of the version ``airflow_run_id`` registered."""
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    return run_of(client, s.model_name, version_for_run(airflow_run_id, s))


@dataclass
class Evaluation:
    """Both models scored on the challenger's OOT rows, with the data's lineage."""

    challenger: ModelScores
    champion: ModelScores | None
    labels: np.ndarray
    oot_start: dt.date
    oot_end: dt.date
    rows: int
    data_fingerprint: str
    training_fingerprint: str | None
    frame: pd.DataFrame = field(repr=False)

    @property
    def data_unchanged(self) -> bool | None:
        """Whether the OOT partitions are byte-identical to what training read (None if unknown)."""
        if self.training_fingerprint is None:
            return None
        return self.data_fingerprint == self.training_fingerprint


def evaluate(
    challenger_version: int,
    champion_version: int | None,
    settings: Settings | None = None,
    frame: pd.DataFrame | None = None,
) -> Evaluation:
    """Score the challenger and the champion on the OOT days recorded on the challenger version.

    The rows are rebuilt from the lake and Feast exactly as the training run built them (pass
    ``frame``, the ``frame`` of an earlier :class:`Evaluation`, to reuse rows already built). The
    champion may be ``None`` (or the challenger itself, in which case it is not scored twice).
    """
    # The schema imports pyarrow: kept out of the package's import.
    from include.mlops.core.schema import LABEL

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    version = client.get_model_version(s.model_name, str(challenger_version))
    oot_start, oot_end = _oot_days(version, s.model_name)
    if frame is None:
        frame = _rebuild_oot_rows(oot_start, oot_end, s)
    challenger = _score(client, challenger_version, frame, s)
    champion = None
    if champion_version is not None and champion_version != challenger_version:
        champion = _score(client, champion_version, frame, s)
    return Evaluation(
        challenger=challenger,
        champion=champion,
        labels=frame[LABEL].to_numpy(dtype="int64"),
        oot_start=oot_start,
        oot_end=oot_end,
        rows=len(frame),
        data_fingerprint=str(frame.attrs.get("fingerprint", "")),
        training_fingerprint=_training_fingerprint(client, version),
        frame=frame,
    )


def _oot_days(version: Any, model_name: str) -> tuple[dt.date, dt.date]:
    """The first and last OOT day recorded on a model version by training."""
    try:
        start, end = version.tags["oot_start"], version.tags["oot_end"]
    except KeyError:
        raise PromotionError(
            f"version {version.version} of {model_name} has no oot_start/oot_end tags: it was not "
            "registered by include.mlops.training and cannot be judged"
        ) from None
    return dt.date.fromisoformat(start), dt.date.fromisoformat(end)


def _training_fingerprint(client: Any, version: Any) -> str | None:
    """The fingerprint of the OOT partitions as the version's training run read them (if recorded)."""
    return client.get_run(version.run_id).data.tags.get("oot_fingerprint") if version.run_id else None


def _rebuild_oot_rows(start: dt.date, end: dt.date, s: Settings) -> pd.DataFrame:
    """The OOT rows as training built them, their partitions' fingerprint in ``attrs["fingerprint"]``."""
    from include.mlops.training import fingerprint_digest, oot_frame

    frame, prints = oot_frame(start, end, s)
    frame.attrs["fingerprint"] = fingerprint_digest(prints)
    return frame


def _score(client: Any, version: int, frame: pd.DataFrame, s: Settings) -> ModelScores:
    """One version's scores on ``frame`` with its recorded operating threshold, or why there are no
    scores (unreadable signature, missing columns, a scoring error)."""
    uri = registry.model_uri(version, s)
    try:
        columns = registry.feature_columns(uri)
    except Exception as error:
        return ModelScores(version, None, error=f"cannot read the signature of {uri}: {error}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        return ModelScores(version, None, columns, missing)
    try:
        scores = registry.load_scorer(uri)(frame)
    except Exception as error:
        return ModelScores(version, None, columns, error=f"{type(error).__name__}: {error}")
    threshold = registry.operating_threshold(client, s.model_name, version)
    return ModelScores(version, scores, columns, threshold=threshold)
