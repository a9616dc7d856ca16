"""The arithmetic of ``make bench``: scaling exponents, the chain's totals, whether a size fits the
machine, and the figures as a plain table and as the README's Markdown rows.

Pure functions over the results :mod:`include.devtools.bench` gathers (one dict per size, one dict
per stage with ``seconds``, ``wall_seconds``, ``rows``, ``peak_rss_mib``, ``floor_seconds``; a
stage that did not run holds ``skipped`` or ``error`` instead), so that each rule is tested alone.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

STAGES = ("simulate", "ingest", "features", "materialize", "training", "scoring", "drift")
CHAIN = ("ingest", "features", "materialize", "scoring", "drift")
"""The stages one day goes through in production (the goal: under 90 s at 1M rows, start-up included)."""

DEPENDS = {
    "simulate": (),
    "ingest": ("simulate",),
    "features": ("ingest",),
    "materialize": ("features",),
    "training": (),
    "scoring": ("ingest", "training"),
    "drift": ("scoring",),
}
"""What each stage reads that an earlier stage of the measured day writes (the world aside)."""

CHAIN_GOAL_RATIO = 8.0
"""The chain's process seconds within this multiple of the sum of its floors."""
PEAK_GOAL_MIB = 2048.0
"""Every task of the chain under 2 GB of peak RSS (read as 2 GiB)."""

MEMORY_SHARE = 0.8
"""A size runs when its largest estimated step needs at most this share of the available memory."""
DISK_SHARE = 0.8
"""... and its estimated world at most this share of the free disk."""
LOW_MEMORY_MIB = 1024.0
"""A running step is stopped when the machine's available memory falls under this."""
RULE_BASE_MIB = 512.0
RULE_MIB_PER_MILLION = 3584.0
"""Without a measured size to scale from: 512 MiB plus 3.5 GiB per million rows (the 1M day's largest
step, scoring, peaked at 4.0 GiB on a 2-CPU machine)."""
RULE_DISK_BYTES_PER_ROW = 1200.0
"""... and 1.2 KB of disk per row of the day (its world: the lake, snapshots, summaries and the
online store, about 1 KB a row at 20k and 50k rows)."""

LABELS = {
    "simulate": "simulate",
    "ingest": "ingest + validate",
    "features": "features",
    "materialize": "materialize",
    "training": "training",
    "scoring": "scoring",
    "drift": "drift",
}
"""Each stage's name in the README's table."""


# --------------------------------------------------------------------------------------------------
# Scaling


