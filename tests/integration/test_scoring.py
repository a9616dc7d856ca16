"""Batch scoring of a day with the champion and a shadow challenger (embedded profile).

The world (:mod:`tests.integration.scored_world`) is built once per session and shared with
test_drift.py. The tests here score days the drift tests never read, and leave the registry's
aliases as found.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from include.mlops import registry
from include.mlops.core import schema
from include.mlops.core.schema import LABEL
from include.mlops.core.settings import load_settings
from tests.integration.scored_world import DAYS, FIRST_SCORED, SCORING_DAY, World, day

RESCORED_DAY = 2
"""The day the backfill test scores, promotes and rescores: unscored by the world, unread by drift."""

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration


def _distinct_challenger(s: Settings, world: World) -> int:
    """Register a small, different model (same inputs as the champion) as a new version."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    client = registry.configure_mlflow(s)
    columns = registry.feature_columns(f"models:/{s.model_name}/{world.champion_version}")
    reference = registry.reference_sample(world.champion_run_id, s)
    x = reference[columns].astype("float64")
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3, "nthread": 1, "seed": 3},
        xgb.DMatrix(x, label=reference[LABEL].to_numpy()),
        num_boost_round=5,
    )
    experiment_id = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    with mlflow.start_run(experiment_id=experiment_id, run_name="shadow-challenger"):
        info = mlflow.xgboost.log_model(
            booster,
            name=registry.MODEL_ARTIFACT,
            signature=ModelSignature(inputs=Schema([ColSpec(DataType.double, c) for c in columns])),
            pip_requirements=registry.pip_requirements(),
        )
    version = int(mlflow.register_model(info.model_uri, s.model_name).version)
    assert version != world.champion_version
    return version


def _transactions(s: Settings, n: int):
    import pyarrow.parquet as pq

    from include.mlops import lake

    loc = lake.location(s.lake_url).join("transactions", f"dt={day(n)}", "part-00000.parquet")
    return pq.read_table(loc.path)


def test_scoring_a_day_twice_leaves_one_copy(world_settings: Settings, scored_world: World) -> None:
    from include.mlops import features, lake, scoring

    s = world_settings
    first = scoring.score_day(day(SCORING_DAY), s)
    folder = scoring.predictions_location(day(SCORING_DAY), s)
    path = Path(folder.join(lake.DATA_FILE).path)
    before = path.read_bytes()
    # A stray file of an earlier, interrupted write must not survive a rerun either.
    lake.write_bytes(folder.join("part-00001.parquet"), before)

    second = scoring.score_day(day(SCORING_DAY), s)
    assert sorted(p.name for p in path.parent.iterdir()) == [lake.DATA_FILE]
    assert path.read_bytes() == before
    assert first["rows"] == second["rows"] == _transactions(s, SCORING_DAY).num_rows
    assert first["champion_version"] == scored_world.champion_version
    assert first["challenger_version"] is None

    frame = scoring.read_predictions(day(SCORING_DAY), s)
    assert frame["transaction_id"].is_unique
    assert set(frame["transaction_id"]) == set(
        _transactions(s, SCORING_DAY).column("transaction_id").to_pylist()
    )
    assert {*schema.PREDICTION_KEYS, *features.FEATURE_COLUMNS, "score_champion", "champion_version"} <= set(
        frame.columns
    )
    assert frame["score_champion"].between(0, 1).all() and frame["score_champion"].std() > 0
    assert (frame["champion_version"] == scored_world.champion_version).all()
    assert frame["score_challenger"].isna().all() and (frame["challenger_version"] == -1).all()


def test_the_shadow_challenger_is_scored_when_distinct(world_settings: Settings, scored_world: World) -> None:
    import numpy as np

    from include.mlops import scoring

    s = world_settings
    client = registry.configure_mlflow(s)
    challenger = _distinct_challenger(s, scored_world)
    client.set_registered_model_alias(s.model_name, "challenger", str(challenger))
    try:
        # The day already has predictions (of the champion alone): the current aliases are asked for.
        result = scoring.score_day(day(SCORING_DAY), s, rescore_with_current_champion=True)
        frame = scoring.read_predictions(day(SCORING_DAY), s)
    finally:
        client.delete_registered_model_alias(s.model_name, "challenger")
    assert result["champion_version"] == scored_world.champion_version
    assert result["challenger_version"] == challenger
    assert (frame["challenger_version"] == challenger).all()
    assert frame["score_challenger"].notna().all()
    expected = registry.load_scorer(f"models:/{s.model_name}/{challenger}")(frame)
    assert np.allclose(frame["score_challenger"].to_numpy(), expected, atol=1e-6)
    champion = registry.load_scorer(f"models:/{s.model_name}/{scored_world.champion_version}")(frame)
    assert np.allclose(frame["score_champion"].to_numpy(), champion, atol=1e-6)
    # A different model: the shadow scores are its own, not a copy of the champion's.
    assert not np.allclose(frame["score_challenger"].to_numpy(), frame["score_champion"].to_numpy())

    # The same version under both aliases is no challenger: nothing is scored in shadow.
    client.set_registered_model_alias(s.model_name, "challenger", str(scored_world.champion_version))
    try:
        again = scoring.score_day(day(SCORING_DAY), s, rescore_with_current_champion=True)
    finally:
        client.delete_registered_model_alias(s.model_name, "challenger")
    assert again["challenger_version"] is None
    assert scoring.read_predictions(day(SCORING_DAY), s)["score_challenger"].isna().all()


