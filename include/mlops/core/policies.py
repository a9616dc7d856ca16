"""The knobs of training, promotion and drift monitoring: frozen objects built from the environment.

Each class is one concern; each field is one ``MLOPS_*`` variable with its default and its one
documentation (:func:`~include.mlops.core.settings.knob`). A job builds its object once, with
``from_env()``, and passes it down: no function reads the environment on its own. A bad value
raises :class:`~include.mlops.core.settings.SettingsError` naming the variable.

Only the standard library is imported.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Self

from include.mlops.core.settings import SettingsError, env_number, knob

if TYPE_CHECKING:
    from collections.abc import Mapping


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    text = environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={text!r}: use true or false")


def _env_names(environ: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    text = environ.get(name, "").strip()
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else default


class _FromEnv:
    """``from_env`` for a frozen dataclass whose fields are knobs."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """The object from the variables of ``environ`` (default: the process's), checked."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            name = f.metadata.get("env")
            if name is None or f.name in overrides:
                continue
            kind = str(f.type)
            if kind == "bool":
                values[f.name] = _env_bool(env, name, f.default)
            elif kind.startswith("tuple"):
                values[f.name] = _env_names(env, name, f.default)
            elif kind in ("int", "float"):
                values[f.name] = env_number(name, f.default, int if kind == "int" else float, env)
            else:
                values[f.name] = env.get(name, "").strip() or f.default
        made = cls(**values, **overrides)
        made.check()
        return made

    def with_(self, **changes: Any) -> Self:
        """A copy with some fields changed (and checked)."""
        made = replace(self, **changes)  # type: ignore[type-var]
        made.check()
        return made

    def check(self) -> None:
        """Raise :class:`SettingsError` naming the variable when a value cannot work."""

    def as_dict(self) -> dict[str, Any]:
        """The values as JSON-compatible data."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    def as_env(self) -> dict[str, str]:
        """The values as their variables."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            if "env" in f.metadata:
                value = getattr(self, f.name)
                out[f.metadata["env"]] = (
                    ",".join(value)
                    if isinstance(value, tuple)
                    else str(value).lower()
                    if isinstance(value, bool)
                    else str(value)
                )
        return out


def _problems(problems: list[str], what: str) -> None:
    if problems:
        raise SettingsError(f"{what}: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSettings(_FromEnv):
    """How a training run samples, fits and where."""

    device: str = knob(
        "MLOPS_TRAIN_DEVICE",
        "`auto`, `cpu` or `cuda`; the device really used is read from the booster and logged",
        "`auto`",
        default="auto",
    )
    negatives_per_positive: int = knob(
        "MLOPS_TRAIN_NEGATIVES_PER_POSITIVE",
        "negatives kept per fraud on a training day (down-sampled, re-weighted)",
        "`20`",
        default=20,
    )
    max_rows: int = knob(
        "MLOPS_TRAIN_MAX_ROWS",
        "training rows kept after down-sampling (all days)",
        "`2000000`",
        default=2_000_000,
    )
    max_oot_rows: int = knob(
        "MLOPS_TRAIN_MAX_OOT_ROWS",
        "out-of-time rows evaluated (a uniform sample above it)",
        "`1000000`",
        default=1_000_000,
    )
    max_rounds: int = knob(
        "MLOPS_TRAIN_MAX_ROUNDS", "boosting rounds before early stopping", "`600`", default=600
    )
    threads: int = knob(
        "MLOPS_TRAIN_THREADS",
        "XGBoost threads; `0`: the CPUs the process may use (cgroup quota)",
        "`0`",
        default=0,
    )

    def check(self) -> None:
        problems = []
        if self.device.lower() not in ("auto", "cpu", "cuda"):
            problems.append(f"MLOPS_TRAIN_DEVICE={self.device!r}: expected auto, cpu or cuda")
        for name, value in (
            ("MLOPS_TRAIN_NEGATIVES_PER_POSITIVE", self.negatives_per_positive),
            ("MLOPS_TRAIN_MAX_ROWS", self.max_rows),
            ("MLOPS_TRAIN_MAX_OOT_ROWS", self.max_oot_rows),
            ("MLOPS_TRAIN_MAX_ROUNDS", self.max_rounds),
        ):
            if value < 1:
                problems.append(f"{name}={value} must be at least 1")
        if self.threads < 0:
            problems.append(f"MLOPS_TRAIN_THREADS={self.threads} must not be negative")
        _problems(problems, "training settings")


@dataclass(frozen=True)
class PromotionPolicy(_FromEnv):
    """When a challenger replaces the champion (see :mod:`include.mlops.promotion.policy`)."""

    margin: float = knob(
        "MLOPS_PROMOTION_MARGIN",
        "PR-AUC the challenger must gain over the champion",
        "`0.005`",
        default=0.005,
    )
    min_pr_auc: float = knob(
        "MLOPS_PROMOTION_MIN_PR_AUC",
        "floor on the challenger's out-of-time PR-AUC (waived when the champion misses it too on those days)",
        "`0.30`",
        default=0.30,
    )
    min_recall_at_1pct_fpr: float = knob(
        "MLOPS_PROMOTION_MIN_RECALL_AT_1PCT_FPR",
        "floor on the challenger's recall at 1% FPR (waived when the champion misses it too on those days)",
        "`0.30`",
        default=0.30,
    )
    bootstrap: int = knob(
        "MLOPS_PROMOTION_BOOTSTRAP",
        "paired bootstrap iterations; `0` compares point estimates only",
        "`1000`",
        default=1000,
    )
    confidence: float = knob(
        "MLOPS_PROMOTION_CONFIDENCE", "level of the two-sided bootstrap intervals", "`0.90`", default=0.90
    )
    bootstrap_rows: int = knob(
        "MLOPS_PROMOTION_BOOTSTRAP_ROWS",
        "rows at most in the bootstrap (a uniform sample; point estimates use every row)",
        "`200000`",
        default=200_000,
    )
    slice_min_positives: int = knob(
        "MLOPS_PROMOTION_SLICE_MIN_POSITIVES",
        "frauds a slice (and a card-holder region, for its recall) needs to be judged; smaller ones "
        "are reported, not gated",
        "`30`",
        default=30,
    )
    slice_margin: float = knob(
        "MLOPS_PROMOTION_SLICE_MARGIN",
        "PR-AUC the challenger may lose in a judged slice; a larger loss that the bootstrap says is "
        "no chance refuses it",
        "`0.05`",
        default=0.05,
    )
    slice_bootstrap: int = knob(
        "MLOPS_PROMOTION_SLICE_BOOTSTRAP",
        "paired bootstrap iterations per judged slice; `0` judges slices on point estimates only",
        "`200`",
        default=200,
    )
    fairness_max_disparity: float = knob(
        "MLOPS_PROMOTION_FAIRNESS_MAX_DISPARITY",
        "bound on the worst card-holder region's false-positive rate over all customers' (and on "
        "all customers' recall over the worst region's) at the operating point",
        "`2.0`",
        default=2.0,
    )
    fairness_margin: float = knob(
        "MLOPS_PROMOTION_FAIRNESS_MARGIN",
        "how much the challenger's disparity may exceed the champion's",
        "`0.25`",
        default=0.25,
    )
    fairness_min_negatives: int = knob(
        "MLOPS_PROMOTION_FAIRNESS_MIN_NEGATIVES",
        "good payments a card-holder region needs for its false-positive rate to be judged (at a 1 % "
        "rate, 5000 give about 50 false positives: the rate is known within about a third)",
        "`5000`",
        default=5000,
    )
    approval: str = knob(
        "MLOPS_PROMOTION_APPROVAL",
        "`automatic`, or `required`: `train_model` waits for a reviewer to approve (Airflow "
        "human-in-the-loop) before `champion` moves",
        "`automatic`",
        default="automatic",
    )
    approval_timeout_hours: float = knob(
        "MLOPS_PROMOTION_APPROVAL_TIMEOUT_HOURS",
        "a review not answered within this rejects the challenger",
        "`24`",
        default=24.0,
    )
    lock_timeout: float = knob(
        "MLOPS_PROMOTION_LOCK_TIMEOUT",
        "seconds to wait for the model's lock (promotion, rollback, drift decision)",
        "`600`",
        default=600.0,
    )
    seed: int = 7
    """The bootstrap's seed: the pipeline's ``MLOPS_SEED`` (``from_env(seed=...)``)."""

    def check(self) -> None:
        problems = []
        if not 0 < self.confidence < 1:
            problems.append(f"MLOPS_PROMOTION_CONFIDENCE={self.confidence} must be between 0 and 1")
        if self.bootstrap < 0 or self.margin < 0:
            problems.append("MLOPS_PROMOTION_BOOTSTRAP and MLOPS_PROMOTION_MARGIN must not be negative")
        if self.lock_timeout < 0:
            problems.append(f"MLOPS_PROMOTION_LOCK_TIMEOUT={self.lock_timeout} must not be negative")
        problems += self._gate_problems()
        _problems(problems, "promotion policy")

    def _gate_problems(self) -> list[str]:
        """What is wrong with the slice, fairness and approval knobs."""
        problems = []
        if self.slice_margin < 0 or self.fairness_margin < 0 or self.slice_bootstrap < 0:
            problems.append(
                "MLOPS_PROMOTION_SLICE_MARGIN, MLOPS_PROMOTION_FAIRNESS_MARGIN and "
                "MLOPS_PROMOTION_SLICE_BOOTSTRAP must not be negative"
            )
        if self.slice_min_positives < 1 or self.fairness_min_negatives < 1:
            problems.append(
                "MLOPS_PROMOTION_SLICE_MIN_POSITIVES and MLOPS_PROMOTION_FAIRNESS_MIN_NEGATIVES must be "
                "at least 1"
            )
        if not self.fairness_max_disparity >= 1:
            problems.append(
                f"MLOPS_PROMOTION_FAIRNESS_MAX_DISPARITY={self.fairness_max_disparity} must be at least 1 "
                "(a ratio of the worst group to all customers)"
            )
        if self.approval not in ("automatic", "required"):
            problems.append(f"MLOPS_PROMOTION_APPROVAL={self.approval!r}: expected automatic or required")
        if not self.approval_timeout_hours > 0:
            problems.append(
                f"MLOPS_PROMOTION_APPROVAL_TIMEOUT_HOURS={self.approval_timeout_hours} must be positive"
            )
        return problems

    @property
    def approval_required(self) -> bool:
        """Whether a reviewer must approve a promotion before the alias moves."""
        return self.approval == "required"


DRIFT_FEATURES: tuple[str, ...] = (
    "amount_to_customer_mean_7d",
    "amount_to_customer_mean_30d",
    "amount_zscore_30d",
    "amount_to_merchant_mean_30d",
    "customer_amount_mean_1d",
    "customer_online_share_1d",
    "is_online",
    "is_card_present",
    "is_foreign_country",
    "is_night",
)
"""Key features: how much a payment is against its customer's and merchant's habits, yesterday's
behaviour of the customer, and the payment's channel, country and time. They carry the model's
main signals and do not depend on how long the history is (counts and 30-day sums grow while the
lake fills up, which would look like drift)."""


@dataclass(frozen=True)
class DriftPolicy(_FromEnv):
    """When drift calls for retraining (see :mod:`include.mlops.monitoring.policy`)."""

    drift_share: float = knob(
        "MLOPS_DRIFT_SHARE",
        "share of the key features that must drift for feature drift",
        "`0.3`",
        default=0.3,
    )
    prediction_counts: bool = knob(
        "MLOPS_DRIFT_PREDICTION", "whether drift of the champion's score alone counts", "`true`", default=True
    )
    performance_drop: float = knob(
        "MLOPS_DRIFT_PERFORMANCE_DROP",
        "relative PR-AUC drop against training that counts",
        "`0.2`",
        default=0.2,
    )
    cooldown_days: int = knob(
        "MLOPS_DRIFT_COOLDOWN_DAYS",
        "partition days between drift-triggered retrains",
        "`7`",
        default=7,
    )
    sample_rows: int = knob(
        "MLOPS_DRIFT_SAMPLE_ROWS", "payments of a day compared at most", "`50000`", default=50_000
    )
    features: tuple[str, ...] = knob(
        "MLOPS_DRIFT_FEATURES",
        "comma-separated key features",
        "the ten key features of `core/policies.py`",
        default=DRIFT_FEATURES,
    )
    psi_threshold: float = knob(
        "MLOPS_DRIFT_PSI", "decile-PSI threshold of a continuous key feature", "`0.2`", default=0.2
    )
    flag_psi_threshold: float = knob(
        "MLOPS_DRIFT_PSI_FLAGS", "PSI threshold of a 0/1 key feature", "`0.1`", default=0.1
    )
    prediction_psi_threshold: float = knob(
        "MLOPS_DRIFT_PREDICTION_PSI", "PSI threshold of the prediction", "`0.1`", default=0.1
    )
    performance_days: int = knob(
        "MLOPS_DRIFT_PERFORMANCE_DAYS", "labelled days the performance is measured on", "`7`", default=7
    )
    min_positives: int = knob(
        "MLOPS_DRIFT_MIN_POSITIVES",
        "fewer frauds than this in those days: no performance signal",
        "`30`",
        default=30,
    )
    retrain_labelled_days: int = knob(
        "MLOPS_DRIFT_RETRAIN_LABELLED_DAYS",
        "fully labelled days of the drifted world a drift retrain waits for (it trains as of the "
        "drifted day + this - 1 + the 5-day label delay)",
        "`5`",
        default=5,
    )
    retrain_oot_days: int = knob(
        "MLOPS_DRIFT_RETRAIN_OOT_DAYS",
        "of those days, the newest ones the drift retrain is judged on (out of time); it learns from "
        "the others",
        "`2`",
        default=2,
    )
    retrain_window_days: int = knob(
        "MLOPS_DRIFT_RETRAIN_WINDOW_DAYS",
        "training days of a drift retrain: its drifted days and the days before them, so that it keeps "
        "what did not change",
        "`14`",
        default=14,
    )
    retrain_timeout_hours: float = knob(
        "MLOPS_DRIFT_RETRAIN_TIMEOUT_HOURS",
        "how long a requested retrain counts as running while no version carries its reason",
        "`6`",
        default=6.0,
    )

    def check(self) -> None:
        problems = []
        if not 0 < self.drift_share <= 1:
            problems.append(f"MLOPS_DRIFT_SHARE={self.drift_share} must be in (0, 1]")
        if self.performance_drop <= 0:
            problems.append(f"MLOPS_DRIFT_PERFORMANCE_DROP={self.performance_drop} must be positive")
        if self.cooldown_days < 0:
            problems.append(f"MLOPS_DRIFT_COOLDOWN_DAYS={self.cooldown_days} must not be negative")
        if self.sample_rows < 1000:
            problems.append(f"MLOPS_DRIFT_SAMPLE_ROWS={self.sample_rows} must be at least 1000")
        if not self.features:
            problems.append("MLOPS_DRIFT_FEATURES names no feature")
        for name, value in (
            ("MLOPS_DRIFT_PSI", self.psi_threshold),
            ("MLOPS_DRIFT_PSI_FLAGS", self.flag_psi_threshold),
            ("MLOPS_DRIFT_PREDICTION_PSI", self.prediction_psi_threshold),
        ):
            if value <= 0:
                problems.append(f"{name}={value} must be positive")
        if self.performance_days < 1:
            problems.append(f"MLOPS_DRIFT_PERFORMANCE_DAYS={self.performance_days} must be at least 1")
        if self.min_positives < 1:
            problems.append(f"MLOPS_DRIFT_MIN_POSITIVES={self.min_positives} must be at least 1")
        if self.retrain_oot_days < 1 or self.retrain_labelled_days - self.retrain_oot_days < 1:
            problems.append(
                f"MLOPS_DRIFT_RETRAIN_LABELLED_DAYS={self.retrain_labelled_days} must leave at least "
                f"one drifted training day beside MLOPS_DRIFT_RETRAIN_OOT_DAYS={self.retrain_oot_days} "
                "(at least 1)"
            )
        if self.retrain_window_days < self.retrain_labelled_days - self.retrain_oot_days:
            problems.append(
                f"MLOPS_DRIFT_RETRAIN_WINDOW_DAYS={self.retrain_window_days} must cover the drifted training "
                "days (MLOPS_DRIFT_RETRAIN_LABELLED_DAYS - MLOPS_DRIFT_RETRAIN_OOT_DAYS)"
            )
        if self.retrain_timeout_hours < 0:
            problems.append(
                f"MLOPS_DRIFT_RETRAIN_TIMEOUT_HOURS={self.retrain_timeout_hours} must not be negative"
            )
        _problems(problems, "drift policy")