def exponent(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``log(seconds)`` against ``log(rows)`` over ``(rows, seconds)`` points.

    1 is linear, under 1 means fixed costs still weigh. None without two distinct positive row counts.
    """
    usable = [(math.log(r), math.log(s)) for r, s in points if r > 0 and s > 0]
    if len({x for x, _ in usable}) < 2:
        return None
    mx = sum(x for x, _ in usable) / len(usable)
    my = sum(y for _, y in usable) / len(usable)
    return sum((x - mx) * (y - my) for x, y in usable) / sum((x - mx) ** 2 for x, _ in usable)


def scaling(per_size: dict[int, dict]) -> dict[str, dict[str, float]]:
    """Each stage's exponent over every size it ran at: ``{"work": {stage: e}, "process": {stage: e}}``."""
    out: dict[str, dict[str, float]] = {"work": {}, "process": {}}
    for stage in STAGES:
        ran = [r[stage] for r in per_size.values() if "seconds" in r.get(stage, {})]
        for kind, key in (("work", "seconds"), ("process", "wall_seconds")):
            value = exponent([(m["rows"], m[key]) for m in ran])
            if value is not None:
                out[kind][stage] = value
    return out


def chain_totals(stages: dict[str, Any]) -> dict[str, Any]:
    """The day's chain (:data:`CHAIN`): process, work and floor seconds summed, and the highest peak.

    ``ratio_to_floor`` divides the process seconds (what the tasks cost, start-up included) by the
    floors (the least work on the same rows); ``missing`` names the stages that did not run.
    """
    ran = [s for s in CHAIN if "seconds" in stages.get(s, {})]
    out: dict[str, Any] = {
        "stages": list(CHAIN),
        "missing": [s for s in CHAIN if s not in ran],
        "process_seconds": sum(stages[s]["wall_seconds"] for s in ran),
        "work_seconds": sum(stages[s]["seconds"] for s in ran),
        "floor_seconds": sum(stages[s].get("floor_seconds") or 0.0 for s in ran),
        "goal_ratio": CHAIN_GOAL_RATIO,
        "goal_peak_rss_mib": PEAK_GOAL_MIB,
    }
    floors = out["floor_seconds"]
    out["ratio_to_floor"] = out["process_seconds"] / floors if floors > 0 else None
    out["work_ratio_to_floor"] = out["work_seconds"] / floors if floors > 0 else None
    out["within_ratio"] = out["ratio_to_floor"] is not None and out["ratio_to_floor"] <= CHAIN_GOAL_RATIO
    peak = max(ran, key=lambda s: stages[s]["peak_rss_mib"], default=None)
    out["peak_rss_mib"] = stages[peak]["peak_rss_mib"] if peak else None
    out["peak_stage"] = peak
    out["within_peak"] = peak is not None and out["peak_rss_mib"] <= PEAK_GOAL_MIB
    return out


# --------------------------------------------------------------------------------------------------
# Will it fit


def available_mib(meminfo: str | None = None) -> float:
    """``MemAvailable`` of ``/proc/meminfo`` (or of the text given) in MiB."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no MemAvailable line in /proc/meminfo")


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def estimate(points: dict[int, float], rows: int) -> float:
    """``points`` (rows -> a measured value) carried to ``rows``, linear in rows.

    Through the two largest sizes when there are two (their slope, never negative), proportional
    to the one size otherwise: both overestimate a stage whose memory grows less than its rows.
    """
    sizes = sorted(points)
    if not sizes:
        raise ValueError("no measured size to scale from")
    top = sizes[-1]
    if len(sizes) == 1:
        return points[top] * rows / top
    low = sizes[-2]
    slope = max((points[top] - points[low]) / (top - low), 0.0)
    return max(points[top] + slope * (rows - top), 0.0)


@dataclass(frozen=True)
class Scaling:
    """How a world's needs follow from the footprints of the sizes measured."""

    steps: tuple[str, ...] | None = None
    """Only these steps (None: every step of the footprints)."""
    rows_of: Callable[[str, int], float] | None = None
    """What a step's memory grows with in a world of a size (None: the size)."""
    memory_factor: float = 1.0
    disk_factor: float = 1.0
    """Multiply the estimates (a world of other days than the measured ones)."""


def _needs(rows: int, references: dict[int, dict], scaling: Scaling) -> tuple[float, str, float, str]:
    """(memory MiB, the step that needs it, disk bytes, what the figures rest on) for a ``rows`` day."""
    wanted = scaling.steps
    peaks = {
        r: {k: v for k, v in f["peak_rss_mib"].items() if wanted is None or k in wanted}
        for r, f in references.items()
    }
    used = sorted(r for r in peaks if peaks[r])[-2:]
    if not used:
        memory = RULE_BASE_MIB + RULE_MIB_PER_MILLION * rows / 1e6
        return (
            memory,
            "largest",
            RULE_DISK_BYTES_PER_ROW * rows,
            "the stated rule: no measured size to scale from",
        )
    x = scaling.rows_of or (lambda _step, size: size)
    memory = {
        step: estimate({x(step, r): peaks[r][step] for r in used if step in peaks[r]}, x(step, rows))
        for step in set().union(*(peaks[r] for r in used))
    }
    step = max(memory, key=memory.__getitem__)
    disk = estimate({r: references[r]["disk_bytes"] for r in used}, rows)
    return memory[step], step, disk, "scaled from the " + " and ".join(short(r) for r in used) + " runs"


def fit(
    rows: int, references: dict[int, dict], free_mib: float, free_disk: float, scaling: Scaling = Scaling()
) -> dict[str, Any]:
    """Whether a ``rows`` day (its world and steps) fits the machine now, and why not.

    ``references`` maps measured sizes to their :func:`footprint`; ``free_mib`` is the available
    memory, ``free_disk`` the free bytes of the disk.
    """
    memory, step, disk, basis = _needs(rows, references, scaling)
    memory, disk = memory * scaling.memory_factor, disk * scaling.disk_factor
    out = {"memory_mib": memory, "step": step, "disk_bytes": disk, "basis": basis}
    out.update(available_mib=free_mib, free_disk_bytes=free_disk)
    problems = []
    if memory > MEMORY_SHARE * free_mib:
        problems.append(
            f"its {step} step needs about {mib(memory)} of memory ({basis}); {mib(free_mib)} are "
            f"available and the bench uses at most {MEMORY_SHARE:.0%} of it"
        )
    if disk > DISK_SHARE * free_disk:
        problems.append(
            f"its world needs about {disk / 2**30:.1f} GiB of disk ({basis}); "
            f"{free_disk / 2**30:.1f} GiB are free and the bench uses at most {DISK_SHARE:.0%} of it"
        )
    out["fits"] = not problems
    out["reason"] = "; ".join(problems)
    return out


def footprint(results: dict, home: Path) -> dict:
    """A measured size's footprint: each step's peak RSS (world, stages, floors) and its home's bytes."""
    peaks = {"world": results["world"]["peak_rss_mib"]}
    for stage in STAGES:
        m = results[stage]
        if "peak_rss_mib" in m:
            peaks[stage] = m["peak_rss_mib"]
        if m.get("floor_peak_rss_mib") is not None:
            peaks[f"{stage}_floor"] = m["floor_peak_rss_mib"]
    return {"peak_rss_mib": peaks, "disk_bytes": disk_bytes(home)}


def short_of_memory(pid: int) -> str | None:
    """Why the running step ``pid`` must stop now, or None while the machine has memory left."""
    import psutil

    free = available_mib()
    if free >= LOW_MEMORY_MIB:
        return None
    try:
        root = psutil.Process(pid)
        held = sum(p.memory_info().rss for p in (root, *root.children(recursive=True))) / 2**20
    except psutil.Error:
        held = 0.0
    return f"stopped: the machine's available memory fell to {mib(free)} while the step held {mib(held)}"


# --------------------------------------------------------------------------------------------------
# Figures as text


def short(rows: float) -> str:
    """A size as the README writes it, to three digits: ``100k``, ``1M``, ``2.5M``, ``49.5k``."""
    if rows >= 1e6:
        return f"{rows / 1e6:.3g}M"
    if rows >= 1e3:
        return f"{rows / 1e3:.3g}k"
    return f"{rows:.3g}"


def mib(value: float) -> str:
    """Memory in MiB, or in GiB from 1 GiB on."""
    return f"{value:.0f} MiB" if value < 1024 else f"{value / 1024:.1f} GiB"


def rate(value: float) -> str:
    """Rows per second as the README writes them: ``580``, ``1.5k``, ``478k``, ``1.2M``."""
    if value < 1e3:
        return f"{value:.0f}"
    if value < 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value / 1e3:.0f}k" if value < 1e6 else f"{value / 1e6:.1f}M"


