"""The training knobs (``MLOPS_TRAIN_*``): read once into :class:`TrainingSettings`, a bad value named."""

from __future__ import annotations

import pytest

from include.mlops.core.policies import TrainingSettings
from include.mlops.core.settings import SettingsError


def test_unset_knobs_take_their_documented_defaults() -> None:
    knobs = TrainingSettings.from_env({})
    assert (knobs.device, knobs.threads) == ("auto", 0)
    assert (knobs.negatives_per_positive, knobs.max_rounds) == (20, 600)
    assert (knobs.max_rows, knobs.max_oot_rows) == (2_000_000, 1_000_000)


def test_set_knobs_are_parsed() -> None:
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
def test_a_bad_knob_is_refused_naming_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        TrainingSettings.from_env({variable: value})


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TRAIN_MAX_OOT_ROWS", "1234")
    assert TrainingSettings.from_env().max_oot_rows == 1234
