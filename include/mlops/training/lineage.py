"""What a model was made from: the code version, the partitions' fingerprints and their validation results."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import lake
from include.mlops.core.settings import PROJECT_ROOT, resolve_settings
from include.mlops.training.dataset import _fingerprint

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable

    from include.mlops.core.settings import Settings


def package_version() -> str:
    """The project's version (installed metadata, else ``pyproject.toml``)."""
    from importlib import metadata

    try:
        return metadata.version("card-fraud-mlops")
    except metadata.PackageNotFoundError:
        pass
    try:
        import tomllib

        return str(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "0+unknown"


def code_sha256() -> str:
    """sha256 over the sources of the production package ``include/mlops`` (relative paths and
    contents, sorted by path). Developer tooling lives outside it and does not count."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_version() -> str:
    """``<package version>+<first 12 hex of code_sha256>``."""
    return f"{package_version()}+{code_sha256()[:12]}"


def validation_results(dataset_days: Iterable[tuple[str, dt.date]], settings: Settings | None = None) -> list:
    """The validation report each (dataset, day) passed through, if present: path and success flag."""
    s = resolve_settings(settings)
    out = []
    for dataset, day in dataset_days:
        loc = lake.partition("reports", lake.validation_reports(dataset), day, s).join(lake.VALIDATION_RESULT)
        entry: dict[str, Any] = {"dataset": dataset, "day": day.isoformat(), "path": loc.url}
        if lake.exists(loc):
            try:
                entry.update(present=True, success=bool(json.loads(lake.read_bytes(loc))["success"]))
            except (ValueError, KeyError) as error:
                entry.update(present=True, success=None, error=f"unreadable report: {error}")
        else:
            entry.update(present=False, success=None)
        out.append(entry)
    return out


def snapshot_fingerprints(days: Iterable[dt.date], settings: Settings | None = None) -> list[dict]:
    """sha256 of the customer and merchant feature snapshots of ``days`` (those that exist)."""
    from include.mlops import features

    s = resolve_settings(settings)
    out = []
    for day in days:
        for view in ("customer", "merchant"):
            loc = features.snapshot_location(view, day, s)
            if lake.exists(loc):
                data = lake.read_bytes(loc)
                out.append(_fingerprint(lake.feature_snapshots(view), day, loc, data, -1))
    return out


def fingerprint_digest(fingerprints: Iterable[dict]) -> str:
    """One sha256 over a set of partition fingerprints (order-independent)."""
    lines = sorted(f"{p['url']} {p['sha256']}" for p in fingerprints)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
