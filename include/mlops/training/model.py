"""The model and its baseline: XGBoost on the GPU when one really answers, a logistic regression beside it.

The device actually used is read back from the booster's configuration, never from its
parameters (a CUDA build on a machine without a GPU warns and trains on the CPU).
:func:`fit_models` is the training run's step: both models fitted on the same rows. XGBoost reads
its rows batch by batch (:mod:`.stream`); the baseline learns from at most
:data:`MAX_BASELINE_ROWS` of them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.core.policies import TrainingSettings
from include.mlops.training.stream import FeatureRows, quantile_matrix

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.training.dataset import TrainingSet


logger = logging.getLogger(__name__)

EARLY_STOPPING_ROUNDS = 50
"""Rounds without a better validation log-loss before boosting stops."""

MAX_BASELINE_ROWS = 500_000
"""Fit rows the baseline learns from at most (a uniform sample above it)."""


def booster_device(booster: Any) -> str:
    """The device XGBoost really used, from the booster's configuration (not from its parameters)."""
    return str(json.loads(booster.save_config())["learner"]["generic_param"]["device"])


def detect_device(requested: str = TrainingSettings.device) -> str:
    """``cuda`` if this XGBoost build has CUDA and a GPU answers a one-round probe, else ``cpu``.

    ``requested`` is the knob ``MLOPS_TRAIN_DEVICE``: ``auto`` probes, ``cpu`` forces the CPU,
    ``cuda`` is still probed and falls back to ``cpu`` with a warning when no GPU answers.
    """
    import warnings

    import numpy as np
    import xgboost as xgb

    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"MLOPS_TRAIN_DEVICE={requested!r}: expected auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    if not xgb.build_info().get("USE_CUDA"):
        if requested == "cuda":
            logger.warning(
                "MLOPS_TRAIN_DEVICE=cuda but this XGBoost build has no CUDA support: training on cpu"
            )
        return "cpu"
    rng = np.random.default_rng(0)
    probe = xgb.DMatrix(rng.random((32, 2)), label=rng.integers(0, 2, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 0}, probe, 1)
    device = "cuda" if booster_device(booster).startswith("cuda") else "cpu"
    if requested == "cuda" and device == "cpu":
        logger.warning("MLOPS_TRAIN_DEVICE=cuda but no GPU answered: training on cpu")
    return device


def training_threads(configured: int = TrainingSettings.threads) -> int:
    """Threads for XGBoost: ``configured`` (the knob ``MLOPS_TRAIN_THREADS``) when positive, else
    the CPUs this process may really use.

    In a pod, ``os.cpu_count()`` is the node's cores; the cgroup quota (``cpu.max``) is the limit
    that counts. Oversubscribed OpenMP threads are several times slower than fewer threads.
    """
    if configured > 0:
        return configured
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def xgb_params(
    device: str,
    seed: int,
    *,
    rounds: int = TrainingSettings.max_rounds,
    threads: int = TrainingSettings.threads,
) -> dict[str, Any]:
    """The XGBoost classifier's parameters: ``hist`` trees on ``device``, at most ``rounds`` rounds
    (the knob ``MLOPS_TRAIN_MAX_ROUNDS``) with early stopping, on :func:`training_threads` threads."""
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "device": device,
        "n_estimators": rounds,
        "learning_rate": 0.05,
        "max_depth": 5,
        "min_child_weight": 3.0,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "reg_lambda": 1.0,
        "max_bin": 256,
        "eval_metric": ["aucpr", "logloss"],
        "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
        "random_state": seed,
        "n_jobs": training_threads(threads),
    }


@dataclass(frozen=True)
class BoostingReport:
    """What happened in an XGBoost fit: the device really used and the best validation round."""

    device: str
    best_iteration: int
    validation_aucpr: float
    validation_logloss: float
    params: dict[str, Any]
    """The parameters it was fitted with (the evaluation metrics left out)."""


