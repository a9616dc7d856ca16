"""The demo's summary: one row per replayed day, one per training, as text and as an HTML page.

Per day: the drops' validation, the champion that scored it, the drift share against *that*
champion's reference (the drift monitor's verdict), whether it asked for a retrain, and the
PR-AUC of its scores once all its labels are in (computed here from the lake: predictions joined
with the labels reported in the five days after). Per training run: why it ran, as of which day,
and what the promotion gate decided. The HTML page (written under the reports store, served by
the Airflow plugin at ``/mlops/reports/demo/index.html``) adds a chart of drift share and PR-AUC
per day with the champion changes marked.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import urllib.parse
from dataclasses import dataclass
from typing import Any

from include.devtools.replay import PRODUCERS, Tracker, training_as_of
from include.mlops import lake
from include.mlops.core.schema import CHAMPION_VERSION, LABEL, MAX_LABEL_DELAY_DAYS, SCORE_CHAMPION

SUMMARY_FOLDER = "demo"
SUMMARY_PAGE = "index.html"
OUTCOME_TASKS = ("evaluate_and_promote", "promote", "evaluate")
"""The ``train_model`` tasks whose result carries the promotion decision, first found wins."""


@dataclass
class DayRow:
    """One replayed day in the summary."""

    day: str
    drifted_world: bool
    rows: int | None
    transactions: str
    labels: str
    champion: int | None
    drift_share: float | None
    drift_threshold: float | None
    retrain_requested: bool
    pr_auc: float | None
    frauds: int | None


@dataclass
class TrainingRow:
    """One ``train_model`` run in the summary."""

    run_id: str
    run_type: str
    as_of: str
    reason: str
    state: str
    outcome: str
    version: int | None
    detail: str


def _json(loc: lake.Location) -> dict | None:
    return json.loads(lake.read_bytes(loc)) if lake.exists(loc) else None


def _predictions(day: dt.date) -> Any:
    loc = lake.partition_file(lake.PREDICTIONS, day)
    if not lake.exists(loc):
        return None
    return lake.read_parquet(loc, columns=["transaction_id", SCORE_CHAMPION, CHAMPION_VERSION]).to_pandas()


def _labels(days: list[dt.date]) -> Any:
    import pandas as pd

    frames = []
    for day in days:
        table = lake.read_table(lake.partition("lake", "labels", day), columns=["transaction_id", LABEL])
        if table is not None:
            frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else None


def labelled_quality(day: dt.date, last_labels: dt.date) -> tuple[float | None, int | None]:
    """PR-AUC of the day's champion scores and its frauds, once every label of the day is in."""
    from include.mlops.core.metrics import average_precision

    if day + dt.timedelta(days=MAX_LABEL_DELAY_DAYS) > last_labels:
        return None, None
    scored = _predictions(day)
    labels = _labels([day + dt.timedelta(days=i) for i in range(1, MAX_LABEL_DELAY_DAYS + 1)])
    if scored is None or labels is None:
        return None, None
    joined = scored.merge(labels, on="transaction_id", how="inner")
    frauds = int(joined[LABEL].sum())
    if frauds == 0:
        return None, 0
    return average_precision(joined[LABEL].to_numpy(), joined[SCORE_CHAMPION].to_numpy()), frauds


def day_rows(demo: Any, tracker: Tracker) -> list[DayRow]:
    """One row per replayed day (see the module's documentation)."""
    ingest = {d: tracker.states(d, demo.keys) for d in PRODUCERS}
    last_labels = max(
        (dt.date.fromisoformat(k) for k, v in ingest["ingest_labels"].items() if v == "success"),
        default=demo.start,
    )
    rows = []
    for key in demo.keys:
        day = dt.date.fromisoformat(key)
        verdict = _json(lake.partition("reports", lake.DRIFT_REPORTS, key).join("verdict.json")) or {}
        scored = _predictions(day)
        versions = sorted(set(scored[CHAMPION_VERSION])) if scored is not None and len(scored) else []
        files = lake.data_files(lake.partition("lake", "transactions", key))
        pr_auc, frauds = labelled_quality(day, last_labels)
        rows.append(
            DayRow(
                day=key,
                drifted_world=bool(demo.drift_from and day >= demo.drift_from),
                rows=sum(lake.parquet_rows(f) for f in files) if files else None,
                transactions=ingest["ingest_transactions"].get(key, "-"),
                labels=ingest["ingest_labels"].get(key, "-"),
                champion=int(versions[-1]) if versions else None,
                drift_share=verdict.get("drift_share"),
                drift_threshold=(verdict.get("policy") or {}).get("drift_share"),
                retrain_requested=bool(verdict.get("retrain")),
                pr_auc=pr_auc,
                frauds=frauds,
            )
        )
    return rows


