"""Every setting of the pipeline in one catalogue: its variable, default, meaning and effective value.

Six concerns, six frozen objects built from the environment: the pipeline's
:class:`~include.mlops.core.settings.Settings` (where data lives, which backends run), the
knobs of training, promotion and drift monitoring (:mod:`include.mlops.core.policies`), those
of the scoring service (:mod:`include.mlops.core.serving_settings`) and of operations: alerts
and metrics (:mod:`include.mlops.core.alerting`). Each field
documents itself once (:func:`~include.mlops.core.settings.knob`); ``python -m include.mlops
settings`` prints the effective values and ``settings --markdown`` the README's table, which a
unit test holds equal to the README.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from include.mlops.core.alerting import OpsSettings
from include.mlops.core.policies import DriftPolicy, PromotionPolicy, TrainingSettings
from include.mlops.core.serving_settings import ServingSettings
from include.mlops.core.settings import Settings, settings

CONCERNS: dict[str, type] = {
    "pipeline": Settings,
    "training": TrainingSettings,
    "promotion": PromotionPolicy,
    "drift": DriftPolicy,
    "serving": ServingSettings,
    "ops": OpsSettings,
}
"""The settings objects, by concern, in the order the README documents them."""

_CREDENTIALS = re.compile(r"(://[^:/@]+:)[^@/]+@")


def _masked(value: str) -> str:
    """A URL's password replaced by ``***``: the values are printed and may reach a log."""
    return _CREDENTIALS.sub(r"\1***@", value)


def effective() -> dict[str, dict[str, str]]:
    """The effective value of every setting, by concern, as its variable would carry it."""
    built: dict[str, Any] = {
        "pipeline": settings(),
        "training": TrainingSettings.from_env(),
        "promotion": PromotionPolicy.from_env(seed=settings().seed),
        "drift": DriftPolicy.from_env(),
        "serving": ServingSettings.from_env(),
        "ops": OpsSettings.from_env(),
    }
    return {concern: {k: _masked(v) for k, v in obj.as_env().items()} for concern, obj in built.items()}


def documented() -> list[tuple[str, str, str, str]]:
    """``(concern, variable, default, meaning)`` of every setting, in catalogue order."""
    rows = []
    for concern, cls in CONCERNS.items():
        for f in fields(cls):
            if "env" in f.metadata:
                rows.append((concern, f.metadata["env"], f.metadata["shown"], f.metadata["doc"]))
    return rows


def markdown_table() -> str:
    """The README's table of every setting (generated from the fields' own documentation)."""
    lines = ["| concern | variable | default | meaning |", "|---|---|---|---|"]
    for concern, variable, default, meaning in documented():
        lines.append(f"| {concern} | `{variable}` | {default} | {meaning} |")
    return "\n".join(lines)
