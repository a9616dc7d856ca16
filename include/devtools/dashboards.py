"""The Evidently workspace of the platform: one project, a drift and a classification snapshot per day.

``make dashboards`` (``python -m include.devtools dashboards``) rebuilds the workspace from what the
lake already holds, then serves it with ``evidently ui``:

* a **drift** snapshot for each day the monitor checked (a ``verdict.json`` exists): the same
  Evidently report the monitor ran (``monitoring.drift_report``: the day's sample against the
  reference sample of the version that scored it, PSI over the reference's deciles), dated to
  that day;
* a **classification** snapshot for each scored day whose labels have all arrived (labels
  partitions of the next five days in the lake): Evidently's ``ClassificationPreset`` at the
  version's operating threshold, plus PR-AUC and recall at 1% FPR (the project's metrics, which
  Evidently lacks), computed by two small Evidently metrics of this module;
* a dashboard of the share of drifted key features, each key feature's PSI, the prediction's
  PSI, PR-AUC and recall over time.

The rebuild is idempotent: the project has a fixed id derived from the model name and is replaced
as a whole, so a rebuild of the same lake gives the same days, values and panels.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric

from include.mlops import lake, registry
from include.mlops.core.metrics import TARGET_FPR, average_precision, recall_at_fpr
from include.mlops.core.policies import DriftPolicy
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS
from include.mlops.core.settings import resolve_settings, settings
from include.mlops.ops import records

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)

DRIFT_TAG, CLASSIFICATION_TAG = "drift", "classification"


class PrAuc(SingleValueMetric):
    """Average precision (PR-AUC) of a fraud score against the label (the project's headline metric)."""

    target: str
    score: str


class PrAucCalculation(SingleValueCalculation[PrAuc]):
    """How Evidently computes :class:`PrAuc` on the current data."""

    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        frame = current_data.as_dataframe()
        return self.result(
            average_precision(frame[self.metric.target].to_numpy(), frame[self.metric.score].to_numpy())
        ), None

    def display_name(self) -> str:
        return "PR-AUC"


class RecallAtFpr(SingleValueMetric):
    """Recall at a fixed false-positive rate (the policy's operating point, 1%)."""

    target: str
    score: str
    fpr: float = TARGET_FPR


class RecallAtFprCalculation(SingleValueCalculation[RecallAtFpr]):
    """How Evidently computes :class:`RecallAtFpr` on the current data."""

    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        frame = current_data.as_dataframe()
        y, s = frame[self.metric.target].to_numpy(), frame[self.metric.score].to_numpy()
        return self.result(recall_at_fpr(y, s, self.metric.fpr)), None

    def display_name(self) -> str:
        return f"Recall at {self.metric.fpr:.0%} FPR"


def default_workspace(s: Settings | None = None) -> Path:
    """Where the workspace lives: ``$MLOPS_HOME/evidently``."""
    return resolve_settings(s).home / "evidently"


def project_id(s: Settings) -> uuid.UUID:
    """The project's fixed id (a rebuild replaces the same project)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"mlops:{s.model_name}:evidently-workspace")


def _dated(snapshot: Any, day: dt.date, kind: str, version: int) -> Any:
    """``snapshot`` dated to noon UTC of ``day``, tagged with its kind and model version."""
    from evidently.core.report import Snapshot

    model = snapshot.to_snapshot_model()
    model.timestamp = dt.datetime.combine(day, dt.time(12))
    model.tags = [kind, f"v{version}"]
    model.metadata = {"day": day.isoformat(), "model_version": str(version)}
    return Snapshot.load_model(model)


def drift_snapshot(day: dt.date, policy: DriftPolicy, s: Settings) -> tuple[Any, int]:
    """The monitor's Evidently report of ``day`` again, with the version that scored it."""
    from include.mlops.monitoring import drift_of_day

    sample, _, report = drift_of_day(day, policy, s)
    return _dated(report.snapshot, day, DRIFT_TAG, sample.version), sample.version


def labelled_day(day: dt.date, s: Settings) -> pd.DataFrame | None:
    """The day's scores with their labels, once every label of the day can have arrived (the labels
    partitions of the next ``MAX_LABEL_DELAY_DAYS`` days are in the lake); ``None`` before."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from include.mlops.monitoring import ID, SCORE, VERSION

    label_days = [day + dt.timedelta(days=k) for k in range(MAX_LABEL_DELAY_DAYS + 1)]
    if any(not lake.data_files(lake.partition("lake", LABELS.name, d, s)) for d in label_days[1:]):
        return None
    scored = lake.read_parquet(lake.partition_file(lake.PREDICTIONS, day, s), [ID, SCORE, VERSION])
    found = []
    for d in label_days:
        for f in lake.data_files(lake.partition("lake", LABELS.name, d, s)):
            part = lake.read_parquet(f, [ID, LABEL, "reported_at"])
            found.append(part.filter(pc.is_in(part.column(ID), value_set=scored.column(ID).combine_chunks())))
    labels = pa.concat_tables(found).to_pandas().sort_values("reported_at", kind="stable")
    labels = labels.drop_duplicates(ID, keep="last")
    frame = scored.to_pandas().merge(labels[[ID, LABEL]], on=ID, how="inner")
    return frame.rename(columns={SCORE: "score"})[[ID, "score", LABEL, VERSION]]


def classification_snapshot(day: dt.date, frame: pd.DataFrame, s: Settings) -> tuple[Any, int]:
    """Evidently's classification report of a labelled day at the version's operating threshold,
    with PR-AUC and recall at 1% FPR."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    from include.mlops.monitoring import VERSION

    version = int(frame[VERSION].mode().iloc[0])
    client = registry.configure_mlflow(s)
    threshold = registry.operating_threshold(client, s.model_name, version) or 0.5
    data = frame[["score", LABEL]].astype({"score": "float64", LABEL: "int64"})
    definition = DataDefinition(
        classification=[BinaryClassification(target=LABEL, prediction_probas="score")],
        numerical_columns=["score"],
        categorical_columns=[LABEL],
    )
    report = Report(
        [
            PrAuc(target=LABEL, score="score"),
            RecallAtFpr(target=LABEL, score="score"),
            ClassificationPreset(probas_threshold=threshold),
        ]
    )
    snapshot = report.run(Dataset.from_pandas(data, data_definition=definition), None)
    return _dated(snapshot, day, CLASSIFICATION_TAG, version), version


def dashboard_panels(features: tuple[str, ...]) -> list[Any]:
    """The project's panels: drift share, per-feature and prediction PSI, PR-AUC and recall over time."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    drift = {"tags": [DRIFT_TAG]}
    quality = {"tags": [CLASSIFICATION_TAG]}
    return [
        line_plot_panel(
            "Share of drifted key features",
            [
                PanelMetric(
                    legend="share",
                    metric="DriftedColumnsCount",
                    metric_labels={"value_type": "share"},
                    **drift,
                )
            ],
            description="Per checked day; a share of MLOPS_DRIFT_SHARE (0.3) counts as drift.",
        ),
        line_plot_panel(
            "PSI of each key feature",
            [
                PanelMetric(legend=f, metric="ValueDrift", metric_labels={"column": f}, **drift)
                for f in features
            ],
            description="PSI over the reference's deciles (thresholds 0.2, 0.1 for 0/1 features).",
        ),
        line_plot_panel(
            "Prediction drift (PSI of the champion's score)",
            [
                PanelMetric(
                    legend="prediction", metric="ValueDrift", metric_labels={"column": "prediction"}, **drift
                )
            ],
            size="half",
        ),
        line_plot_panel(
            "PR-AUC and recall at 1% FPR on labelled days",
            [
                PanelMetric(legend="PR-AUC", metric="PrAuc", **quality),
                PanelMetric(legend="recall at 1% FPR", metric="RecallAtFpr", **quality),
            ],
            size="half",
        ),
    ]


def build(workspace: Path, s: Settings | None = None, progress: Any = None) -> dict[str, Any]:
    """Rebuild the project in ``workspace`` from the lake; returns what it holds.

    Days that cannot be rebuilt (a version without a reference sample, a day rescored meanwhile)
    are skipped with a warning and listed under ``skipped``.
    """
    from evidently.sdk.models import ProjectModel
    from evidently.ui.workspace import Workspace

    s = resolve_settings(s)
    policy = DriftPolicy.from_env()
    say = progress or (lambda line: None)
    workspace.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace))
    pid = project_id(s)
    if ws.get_project(pid) is not None:
        ws.delete_project(pid)
    project = ws.add_project(
        ProjectModel(
            id=pid,
            name=f"{s.model_name}: drift and quality",
            description="Rebuilt from the lake by `make dashboards`: the monitor's drift report of each "
            "checked day, and the classification report of each fully labelled day.",
        )
    )
    built: dict[str, Any] = {
        "workspace": str(workspace),
        "project_id": str(pid),
        DRIFT_TAG: [],
        CLASSIFICATION_TAG: [],
    }
    built["skipped"] = []
    for day in sorted(records.verdicts(s)):
        try:
            snapshot, version = drift_snapshot(day, policy, s)
        except Exception as exc:
            logger.warning("no drift snapshot for %s: %s", day, exc)
            built["skipped"].append(f"drift {day}: {exc}")
            continue
        ws.add_run(project.id, snapshot, name=f"drift {day} (v{version})")
        built[DRIFT_TAG].append(day.isoformat())
        say(f"drift {day} (v{version})")
    for day in records.landed_days(lake.PREDICTIONS, s):
        frame = labelled_day(day, s)
        if frame is None or frame.empty or frame[LABEL].nunique() < 2:
            continue
        snapshot, version = classification_snapshot(day, frame, s)
        ws.add_run(project.id, snapshot, name=f"classification {day} (v{version})")
        built[CLASSIFICATION_TAG].append(day.isoformat())
        say(f"classification {day} (v{version})")
    for panel in dashboard_panels(tuple(policy.features)):
        project.dashboard.add_panel(panel, tab="Drift and quality")
    return built


def serve(workspace: Path, port: int, host: str) -> int:
    """Replace this process with ``evidently ui`` on ``workspace``."""
    command = [str(Path(sys.executable).with_name("evidently")), "ui", "--workspace", str(workspace)]
    command += ["--host", host, "--port", str(port)]
    print(f"Evidently UI on http://{host}:{port} (workspace {workspace}); Ctrl-C stops it", flush=True)
    os.execv(command[0], command)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m include.devtools dashboards [--no-build] [--no-serve] [--port 8002] ...``"""
    parser = argparse.ArgumentParser(prog="python -m include.devtools dashboards", description=__doc__)
    parser.add_argument(
        "--workspace", type=Path, default=None, help="workspace folder (default $MLOPS_HOME/evidently)"
    )
    parser.add_argument("--port", type=int, default=8002, help="port of the Evidently UI (default 8002)")
    parser.add_argument("--host", default="127.0.0.1", help="address the UI binds (default 127.0.0.1)")
    parser.add_argument("--no-build", action="store_true", help="serve the workspace as it is")
    parser.add_argument("--no-serve", action="store_true", help="rebuild only")
    args = parser.parse_args(argv)
    workspace = args.workspace or default_workspace(settings())
    if not args.no_build:
        built = build(workspace, progress=lambda line: print(line, file=sys.stderr, flush=True))
        print(
            f"{len(built[DRIFT_TAG])} drift and {len(built[CLASSIFICATION_TAG])} classification snapshots "
            f"in {workspace}" + (f"; skipped: {len(built['skipped'])}" if built["skipped"] else "")
        )
    if args.no_serve:
        return 0
    return serve(workspace, args.port, args.host)