def fit_boosting(
    fit: FeatureRows,
    validation: FeatureRows,
    device: str,
    seed: int,
    *,
    rounds: int = TrainingSettings.max_rounds,
    threads: int = TrainingSettings.threads,
) -> tuple[Any, BoostingReport]:
    """Fit XGBoost ``hist`` on ``fit`` with early stopping on ``validation`` (weighted log-loss).

    Both sets reach XGBoost batch by batch as ``QuantileDMatrix`` (the validation set with the fit
    set's cuts): the booster is the one the same rows in one piece give (:mod:`.stream`). Returns
    the booster (cut at the best round, device reset to ``cpu`` for portable scoring) and what
    happened: rounds, best validation scores and the device really used.
    """
    import warnings

    import xgboost as xgb

    params = xgb_params(device, seed, rounds=rounds, threads=threads)
    # The scikit-learn wrapper's names are also the native parameters' aliases; these two are its own.
    native = {k: v for k, v in params.items() if k not in ("n_estimators", "early_stopping_rounds")}
    # Early stopping watches the log-loss alone: the validation PR-AUC, a sort of the validation
    # rows, is computed once at the best round below instead of after every round.
    native["eval_metric"] = ["logloss"]
    history: dict[str, dict[str, list[float]]] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ff]alling back.*")
        train = quantile_matrix(fit, params["max_bin"], params["n_jobs"])
        watched = quantile_matrix(validation, params["max_bin"], params["n_jobs"], ref=train)
        booster = xgb.train(
            native,
            train,
            num_boost_round=rounds,
            evals=[(watched, "validation")],
            early_stopping_rounds=EARLY_STOPPING_ROUNDS,
            evals_result=history,
            verbose_eval=False,
        )
    used = booster_device(booster)
    best = int(booster.best_iteration)
    # Keep only the trees up to the best round, so that every consumer scores the same model.
    booster = booster[: best + 1]
    aucpr = _validation_aucpr(booster, watched)
    booster.set_param({"device": "cpu"})
    report = BoostingReport(
        device=used,
        best_iteration=best,
        validation_aucpr=aucpr,
        validation_logloss=float(history["validation"]["logloss"][best]),
        params={k: v for k, v in params.items() if k != "eval_metric"},
    )
    return booster, report


def _validation_aucpr(booster: Any, watched: Any) -> float:
    """XGBoost's ``aucpr`` of ``booster`` (cut at its best round) on the validation matrix: the
    value the same metric watched at every round reports for that round."""
    booster.set_param({"eval_metric": "aucpr"})  # added to the booster's log-loss
    text = booster.eval(watched, "validation")  # "[0]\tvalidation-logloss:...\tvalidation-aucpr:..."
    scores = dict(item.split(":", 1) for item in text.split("\t")[1:])
    return float(scores["validation-aucpr"])


def fit_xgboost(
    x_fit: pd.DataFrame,
    y_fit: np.ndarray,
    w_fit: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    w_val: np.ndarray,
    device: str,
    seed: int,
    *,
    rounds: int = TrainingSettings.max_rounds,
    threads: int = TrainingSettings.threads,
) -> tuple[Any, BoostingReport]:
    """:func:`fit_boosting` on frames already in memory (each one batch; the columns are the
    features' names)."""
    return fit_boosting(
        FeatureRows.of(x_fit, y_fit, w_fit),
        FeatureRows.of(x_val, y_val, w_val, tuple(x_fit.columns)),
        device, seed, rounds=rounds, threads=threads,
    )  # fmt: skip


