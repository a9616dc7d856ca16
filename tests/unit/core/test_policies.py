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


# --------------------------------------------------------------------------------------------------
# Training


def test_unset_training_knobs_take_their_documented_defaults() -> None:
    knobs = TrainingSettings.from_env({})
    assert (knobs.device, knobs.threads) == ("auto", 0)
    assert (knobs.negatives_per_positive, knobs.max_rounds) == (20, 600)
    assert (knobs.max_rows, knobs.max_oot_rows) == (2_000_000, 1_000_000)


def test_set_training_knobs_are_parsed() -> None:
    knobs = TrainingSettings.from_env(
        {
            "MLOPS_TRAIN_DEVICE": "cuda",
            "MLOPS_TRAIN_NEGATIVES_PER_POSITIVE": "5",
            "MLOPS_TRAIN_MAX_ROWS": "1000",
            "MLOPS_TRAIN_MAX_OOT_ROWS": " 2000 ",
            "MLOPS_TRAIN_MAX_ROUNDS": "300",
            "MLOPS_TRAIN_THREADS": "1",
        }
    )
    assert knobs == TrainingSettings("cuda", 5, 1000, 2000, 300, 1)
    assert TrainingSettings.from_env({"MLOPS_TRAIN_MAX_ROUNDS": ""}).max_rounds == 600, "blank is unset"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MLOPS_TRAIN_MAX_ROWS", "lots", "MLOPS_TRAIN_MAX_ROWS='lots' is not an integer"),
        ("MLOPS_TRAIN_DEVICE", "tpu", "MLOPS_TRAIN_DEVICE='tpu': expected auto, cpu or cuda"),
        ("MLOPS_TRAIN_MAX_ROUNDS", "0", "MLOPS_TRAIN_MAX_ROUNDS=0 must be at least 1"),
        (
            "MLOPS_TRAIN_NEGATIVES_PER_POSITIVE",
            "0",
            "MLOPS_TRAIN_NEGATIVES_PER_POSITIVE=0 must be at least 1",
        ),
        ("MLOPS_TRAIN_THREADS", "-1", "MLOPS_TRAIN_THREADS=-1 must not be negative"),
    ],
)
def test_a_bad_training_knob_is_refused_naming_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        TrainingSettings.from_env({variable: value})


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TRAIN_MAX_OOT_ROWS", "1234")
    assert TrainingSettings.from_env().max_oot_rows == 1234


# --------------------------------------------------------------------------------------------------
# Drift


def test_the_drift_policy_reads_its_knobs_from_the_environment() -> None:
    policy = DriftPolicy.from_env(
        {
            "MLOPS_DRIFT_SHARE": "0.5",
            "MLOPS_DRIFT_PREDICTION": "false",
            "MLOPS_DRIFT_PERFORMANCE_DROP": "0.1",
            "MLOPS_DRIFT_COOLDOWN_DAYS": "3",
            "MLOPS_DRIFT_SAMPLE_ROWS": "20000",
            "MLOPS_DRIFT_FEATURES": "is_online, amount_zscore_30d",
        }
    )
    assert (policy.drift_share, policy.prediction_counts, policy.performance_drop) == (0.5, False, 0.1)
    assert (policy.cooldown_days, policy.sample_rows) == (3, 20_000)
    assert policy.features == ("is_online", "amount_zscore_30d")
    assert policy.as_dict()["features"] == ["is_online", "amount_zscore_30d"]
    assert DriftPolicy.from_env({}) == DriftPolicy()
    assert DriftPolicy().features == DRIFT_FEATURES


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MLOPS_DRIFT_SHARE": "1.5"}, r"drift policy: MLOPS_DRIFT_SHARE=1\.5 must be in"),
        ({"MLOPS_DRIFT_COOLDOWN_DAYS": "a week"}, "MLOPS_DRIFT_COOLDOWN_DAYS='a week' is not an integer"),
        ({"MLOPS_DRIFT_PREDICTION": "maybe"}, "MLOPS_DRIFT_PREDICTION='maybe': use true or false"),
        ({"MLOPS_DRIFT_SAMPLE_ROWS": "999"}, "MLOPS_DRIFT_SAMPLE_ROWS=999 must be at least 1000"),
        ({"MLOPS_DRIFT_PSI_FLAGS": "0"}, "MLOPS_DRIFT_PSI_FLAGS=0.0 must be positive"),
    ],
)
def test_a_bad_drift_knob_names_its_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        DriftPolicy.from_env(environ)