def secs(value: float) -> str:
    """Seconds: two decimals under 10, one above."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def times(value: float | None) -> str:
    """A ratio: one decimal under 10, none above; ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _sizes(results: dict) -> dict[int, dict]:
    """The per-size results with integer keys (JSON turns them into strings)."""
    return {int(k): v for k, v in results.get("sizes", {}).items()}


def _ran(size: dict) -> bool:
    return "skipped" not in size and "error" not in size


def _label(stage: str, measured: dict) -> str:
    if stage == "drift" and measured.get("sampled_rows"):
        return f"drift ({short(measured['sampled_rows'])} sample)"
    return LABELS[stage]


def _rows_cell(stage: str, measured: dict) -> str:
    rows = f"{measured['rows']:,}"
    if stage == "materialize":
        return f"{rows} snapshot rows"
    if stage == "training" and measured.get("days"):
        return f"{rows} ({measured['days']} days)"
    return rows


def _exponent_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_row(stage: str, measured: dict, *exponents: float | None) -> str:
    """One stage as a row of the README's table, then a cell per exponent given (a stage that did
    not run says why)."""
    if "seconds" not in measured:
        why = measured.get("skipped") or measured.get("error", "did not run")
        return f"| {LABELS[stage]} | not run: {why} |" + " |" * (6 + len(exponents))
    cells = [
        _label(stage, measured),
        _rows_cell(stage, measured),
        secs(measured["seconds"]),
        secs(measured["wall_seconds"]),
        rate(measured["rows_per_second"]),
        mib(measured["peak_rss_mib"]),
        "-" if measured.get("floor_seconds") is None else f"{measured['floor_seconds']:.2f}",
        times(measured.get("ratio_to_floor")),
        *(_exponent_cell(e) for e in exponents),
    ]
    return "| " + " | ".join(cells) + " |"


