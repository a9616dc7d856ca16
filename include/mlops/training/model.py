"""The model and its baseline: XGBoost on the GPU when one really answers, a logistic regression beside it.

The device actually used is read back from the booster's configuration, never from its
parameters (a CUDA build on a machine without a GPU warns and trains on the CPU).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.training.dataset import _env_int

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


MAX_ROUNDS = 600


EARLY_STOPPING_ROUNDS = 50


def booster_device(booster: Any) -> str:
    """The device XGBoost really used, from the booster's configuration (not from its parameters)."""
    return str(json.loads(booster.save_config())["learner"]["generic_param"]["device"])


def detect_device(requested: str | None = None) -> str:
    """``cuda`` if this XGBoost build has CUDA and a GPU answers a one-round probe, else ``cpu``.

    ``requested`` (default ``MLOPS_TRAIN_DEVICE``, ``auto``) forces ``cpu``; ``cuda`` is still
    probed, and falls back to ``cpu`` with a message when no GPU answers.
    """
    import warnings

    import numpy as np
    import xgboost as xgb

    requested = (requested or os.environ.get("MLOPS_TRAIN_DEVICE", "") or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"MLOPS_TRAIN_DEVICE={requested!r}: expected auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    if not xgb.build_info().get("USE_CUDA"):
        if requested == "cuda":
            logger.info("MLOPS_TRAIN_DEVICE=cuda but this XGBoost build has no CUDA support: training on cpu")
        return "cpu"
    rng = np.random.default_rng(0)
    probe = xgb.DMatrix(rng.random((32, 2)), label=rng.integers(0, 2, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 0}, probe, 1)
    device = "cuda" if booster_device(booster).startswith("cuda") else "cpu"
    if requested == "cuda" and device == "cpu":
        logger.info("MLOPS_TRAIN_DEVICE=cuda but no GPU answered: training on cpu")
    return device


def xgb_params(device: str, seed: int) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "device": device,
        "n_estimators": _env_int("MLOPS_TRAIN_MAX_ROUNDS", MAX_ROUNDS),
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
        "n_jobs": training_threads(),
    }


def training_threads() -> int:
    """Threads for XGBoost: ``MLOPS_TRAIN_THREADS``, else the CPUs this process may really use.

    In a pod, ``os.cpu_count()`` is the node's cores; the cgroup quota (``cpu.max``) is the limit
    that counts. Oversubscribed OpenMP threads are several times slower than fewer threads.
    """
    configured = _env_int("MLOPS_TRAIN_THREADS", 0)
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


def fit_xgboost(
    x_fit: pd.DataFrame,
    y_fit: np.ndarray,
    w_fit: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    w_val: np.ndarray,
    device: str,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """Fit XGBoost ``hist`` with early stopping on the validation slice (weighted log-loss).

    Returns the booster (device reset to ``cpu`` for portable scoring) and what happened: rounds,
    best validation scores and the device really used.
    """
    import warnings

    import xgboost as xgb

    params = xgb_params(device, seed)
    model = xgb.XGBClassifier(**params)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ff]alling back.*")
        model.fit(
            x_fit,
            y_fit,
            sample_weight=w_fit,
            eval_set=[(x_val, y_val)],
            sample_weight_eval_set=[w_val],
            verbose=False,
        )
    booster = model.get_booster()
    used = booster_device(booster)
    best = int(model.best_iteration)
    history = model.evals_result()["validation_0"]
    # Keep only the trees up to the best round, so that every consumer scores the same model.
    booster = booster[: best + 1]
    booster.set_param({"device": "cpu"})
    info = {
        "device": used,
        "best_iteration": best,
        "validation_aucpr": float(history["aucpr"][best]),
        "validation_logloss": float(history["logloss"][best]),
        "params": {k: v for k, v in params.items() if k != "eval_metric"},
    }
    return booster, info


def fit_baseline(x: pd.DataFrame, y: np.ndarray, w: np.ndarray) -> Any:
    """The logistic-regression baseline: median imputation, signed log, scaling, L2 logistic regression."""
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    def signed_log(values: np.ndarray) -> np.ndarray:
        return np.sign(values) * np.log1p(np.abs(values))

    pipeline = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        FunctionTransformer(signed_log),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000),
    )
    pipeline.fit(x.to_numpy(dtype="float64"), y, logisticregression__sample_weight=w)
    return pipeline