def training_outcome(client: Any, run_id: str) -> dict | None:
    """The promotion decision a ``train_model`` run returned, or ``None`` (not decided, or no decision)."""
    for task_id in OUTCOME_TASKS:
        path = (
            f"/api/v2/dags/train_model/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
            f"{task_id}/xcomEntries/return_value"
        )
        try:
            value = client.get(path)["value"]
        except Exception:
            continue
        result = value if isinstance(value, dict) else json.loads(value)
        if isinstance(result, dict) and "outcome" in result:
            return result
    return None


def training_rows(tracker: Tracker) -> list[TrainingRow]:
    """One row per training run, oldest day first, with the gate's decision."""
    rows = []
    for run in sorted(tracker.trainings(), key=lambda r: (training_as_of(r), r["dag_run_id"])):
        conf = run.get("conf") or {}
        result = training_outcome(tracker.client, run["dag_run_id"]) or {}
        waiting = run["state"] not in ("success", "failed")
        rows.append(
            TrainingRow(
                run_id=run["dag_run_id"],
                run_type=run.get("run_type") or "-",
                as_of=str(training_as_of(run)),
                reason=conf.get("reason") or "nightly schedule",
                state="waiting for labels" if waiting else run["state"],
                outcome=result.get("outcome", "-"),
                version=result.get("challenger_version"),
                detail=result.get("reason", ""),
            )
        )
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_days(rows: list[DayRow]) -> str:
    """The per-day table as text."""
    header = (
        f"{'day':<11} {'world':<8} {'rows':>7} {'txn GX':<8} {'labels GX':<9} {'champion':<8} "
        f"{'drift share':>11} {'PR-AUC':>7}  note"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        note = "retrain requested" if r.retrain_requested else ""
        if r.transactions == "failed":
            note = "drop quarantined"
        lines.append(
            f"{r.day:<11} {'drifted' if r.drifted_world else 'usual':<8} "
            f"{r.rows if r.rows is not None else '-':>7} {r.transactions:<8} {r.labels:<9} "
            f"{'v' + str(r.champion) if r.champion else '-':<8} {_fmt(r.drift_share):>11} "
            f"{_fmt(r.pr_auc, 3):>7}  {note}"
        )
    return "\n".join(lines)


def format_trainings(rows: list[TrainingRow]) -> str:
    """The training runs as text."""
    lines = []
    for r in rows:
        version = f" v{r.version}" if r.version else ""
        lines.append(
            f"as of {r.as_of} [{r.run_type}] {r.reason!r}: {r.state}, {r.outcome}{version}"
            + (f" ({r.detail})" if r.detail else "")
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The HTML page

_W, _H, _PAD = 900, 300, 40


def _chart(rows: list[DayRow]) -> str:
    """An inline SVG: drift share and PR-AUC per day (0..1), the drift threshold, champion changes."""
    n = max(len(rows), 2)

    def x(i: int) -> float:
        return _PAD + i * (_W - 2 * _PAD) / (n - 1)

    def y(v: float) -> float:
        return _H - _PAD - v * (_H - 2 * _PAD)

    parts = [
        f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img" aria-label="drift share and PR-AUC per day">'
    ]
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{_PAD}" x2="{_W - _PAD}" y1="{y(v)}" y2="{y(v)}" class="grid"/>')
        parts.append(f'<text x="{_PAD - 6}" y="{y(v) + 4}" text-anchor="end">{v:g}</text>')
    threshold = next((r.drift_threshold for r in rows if r.drift_threshold is not None), None)
    if threshold is not None:
        parts.append(
            f'<line x1="{_PAD}" x2="{_W - _PAD}" y1="{y(threshold)}" y2="{y(threshold)}" class="limit"/>'
        )
        parts.append(f'<text x="{_W - _PAD}" y="{y(threshold) - 4}" text-anchor="end">drift threshold</text>')
    previous = None
    for i, r in enumerate(rows):
        if r.drifted_world:
            parts.append(
                f'<rect x="{x(i) - 4}" y="{_PAD}" width="8" height="{_H - 2 * _PAD}" class="world"/>'
            )
        if r.champion and r.champion != previous:
            parts.append(
                f'<line x1="{x(i)}" x2="{x(i)}" y1="{_PAD - 10}" y2="{_H - _PAD}" class="champion"/>'
            )
            parts.append(f'<text x="{x(i) + 3}" y="{_PAD - 14}">v{r.champion}</text>')
            previous = r.champion
        if i % 2 == 0 or i == len(rows) - 1:
            parts.append(f'<text x="{x(i)}" y="{_H - _PAD + 16}" text-anchor="middle">{r.day[5:]}</text>')
    for name, values in (("drift", [r.drift_share for r in rows]), ("prauc", [r.pr_auc for r in rows])):
        points = [(x(i), y(v)) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" class="{name}"/>')
            parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" class="{name}"/>' for px, py in points]
    parts.append("</svg>")
    return "\n".join(parts)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.drifted td:first-child { border-left: 4px solid #f0a030; }
svg text { font-size: 11px; fill: #555; } .grid { stroke: #eee; }
.limit { stroke: #d33; stroke-dasharray: 4 3; }
.world { fill: #f0a030; opacity: 0.12; } .champion { stroke: #2a7; stroke-width: 1.5; }
polyline { fill: none; stroke-width: 2; } polyline.drift, circle.drift { stroke: #d33; fill: #d33; }
polyline.prauc, circle.prauc { stroke: #36c; fill: #36c; } polyline.drift, polyline.prauc { fill: none; }
.legend span { margin-right: 1.5em; }
.sw { display: inline-block; width: 12px; height: 12px; vertical-align: -1px; }
"""


def _cells(values: list[str], numeric: set[int] = frozenset()) -> str:
    return "".join(
        f'<td class="n">{v}</td>' if i in numeric else f"<td>{v}</td>" for i, v in enumerate(values)
    )


def html_page(demo: Any, days: list[DayRow], trainings: list[TrainingRow], cadence: str) -> str:
    """The summary as one self-contained page (no script, no external resource)."""
    e = html.escape
    day_lines = []
    for r in days:
        report = f"../{lake.DRIFT_REPORTS}/{lake.partition_name(r.day)}/drift.html"
        share = f'<a href="{report}">{_fmt(r.drift_share)}</a>' if r.drift_share is not None else "-"
        note = (
            "drop quarantined"
            if r.transactions == "failed"
            else ("retrain requested" if r.retrain_requested else "")
        )
        values = [
            e(r.day),
            "drifted" if r.drifted_world else "usual",
            str(r.rows if r.rows is not None else "-"),
            e(r.transactions),
            e(r.labels),
            f"v{r.champion}" if r.champion else "-",
            share,
            _fmt(r.pr_auc, 3),
            note,
        ]
        day_lines.append(
            f'<tr class="{"drifted" if r.drifted_world else ""}">{_cells(values, {2, 6, 7})}</tr>'
        )
    train_lines = [
        "<tr>"
        + _cells(
            [
                e(t.as_of),
                e(t.run_type),
                e(t.reason),
                e(t.state),
                e(t.outcome) + (f" v{t.version}" if t.version else ""),
                e(t.detail),
            ]
        )
        + "</tr>"
        for t in trainings
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Card-fraud MLOps: demo replay</title>
<style>{_STYLE}</style></head><body>
<h1>Demo replay {e(str(demo.start))} .. {e(str(demo.end))}</h1>
<p>{demo.days} days of {demo.rows_per_day} payments; the world drifts from
{e(str(demo.drift_from or "never"))}; {e(cadence)}. Each day is scored by the champion in force
that day and its drift is measured against that champion's reference.</p>
<p class="legend"><span><i class="sw" style="background:#d33"></i> drift share</span>
<span><i class="sw" style="background:#36c"></i> PR-AUC (labelled days)</span>
<span><i class="sw" style="background:#2a7"></i> new champion</span>
<span><i class="sw" style="background:#f0a03040"></i> drifted world</span></p>
{_chart(days)}
<h2>Days</h2>
<table><tr><th>day</th><th>world</th><th>rows</th><th>transactions</th><th>labels</th><th>champion</th>
<th>drift share</th><th>PR-AUC</th><th></th></tr>
{"".join(day_lines)}</table>
<h2>Trainings</h2>
<table><tr><th>as of</th><th>run type</th><th>reason</th><th>state</th><th>decision</th><th>why</th></tr>
{"".join(train_lines)}</table>
</body></html>
"""


def write_page(page: str) -> lake.Location:
    """Write the page under the reports store (atomically); returns where."""
    loc = lake.root("reports").join(SUMMARY_FOLDER, SUMMARY_PAGE)
    lake.write_bytes(loc, page.encode())
    return loc
