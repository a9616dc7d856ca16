"""Both models scored on the challenger's out-of-time days, rebuilt exactly as training saw them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from include.mlops import registry
from include.mlops.core.schema import LABEL
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.policy import ModelScores

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.core.settings import Settings


class PromotionError(RuntimeError):
    """Promotion cannot proceed; the message says why and what to do."""


def _quote(value: str) -> str:
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


def _score(name: str, version: int, frame: pd.DataFrame) -> ModelScores:
    uri = f"models:/{name}/{version}"
    try:
        columns = registry.feature_columns(uri)
    except Exception as error:
        return ModelScores(version, None, error=f"cannot read the signature of {uri}: {error}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        return ModelScores(version, None, columns, missing)
    try:
        return ModelScores(version, registry.load_scorer(uri)(frame), columns)
    except Exception as error:
        return ModelScores(version, None, columns, error=f"{type(error).__name__}: {error}")


def evaluate(
    challenger_version: int,
    champion_version: int | None,
    settings: Settings | None = None,
    frame: pd.DataFrame | None = None,
) -> Evaluation:
    """Score the challenger and the champion on the OOT days recorded on the challenger version.

    The rows are rebuilt from the lake and Feast exactly as the training run built them (pass
    ``frame`` to reuse rows already built). The champion may be ``None`` (or the challenger itself,
    in which case it is not scored twice).
    """
    from include.mlops.training import fingerprint_digest, oot_frame

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    mv = client.get_model_version(s.model_name, str(challenger_version))
    try:
        oot_start = dt.date.fromisoformat(mv.tags["oot_start"])
        oot_end = dt.date.fromisoformat(mv.tags["oot_end"])
    except KeyError:
        raise PromotionError(
            f"version {challenger_version} of {s.model_name} has no oot_start/oot_end tags: it was not "
            "registered by include.mlops.training and cannot be judged"
        ) from None
    training_print = client.get_run(mv.run_id).data.tags.get("oot_fingerprint") if mv.run_id else None
    data_print = ""
    if frame is None:
        frame, prints = oot_frame(oot_start, oot_end, s)
        data_print = fingerprint_digest(prints)
    else:
        data_print = str(frame.attrs.get("fingerprint", ""))
    frame.attrs["fingerprint"] = data_print
    challenger = _score(s.model_name, challenger_version, frame)
    champion = None
    if champion_version is not None and champion_version != challenger_version:
        champion = _score(s.model_name, champion_version, frame)
    return Evaluation(
        challenger=challenger,
        champion=champion,
        labels=frame[LABEL].to_numpy(dtype="int64"),
        oot_start=oot_start,
        oot_end=oot_end,
        rows=len(frame),
        data_fingerprint=data_print,
        training_fingerprint=training_print,
        frame=frame,
    )