def test_without_champion_nothing_is_scored(world_settings: Settings, tmp_path: Path) -> None:
    from include.mlops import scoring

    s = load_settings(
        {
            "MLOPS_HOME": str(world_settings.home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}",
            "MLOPS_MLFLOW_ARTIFACT_URL": str(tmp_path / "artifacts"),
        }
    )
    with pytest.raises(scoring.NoChampionError, match="no 'champion' alias"):
        scoring.score_day(day(SCORING_DAY), s, rescore_with_current_champion=True)
    # The world scored this day, with a version this registry does not hold: a rerun cannot
    # reproduce it (and raises before it writes anything).
    with pytest.raises(scoring.RecordedModelGone, match="no longer in the registry"):
        scoring.score_day(day(FIRST_SCORED), s)
    with pytest.raises(FileNotFoundError, match="run score_transactions first"):
        scoring.read_predictions(day(DAYS + 5), s)


def test_a_rerun_scores_with_the_recorded_versions_unless_asked(
    world_settings: Settings, scored_world: World
) -> None:
    from include.mlops import lake, scoring

    s = world_settings
    client = registry.configure_mlflow(s)
    v1 = scored_world.champion_version
    target = day(RESCORED_DAY)
    path = Path(scoring.predictions_file(target, s).path)
    assert not path.exists()
    first = scoring.score_day(target, s)
    assert (first["champion_version"], first["versions_from"]) == (v1, "registry aliases")
    scored_by_v1 = path.read_bytes()

    v2 = _distinct_challenger(s, scored_world)
    client.set_registered_model_alias(s.model_name, "champion", str(v2))
    client.set_registered_model_alias(s.model_name, "challenger", str(v1))
    try:
        # A backfill after the promotion: the day keeps the versions that scored it.
        rerun = scoring.score_day(target, s)
        assert (rerun["champion_version"], rerun["challenger_version"]) == (v1, None)
        assert rerun["versions_from"] == "recorded predictions"
        assert path.read_bytes() == scored_by_v1
        assert sorted(p.name for p in path.parent.iterdir()) == [lake.DATA_FILE]

        # Asked for: the current champion, and the current challenger in shadow.
        current = scoring.score_day(target, s, rescore_with_current_champion=True)
        frame = scoring.read_predictions(target, s)
        assert (current["champion_version"], current["challenger_version"]) == (v2, v1)
        assert (frame["champion_version"] == v2).all() and (frame["challenger_version"] == v1).all()
        assert path.read_bytes() != scored_by_v1
        # ... which the next rerun keeps, challenger included.
        assert scoring.score_day(target, s)["challenger_version"] == v1
    finally:
        client.set_registered_model_alias(s.model_name, "champion", str(v1))
        client.delete_registered_model_alias(s.model_name, "challenger")

    # The recorded champion is gone: the rerun says how to go on, and nothing is rewritten.
    scored_by_v2 = path.read_bytes()
    client.delete_model_version(s.model_name, str(v2))
    with pytest.raises(scoring.RecordedModelGone, match=rf"v{v2} .*rescore_with_current_champion=true"):
        scoring.score_day(target, s)
    assert path.read_bytes() == scored_by_v2
    back = scoring.score_day(target, s, rescore_with_current_champion=True)
    assert (back["champion_version"], back["challenger_version"]) == (v1, None)
    assert path.read_bytes() == scored_by_v1