def fit_baseline(x: pd.DataFrame | np.ndarray, y: np.ndarray, w: np.ndarray) -> Any:
    """The logistic-regression baseline: median imputation, signed log, scaling, L2 logistic regression
    (a scikit-learn pipeline, fitted in float64 whatever the type of ``x``; ``x`` is left as it is).

    The steps are fitted one after the other in one private float64 copy of ``x``, each in place,
    then put together: the pipeline ``Pipeline.fit`` would make, in a fraction of its memory (it
    keeps a new array per step, and the imputer's median sorts three copies of the matrix). The
    imputer learns its medians from themselves: a one-row fit, the medians computed by
    :func:`_column_medians` a few columns at a time, as the imputer computes them.
    """
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    def signed_log(values: np.ndarray) -> np.ndarray:
        """Tame the heavy tails of amounts and ratios, keeping the sign: ``sign(v) * log1p(|v|)``."""
        return _signed_log_into(values, np.empty_like(values))

    values = np.array(x, dtype=np.float64)
    imputer = SimpleImputer(strategy="median", keep_empty_features=True, copy=False)
    values = imputer.fit(_column_medians(values)[np.newaxis]).transform(values)
    imputer.set_params(copy=True)  # scoring later never writes into the caller's rows
    log = FunctionTransformer(signed_log).fit(values[:1])
    values = _signed_log_into(values, values)
    scaler = StandardScaler(copy=False)  # scales signed_log's own new array, never the caller's
    values = scaler.fit(values).transform(values)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(values, y, sample_weight=w)
    steps = {"simpleimputer": imputer, "functiontransformer": log, "standardscaler": scaler}
    return Pipeline([*steps.items(), ("logisticregression", model)])


def _column_medians(values: np.ndarray, at_once: int = 8) -> np.ndarray:
    """The median of each column of ``values`` without its NaN (NaN for a column of NaN only):
    ``np.ma.median`` of the masked columns, as ``SimpleImputer`` computes it, ``at_once`` columns
    at a time (each column's median is its own, whatever the columns beside it)."""
    import numpy as np

    medians = []
    for start in range(0, values.shape[1], at_once):
        block = values[:, start : start + at_once]
        median = np.ma.median(np.ma.masked_array(block, mask=np.isnan(block)), axis=0)
        medians.append(np.ma.filled(median.astype(np.float64), np.nan))
    return np.concatenate(medians) if medians else np.empty(0)


def _signed_log_into(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``sign(values) * log1p(|values|)`` written into ``out`` (a new array, or ``values`` itself):
    the same numbers as that expression, without its two temporary arrays."""
    import numpy as np

    negative = values < 0
    np.abs(values, out=out)
    np.log1p(out, out=out)
    return np.negative(out, out=out, where=negative)


@dataclass(frozen=True)
class FitResult:
    """The fitted model and baseline of a training run, with how long each took."""

    booster: Any
    boosting: BoostingReport
    baseline: Any
    device_requested: str
    """The device probed before the fit; :attr:`BoostingReport.device` is the one really used."""
    train_seconds: float
    baseline_seconds: float

    @property
    def device(self) -> str:
        """The device XGBoost really trained on."""
        return self.boosting.device


def baseline_rows(fit_rows: int, seed: int) -> np.ndarray:
    """The positions of the fit rows the baseline learns from: all of them, or a uniform sample of
    :data:`MAX_BASELINE_ROWS` drawn by ``seed`` (sorted)."""
    import numpy as np

    rows = np.arange(fit_rows)
    if fit_rows > MAX_BASELINE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_BASELINE_ROWS, replace=False))
    return rows


def fit_models(data: TrainingSet, knobs: TrainingSettings, seed: int) -> FitResult:
    """XGBoost on the fit rows with early stopping on the validation slice, and the baseline on the
    same fit rows (a uniform sample above :data:`MAX_BASELINE_ROWS`)."""
    device = detect_device(knobs.device)
    started = time.perf_counter()
    booster, boosting = fit_boosting(
        data.fit, data.validation, device, seed, rounds=knobs.max_rounds, threads=knobs.threads
    )
    train_seconds = time.perf_counter() - started
    logger.info(
        "xgboost on %s: %d rounds in %.1fs", boosting.device, boosting.best_iteration + 1, train_seconds
    )

    # Above MAX_BASELINE_ROWS a uniform sample keeps the same weighted distribution without a dense
    # copy of millions of rows per preprocessing step.
    started = time.perf_counter()
    rows = baseline_rows(len(data.fit), seed)
    fit = data.fit
    baseline = fit_baseline(fit.x[rows], fit.y[rows], fit.weight[rows])
    baseline_seconds = time.perf_counter() - started
    return FitResult(booster, boosting, baseline, device, train_seconds, baseline_seconds)