def chain_sentence(rows: int, chain: dict) -> str:
    """The chain of one day against its goals, as a sentence."""
    missing = f" ({', '.join(chain['missing'])} did not run)" if chain["missing"] else ""
    peak = "-" if chain["peak_rss_mib"] is None else mib(chain["peak_rss_mib"])
    return (
        f"Chain of the {short(rows)} day (ingest + validate, features, materialize, scoring, drift)"
        f"{missing}: {secs(chain['process_seconds'])} s of process time ({secs(chain['work_seconds'])} s of "
        f"work) against {chain['floor_seconds']:.2f} s of floors, x{times(chain['ratio_to_floor'])} "
        f"(goal: within {chain['goal_ratio']:g}x: {'met' if chain['within_ratio'] else 'not met'}); "
        f"highest peak RSS {peak} ({chain['peak_stage']}) against {chain['goal_peak_rss_mib'] / 1024:g} GiB "
        f"({'under' if chain['within_peak'] else 'over'})."
    )


def _other_size(rows: int, size: dict) -> str:
    ran = [s for s in STAGES if "seconds" in size.get(s, {})]
    parts = ", ".join(f"{s} {secs(size[s]['seconds'])} / {secs(size[s]['wall_seconds'])} s" for s in ran)
    return f"At {short(rows)} rows the same stages take (work / process): {parts}."


