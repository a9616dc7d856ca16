"""Training: the window of labelled days, the dataset from the lake and Feast, the model, its lineage, and
:func:`train`, the entrypoint both training backends run (``python -m include.mlops train``).

* :mod:`.window`: which days a run uses (:class:`Window`), and whether the lake holds them;
* :mod:`.dataset`: labelled rows, down-sampled and weighted, with their point-in-time features;
* :mod:`.model`: XGBoost (GPU when one answers) and the logistic-regression baseline;
* :mod:`.lineage`: code version, partition fingerprints, validation results;
* :mod:`.trainer`: :func:`train`, one MLflow run and one registered ``challenger`` version.
"""

from include.mlops.training.dataset import (
    MAX_OOT_ROWS,
    MAX_TRAIN_ROWS,
    NEGATIVES_PER_POSITIVE,
    WEIGHT,
    LabelledDays,
    oot_frame,
    read_oot_days,
    read_training_days,
)
from include.mlops.training.lineage import (
    code_sha256,
    code_version,
    fingerprint_digest,
    package_version,
    snapshot_fingerprints,
    validation_results,
)
from include.mlops.training.model import (
    EARLY_STOPPING_ROUNDS,
    MAX_ROUNDS,
    booster_device,
    detect_device,
    fit_baseline,
    fit_xgboost,
    training_threads,
    xgb_params,
)
from include.mlops.training.trainer import (
    MAX_BASELINE_ROWS,
    REFERENCE_ROWS,
    train,
)
from include.mlops.training.window import (
    VALIDATION_SHARE,
    TrainingDataError,
    Window,
    check_window,
    training_window,
)

__all__ = [
    "EARLY_STOPPING_ROUNDS",
    "MAX_BASELINE_ROWS",
    "MAX_OOT_ROWS",
    "MAX_ROUNDS",
    "MAX_TRAIN_ROWS",
    "NEGATIVES_PER_POSITIVE",
    "REFERENCE_ROWS",
    "VALIDATION_SHARE",
    "WEIGHT",
    "LabelledDays",
    "TrainingDataError",
    "Window",
    "booster_device",
    "check_window",
    "code_sha256",
    "code_version",
    "detect_device",
    "fingerprint_digest",
    "fit_baseline",
    "fit_xgboost",
    "oot_frame",
    "package_version",
    "read_oot_days",
    "read_training_days",
    "snapshot_fingerprints",
    "train",
    "training_threads",
    "training_window",
    "validation_results",
    "xgb_params",
]