def _scored_at_once(s: Settings, n: int, champion: int, challenger: int):
    """Day ``n``'s predictions as the whole day scored in one piece: every payment's features in
    one point-in-time join, each model over the whole frame, sorted by transaction id."""
    from include.mlops import features, scoring

    frame = features.with_features(_transactions(s, n).to_pandas(), s)
    champion_uri = registry.model_uri(champion, s)
    out = frame[list(schema.PREDICTION_KEYS)].copy()
    for column in registry.feature_columns(champion_uri):
        out[column] = frame[column].astype("float64")
    out["score_champion"] = registry.load_scorer(champion_uri)(frame)
    threshold = registry.operating_threshold(registry.configure_mlflow(s), s.model_name, champion)
    out["flagged_champion"] = scoring.decision_flags(out["score_champion"].to_numpy(), threshold)
    out["champion_version"] = champion
    out["score_challenger"] = registry.load_scorer(registry.model_uri(challenger, s))(frame)
    out["challenger_version"] = challenger
    return out.sort_values("transaction_id", kind="mergesort").reset_index(drop=True)


def test_a_day_scored_in_chunks_is_the_day_scored_at_once(
    world_settings: Settings, scored_world: World
) -> None:
    import dataclasses

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.mlops import lake, scoring

    s = world_settings
    small = dataclasses.replace(s, chunk_rows=997)
    client = registry.configure_mlflow(s)
    target = day(SCORING_DAY)
    predictions = Path(scoring.predictions_file(target, s).path)
    transactions = Path(lake.partition_file("transactions", target, s).path)
    kept = {path: path.read_bytes() if path.exists() else None for path in (predictions, transactions)}
    challenger = _distinct_challenger(s, scored_world)
    client.set_registered_model_alias(s.model_name, "challenger", str(challenger))
    try:
        result = scoring.score_day(target, small, rescore_with_current_champion=True)
        chunked = predictions.read_bytes()
        # A partition not in transaction id order (ingestion sorts it; a copy made by hand may
        # not be) is scored in that order all the same.
        rows = _transactions(s, SCORING_DAY).num_rows
        shuffled = _transactions(s, SCORING_DAY).take(np.random.default_rng(3).permutation(rows))
        lake.write_parquet(lake.partition_file("transactions", target, s), shuffled)
        scoring.score_day(target, small, rescore_with_current_champion=True)
        from_shuffled = predictions.read_bytes()
    finally:
        client.delete_registered_model_alias(s.model_name, "challenger")
        # The day as the other tests expect it: unscored, or scored by the champion alone.
        for path, data in kept.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)

    expected = _scored_at_once(s, SCORING_DAY, scored_world.champion_version, challenger)
    at_once = pq.ParquetFile(
        pa.BufferReader(lake.encode_parquet(pa.Table.from_pandas(expected, preserve_index=False)))
    )
    # Three chunks, three row groups: the same columns, rows, order, flags and score bits.
    streamed = pq.ParquetFile(pa.BufferReader(chunked))
    assert (streamed.metadata.num_row_groups, at_once.metadata.num_row_groups) == (3, 1)
    assert streamed.schema_arrow.equals(at_once.schema_arrow, check_metadata=True)
    frame = streamed.read().to_pandas()
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    for column in ("score_champion", "score_challenger"):
        assert np.array_equal(
            frame[column].to_numpy().view(np.int64), expected[column].to_numpy().view(np.int64)
        )
    assert result["rows"] == len(expected) == rows > 2 * 997
    assert result["challenger_version"] == challenger
    assert result["flagged"] == int(expected["flagged_champion"].sum())
    assert result["flagged_at_0.5"] == int((expected["score_champion"] >= 0.5).sum())
    assert from_shuffled == chunked


def test_features_in_chunks_are_the_features_of_the_whole_frame(world_settings: Settings) -> None:
    import pandas as pd

    from include.mlops import features

    s = world_settings
    # Two days' payments mixed: slices that span both days, in no key or time order.
    payments = pd.concat([_transactions(s, n).to_pandas() for n in (SCORING_DAY, SCORING_DAY + 1)])
    payments = payments.sample(frac=1, random_state=5)
    whole = features.with_features(payments, s)
    chunks = list(features.features_in_chunks(payments, 997, s))
    assert [len(c) for c in chunks[:-1]] == [997] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= 997
    assert len(chunks) == -(-len(payments) // 997) > 3
    pd.testing.assert_frame_equal(pd.concat(chunks), whole, check_exact=True)

    (empty,) = features.features_in_chunks(payments.iloc[:0], 997, s)
    assert empty.empty and list(empty.columns) == list(whole.columns)
    with pytest.raises(ValueError, match="positive number of rows"):
        next(features.features_in_chunks(payments, 0, s))