def markdown(results: dict) -> list[str]:
    """The README's table of the stages (the 1M day, else the largest run) and its sentences."""
    sizes = _sizes(results)
    measured = sorted(r for r, v in sizes.items() if _ran(v))
    lines = []
    if measured:
        main = 1_000_000 if 1_000_000 in measured else measured[-1]
        span = f" {short(measured[0])}->{short(measured[-1])}" if len(measured) > 1 else ""
        exponents = results.get("scaling_exponent", {}), results.get("scaling_exponent_process", {})
        lines += [
            f"| stage | rows ({short(main)} day) | work s | process s | rows/s | peak RSS | floor s "
            f"| x floor | exponent{span} | process exponent |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for stage in STAGES:
            measured_stage = sizes[main].get(stage, {"skipped": "not measured"})
            lines.append(
                markdown_row(stage, measured_stage, exponents[0].get(stage), exponents[1].get(stage))
            )
        lines += ["", chain_sentence(main, sizes[main]["chain"])]
        for rows in (r for r in measured if r != main):
            lines += ["", _other_size(rows, sizes[rows]) + " " + chain_sentence(rows, sizes[rows]["chain"])]
    for rows, size in sorted(sizes.items()):
        if not _ran(size):
            lines += ["", f"The {short(rows)} day was not run: {size.get('skipped') or size.get('error')}."]
    return lines


def training_markdown(results: dict) -> list[str]:
    """The training-at-scale runs as rows of the README's table."""
    lines = [
        "| training | rows | work s | process s | rows/s | peak RSS | floor s | x floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, size in sorted(_sizes(results).items()):
        row = markdown_row("training", size.get("training", size))
        lines.append(row.replace("| training |", f"| {results['training_days']} days of {short(rows)} |", 1))
    return lines


def summary(results: dict) -> list[str]:
    """Every size's stages as a plain table, then the exponents and the chains."""
    lines = [
        f"{'size':>6} {'stage':<12} {'rows':>12} {'work s':>8} {'process s':>9} {'rows/s':>7} "
        f"{'peak':>9} {'floor s':>8} {'x floor':>7}"
    ]
    sizes = _sizes(results)
    for rows, size in sorted(sizes.items()):
        if not _ran(size):
            lines.append(f"{short(rows):>6} not run: {size.get('skipped') or size.get('error')}")
            continue
        for stage in STAGES:
            m = size.get(stage, {})
            if "seconds" not in m:
                lines.append(f"{short(rows):>6} {stage:<12} not run: {m.get('skipped') or m.get('error')}")
                continue
            floor = "-" if m.get("floor_seconds") is None else f"{m['floor_seconds']:.2f}"
            lines.append(
                f"{short(rows):>6} {stage:<12} {m['rows']:>12,} {secs(m['seconds']):>8} "
                f"{secs(m['wall_seconds']):>9} {rate(m['rows_per_second']):>7} {mib(m['peak_rss_mib']):>9} "
                f"{floor:>8} {times(m.get('ratio_to_floor')):>7}"
            )
    work, process = results.get("scaling_exponent", {}), results.get("scaling_exponent_process", {})
    for stage in (s for s in STAGES if s in work or s in process):
        lines.append(
            f"exponent {stage:<12} work {_exponent_cell(work.get(stage))}  "
            f"process {_exponent_cell(process.get(stage))}"
        )
    lines += [chain_sentence(r, s["chain"]) for r, s in sorted(sizes.items()) if _ran(s) and "chain" in s]
    return lines


# --------------------------------------------------------------------------------------------------
# The machine and the saved files


def machine() -> dict:
    """CPUs, CPU model, memory and Python: the figures' context, and whose footprints may be reused."""
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory": memory, "python": platform.python_version()}


def stage_line(stage: str, rows: int, m: dict) -> str:
    """One stage of one size as the bench prints it while it runs."""
    if "seconds" not in m:
        return f"{stage:<11} {rows:>9,}: not run: {m.get('skipped') or m.get('error')}"
    floor = "-" if m["floor_seconds"] is None else f"{m['floor_seconds']:6.2f} s"
    return (
        f"{stage:<11} {rows:>9,}: {m['rows']:>9,} rows {m['seconds']:7.2f} s "
        f"(process {m['wall_seconds']:6.2f} s)  {m['rows_per_second']:>10,.0f} rows/s  "
        f"peak {m['peak_rss_mib']:6.0f} MiB  floor {floor}  x{times(m['ratio_to_floor'])}"
        + (
            ""
            if m.get("layout_floor_seconds") is None
            else f" (Feast's layout {m['layout_floor_seconds']:.2f} s)"
        )
    )


def disk_bytes(home: Path) -> int:
    """Bytes of every file under ``home``."""
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file())


def previous_footprints(root: Path, this_machine: dict) -> dict[int, dict]:
    """The footprints of the run saved in ``root/latest.json``, if it ran on a machine like this one."""
    try:
        saved = json.loads((root / "latest.json").read_text())
    except (OSError, ValueError):
        return {}
    if saved.get("machine") != this_machine:
        return {}
    return {int(r): s["footprint"] for r, s in saved.get("sizes", {}).items() if "footprint" in s}


def save(results: dict, out: Path) -> None:
    """Write ``results`` as indented JSON to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
