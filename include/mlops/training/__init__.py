"""Training: the window of labelled days, the dataset from the lake and Feast, the model, its evaluation,
its lineage, and :func:`train`, the entrypoint both training backends run (``python -m include.mlops train``).

One module per step of :func:`train`, in the order it runs them:

* :mod:`.window`: which days a run uses (:class:`Window`), and whether the lake holds them;
* :mod:`.labels`: each payment with its latest label report, a day at a time (:class:`LabelledDay`);
* :mod:`.dataset`: labelled rows, down-sampled and weighted, with their point-in-time features
  (:class:`TrainingSet`); :func:`oot_frame` rebuilds the OOT rows for promotion;
* :mod:`.stream`: those features read chunk by chunk into float32 matrices (:class:`FeatureRows`)
  and fed to XGBoost batch by batch (:func:`quantile_matrix`);
* :mod:`.model`: XGBoost (GPU when one answers) and the logistic-regression baseline
  (:class:`FitResult`);
* :mod:`.evaluation`: both judged on the OOT days, and the drift monitor's reference sample
  (:class:`Evaluation`);
* :mod:`.lineage`: code version, partition fingerprints, validation results (:class:`Lineage`);
* :mod:`.registration`: one MLflow run and one registered ``challenger`` version (:class:`Registered`);
* :mod:`.trainer`: :func:`train`, the steps above in order.

The knobs are :class:`~include.mlops.core.policies.TrainingSettings`; :func:`train` reads them once.
"""

from include.mlops.training.dataset import (
    WEIGHT,
    LabelledDays,
    TrainingSet,
    build_dataset,
    oot_frame,
    read_oot_days,
    read_training_days,
    stable_uniform,
)
from include.mlops.training.evaluation import (
    REFERENCE_ROWS,
    Evaluation,
    draw_reference_sample,
    evaluate,
    operating_threshold,
    reference_positions,
)
from include.mlops.training.labels import LabelledDay, labelled_days, latest_labels
from include.mlops.training.lineage import (
    SCHEMA_SAMPLE_ROWS,
    Lineage,
    code_sha256,
    code_version,
    fingerprint_digest,
    input_datasets,
    lake_dataset,
    package_version,
    partition_fingerprint,
    record_lineage,
    snapshot_fingerprints,
    validation_results,
)
from include.mlops.training.model import (
    EARLY_STOPPING_ROUNDS,
    MAX_BASELINE_ROWS,
    BoostingReport,
    FitResult,
    baseline_rows,
    booster_device,
    detect_device,
    fit_baseline,
    fit_boosting,
    fit_models,
    fit_xgboost,
    training_threads,
    xgb_params,
)
from include.mlops.training.registration import (
    FEATURE_IMPORTANCE_ARTIFACT,
    Registered,
    TrainingRequest,
    log_and_register,
)
from include.mlops.training.stream import (
    FeatureRows,
    frame_with_features,
    mapped_rows,
    predict_in_batches,
    quantile_matrix,
    read_features,
    release_arrow_memory,
    spill_rows,
)
from include.mlops.training.trainer import train
from include.mlops.training.window import (
    VALIDATION_SHARE,
    TrainingDataError,
    Window,
    check_window,
    day_range,
    partition_files,
    training_window,
)

__all__ = [
    "EARLY_STOPPING_ROUNDS",
    "FEATURE_IMPORTANCE_ARTIFACT",
    "MAX_BASELINE_ROWS",
    "REFERENCE_ROWS",
    "SCHEMA_SAMPLE_ROWS",
    "VALIDATION_SHARE",
    "WEIGHT",
    "BoostingReport",
    "Evaluation",
    "FeatureRows",
    "FitResult",
    "LabelledDay",
    "LabelledDays",
    "Lineage",
    "Registered",
    "TrainingDataError",
    "TrainingRequest",
    "TrainingSet",
    "Window",
    "baseline_rows",
    "booster_device",
    "build_dataset",
    "check_window",
    "code_sha256",
    "code_version",
    "day_range",
    "detect_device",
    "draw_reference_sample",
    "evaluate",
    "fingerprint_digest",
    "fit_baseline",
    "fit_boosting",
    "fit_models",
    "fit_xgboost",
    "frame_with_features",
    "input_datasets",
    "labelled_days",
    "lake_dataset",
    "latest_labels",
    "log_and_register",
    "mapped_rows",
    "oot_frame",
    "operating_threshold",
    "package_version",
    "partition_files",
    "partition_fingerprint",
    "predict_in_batches",
    "quantile_matrix",
    "read_features",
    "read_oot_days",
    "read_training_days",
    "record_lineage",
    "reference_positions",
    "release_arrow_memory",
    "snapshot_fingerprints",
    "spill_rows",
    "stable_uniform",
    "train",
    "training_threads",
    "training_window",
    "validation_results",
    "xgb_params",
]
