"""The knobs of training, promotion and drift: defaults need nothing, overrides work, bad values say why."""

from __future__ import annotations

import pytest

from include.mlops.core.policies import DRIFT_FEATURES, DriftPolicy, PromotionPolicy, TrainingSettings
from include.mlops.core.settings import SettingsError


def test_defaults_need_no_environment() -> None:
    assert TrainingSettings.from_env({}) == TrainingSettings()
    assert PromotionPolicy.from_env({}) == PromotionPolicy()
    assert DriftPolicy.from_env({}).features == DRIFT_FEATURES


def test_every_knob_is_read_from_its_variable() -> None:
    training = TrainingSettings.from_env({"MLOPS_TRAIN_MAX_ROUNDS": "300", "MLOPS_TRAIN_DEVICE": "cpu"})
    assert (training.max_rounds, training.device) == (300, "cpu")
    promotion = PromotionPolicy.from_env({"MLOPS_PROMOTION_MARGIN": "0.01"}, seed=11)
    assert (promotion.margin, promotion.seed) == (0.01, 11)
    drift = DriftPolicy.from_env(
        {"MLOPS_DRIFT_FEATURES": " is_online, is_night ", "MLOPS_DRIFT_PREDICTION": "off"}
    )
    assert drift.features == ("is_online", "is_night")
    assert drift.prediction_counts is False


def test_as_env_round_trips() -> None:
    drift = DriftPolicy.from_env({"MLOPS_DRIFT_COOLDOWN_DAYS": "3", "MLOPS_DRIFT_PREDICTION": "false"})
    assert DriftPolicy.from_env(drift.as_env()) == drift
    training = TrainingSettings.from_env({"MLOPS_TRAIN_THREADS": "2"})
    assert TrainingSettings.from_env(training.as_env()) == training


@pytest.mark.parametrize(
    ("cls", "environ", "message"),
    [
        (TrainingSettings, {"MLOPS_TRAIN_DEVICE": "tpu"}, "MLOPS_TRAIN_DEVICE='tpu'"),
        (TrainingSettings, {"MLOPS_TRAIN_MAX_ROWS": "many"}, "MLOPS_TRAIN_MAX_ROWS='many' is not an integer"),
        (PromotionPolicy, {"MLOPS_PROMOTION_CONFIDENCE": "1.5"}, "must be between 0 and 1"),
        (DriftPolicy, {"MLOPS_DRIFT_SHARE": "1.5"}, r"MLOPS_DRIFT_SHARE=1\.5 must be in"),
        (DriftPolicy, {"MLOPS_DRIFT_PREDICTION": "maybe"}, "MLOPS_DRIFT_PREDICTION='maybe'"),
    ],
)
def test_bad_values_name_their_variable(cls: type, environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        cls.from_env(environ)
