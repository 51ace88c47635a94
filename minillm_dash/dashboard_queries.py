"""Small pure helpers behind the dashboard: incremental metric cache, runs table, summaries, diffs.

Why a module of its own: the Gradio wiring (ui_*.py) should only move values between widgets and
these functions, so everything that computes something (ETA, area under the curve, steps to a
threshold, what differs between two configs, which rows are new since the last refresh) is unit
tested here without a browser. No gradio and no plotly import.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from minillm_dash.plots import RunSeries, map_x

ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("done", "cancelled", "diverged", "failed", "interrupted")
YARDSTICKS = ("train/klr", "train/klf")
DEFAULT_CHART_METRICS = ("train/klr", "eval/klr", "loss/total")
LAST_VALUE_METRICS = ("loss/total", "train/klr", "eval/klr")
# Metrics the trainer logs (docs: issue list); the picker shows these even before they arrive.
KNOWN_METRICS = (
    "loss/total", "loss/ce", "loss/divergence", "loss/single", "loss/long", "loss/lm",
    "train/klr", "train/klf", "eval/klr", "eval/klf", "eval/nll", "eval/rouge_l", "eval/length",
    "train/entropy", "train/w_mean", "train/w_min", "train/w_max", "train/clip_frac", "train/grad_norm",
    "train/lr", "train/tokens_per_s", "train/tokens_seen", "train/response_len",
    "time/sampling", "time/teacher", "time/student", "time/optimizer", "time/step", "mem/peak_mb",
)
TOKENS_SEEN = ("train/tokens_seen", "tokens_seen")
RATE_METRIC = "loss/total"  # logged every step by every variant: the runs table's steps/s comes from it


def wanted_metrics(charts: Iterable[str], summary_metric: str | None, x_axis: str) -> set[str]:
    """Everything one Live page needs from the db this tick."""
    wanted = set(charts) | set(LAST_VALUE_METRICS) | {RATE_METRIC}
    if summary_metric:
        wanted.add(summary_metric)
    if x_axis == "tokens_seen":
        wanted.update(TOKENS_SEEN)
    return wanted


# ---------------------------------------------------------------- metric groups


def metric_group(name: str) -> str:
    """Which picker group a metric belongs to: loss terms, yardsticks (comparable), diagnostics."""
    if name.startswith("loss/"):
        return "loss"
    if name in YARDSTICKS or name.startswith("eval/"):
        return "yardstick"
    return "diagnostic"


def group_metrics(names: Iterable[str]) -> dict[str, list[str]]:
    """Split metric names into the three picker groups, in a stable order (known ones first)."""
    order = {n: i for i, n in enumerate(KNOWN_METRICS)}
    groups: dict[str, list[str]] = {"loss": [], "yardstick": [], "diagnostic": []}
    for n in sorted(set(names), key=lambda n: (order.get(n, len(order)), n)):
        groups[metric_group(n)].append(n)
    return groups


# ---------------------------------------------------------------- time helpers


def to_epoch(value: Any) -> float | None:
    """Accept datetimes (naive = UTC), epoch floats, ISO strings or None from the db layer."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        return to_epoch(_dt.datetime.fromisoformat(value))
    raise TypeError(f"cannot read a time from {value!r}")


def fmt_duration(seconds: float | None) -> str:
    """Compact human durations for tables: 42s, 3m05s, 1h02m; '' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_seconds(step: int, total: int, steps_per_s: float | None) -> float | None:
    """Remaining time at the current rate; None before the first measured rate."""
    if not steps_per_s or steps_per_s <= 0 or total <= 0:
        return None
    return max(total - step, 0) / steps_per_s


def recent_rate(steps: np.ndarray, walls: np.ndarray, window: int = 20) -> float | None:
    """Steps per second over the last `window` logged steps (robust to a slow first step)."""
    if len(steps) < 2:
        return None
    s = np.asarray(steps[-(window + 1):], dtype=np.float64)
    w = np.asarray(walls[-(window + 1):], dtype=np.float64)
    dt = w[-1] - w[0]
    if dt <= 0:
        return None
    return float((s[-1] - s[0]) / dt)


def fmt_value(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.4g}"


# ---------------------------------------------------------------- incremental metric cache


@dataclass
class Series:
    """One (run, metric) history held by a browser session."""

    steps: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    walls: np.ndarray = field(default_factory=lambda: np.empty(0))

    def append(self, steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> int:
        """Append rows newer than what is held (overlapping re-fetches are dropped); returns how many."""
        if len(self.steps):
            keep = steps > self.steps[-1]
            steps, values, walls = steps[keep], values[keep], walls[keep]
        if len(steps) == 0:
            return 0
        self.steps = np.concatenate([self.steps, steps])
        self.values = np.concatenate([self.values, values])
        self.walls = np.concatenate([self.walls, walls])
        return len(steps)


def _wall_times(rows: list[Sequence[Any]]) -> np.ndarray:
    first = rows[0][4]
    if first is None or isinstance(first, (int, float)):  # what the db gives: epoch floats
        return np.fromiter((np.nan if r[4] is None else r[4] for r in rows), np.float64, len(rows))
    # datetimes / ISO strings from another backend: one by one
    return np.array([np.nan if (t := to_epoch(r[4])) is None else t for r in rows], dtype=np.float64)


def group_rows(rows: Iterable[Sequence[Any]]) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(run_id, step, name, value, wall_time) rows -> {(run, name): (steps, values, walls)} sorted by step.

    Vectorised (one sort over all rows) because a page opening on a long experiment merges
    hundreds of thousands of rows at once. None values become NaN.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    if not rows:
        return {}
    n = len(rows)  # column by column with fromiter: zip(*rows) alone costs ~0.3 s for 500k rows
    rid_a = np.fromiter((r[0] for r in rows), np.int64, n)
    step_a = np.fromiter((r[1] for r in rows), np.int64, n)
    value_a = np.fromiter((np.nan if r[3] is None else r[3] for r in rows), np.float64, n)
    wall_a = _wall_times(rows)
    codes, uniques = pd.factorize(np.array([r[2] for r in rows], dtype=object))
    order = np.lexsort((step_a, codes, rid_a))
    rid_a, step_a, value_a, wall_a, codes = rid_a[order], step_a[order], value_a[order], wall_a[order], codes[order]
    cut = np.flatnonzero((rid_a[1:] != rid_a[:-1]) | (codes[1:] != codes[:-1])) + 1
    bounds = np.r_[0, cut, len(order)]
    return {(int(rid_a[lo]), str(uniques[codes[lo]])): (step_a[lo:hi], value_a[lo:hi], wall_a[lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:])}


@dataclass
class MetricCache:
    """What one page holds: per run and metric the rows fetched so far.

    Only the metrics the page needs are fetched (the charts shown, the summary's metric, the runs
    table's columns, tokens seen for that x-axis): a long run logs ~30 metrics and the page would
    otherwise hold all of them. Each (run, metric) series remembers its own last step, so a metric
    ticked later is fetched from the start, and rows of one step that reach the db in separate
    flushes (eval after train) are never skipped: a run is re-queried when its max step grows, and
    once more after it has finished.
    """

    series: dict[tuple[int, str], Series] = field(default_factory=dict)
    version: dict[str, int] = field(default_factory=dict)  # metric -> number of rows ever added
    queried: dict[int, set[str]] = field(default_factory=dict)  # run -> metrics asked for at least once
    seen_max: dict[int, int] = field(default_factory=dict)  # run -> max step at its last query
    final_checked: set[int] = field(default_factory=set)  # finished runs queried after finishing

    def plan_queries(self, max_steps: Mapping[int, int], wanted: Iterable[str],
                     finished: Iterable[int] = ()) -> list[tuple[int, tuple[str, ...], int]]:
        """(run_id, metric names, after_step) queries that bring the page up to date.

        Names of one run are grouped by their last held step, so a typical tick is one query per
        run with new rows and no query at all for idle runs.
        """
        wanted = sorted(set(wanted))
        finished = set(finished)
        plan = []
        for rid, top in max_steps.items():
            if top is None:
                continue
            asked = self.queried.get(rid, set())
            stale = top > self.seen_max.get(rid, -1) or (rid in finished and rid not in self.final_checked)
            groups: dict[int, list[str]] = {}
            for name in wanted:
                if name in asked and not stale:
                    continue
                s = self.series.get((rid, name))
                after = int(s.steps[-1]) if name in asked and s is not None and len(s.steps) else -1
                groups.setdefault(after, []).append(name)
            plan.extend((rid, tuple(names), after) for after, names in sorted(groups.items()))
        return plan

    def mark_queried(self, run_id: int, names: Iterable[str], max_step: int, finished: bool) -> None:
        self.queried.setdefault(run_id, set()).update(names)
        self.seen_max[run_id] = max(self.seen_max.get(run_id, -1), int(max_step))
        if finished:
            self.final_checked.add(run_id)

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> set[str]:
        """Merge (run_id, step, name, value, wall_time) rows; returns the metric names that changed."""
        changed: set[str] = set()
        for (rid, name), (steps, values, walls) in group_rows(rows).items():
            n = self.series.setdefault((rid, name), Series()).append(steps, values, walls)
            if n:
                changed.add(name)
                self.version[name] = self.version.get(name, 0) + n
        return changed

    def forget_runs(self, keep: Iterable[int]) -> None:
        """Drop what belongs to runs no longer shown (deleted)."""
        keep = set(keep)
        self.series = {k: v for k, v in self.series.items() if k[0] in keep}
        self.queried = {k: v for k, v in self.queried.items() if k in keep}
        self.seen_max = {k: v for k, v in self.seen_max.items() if k in keep}
        self.final_checked &= keep

    def names(self) -> list[str]:
        """Metric names held (only the fetched ones; the db knows the full list)."""
        return sorted({name for (_, name) in self.series})

    def get(self, run_id: int, name: str) -> Series | None:
        return self.series.get((run_id, name))

    def last_value(self, run_id: int, name: str) -> float | None:
        s = self.series.get((run_id, name))
        return float(s.values[-1]) if s is not None and len(s.values) else None

    def rate(self, run_id: int) -> float | None:
        """Recent steps/s of a run, from whichever of its series has the most points."""
        best = max((s for (rid, _), s in self.series.items() if rid == run_id), key=lambda s: len(s.steps),
                   default=None)
        return None if best is None else recent_rate(best.steps, best.walls)


def run_series(cache: MetricCache, runs: Sequence[Mapping[str, Any]], metric: str, x_axis: str) -> list[RunSeries]:
    """The plots-layer input for one metric: one RunSeries per run that logged it, x mapped as asked.

    Wall time is seconds since the run's first logged row; tokens seen comes from the tokens-seen
    metric interpolated at the metric's steps, falling back to the step when it was not logged.
    """
    out = []
    for run in runs:
        rid = int(run["id"])
        s = cache.get(rid, metric)
        if s is None or not len(s.steps):
            continue
        x = None
        if x_axis == "wall_time":
            t0 = min((ser.walls[0] for (r, _), ser in cache.series.items() if r == rid and len(ser.walls)),
                     default=s.walls[0])
            x = s.walls - t0
        elif x_axis == "tokens_seen":
            tok = next((cache.get(rid, n) for n in TOKENS_SEEN if cache.get(rid, n) is not None), None)
            x = map_x(s.steps, tok.steps, tok.values) if tok is not None else None
        out.append(RunSeries(rid, str(run.get("variant", "?")), int(run.get("seed", 0) or 0), s.steps, s.values,
                             x=x))
    return out


# ---------------------------------------------------------------- runs table


RUNS_TABLE_HEADERS = ["run", "variant", "seed", "status", "step", "steps/s", "elapsed", "ETA",
                      *LAST_VALUE_METRICS]


def runs_table_rows(runs: Sequence[Mapping[str, Any]], cache: MetricCache, *, now: float | None = None,
                    max_steps: Mapping[int, int] | None = None) -> list[list[Any]]:
    """One row per run: status, 'step / total', rate, elapsed, ETA and the last value of key metrics."""
    now = time.time() if now is None else now
    rows = []
    for run in runs:
        rid = int(run["id"])
        status = str(run.get("status", ""))
        total = int(run.get("total_steps") or 0)
        step = run.get("step")
        if max_steps and max_steps.get(rid) is not None:
            step = max(int(step or 0), int(max_steps[rid]))
        step = int(step or 0)
        started = to_epoch(run.get("started_at"))
        finished = to_epoch(run.get("finished_at"))
        elapsed = None if started is None else (finished or now) - started
        rate = cache.rate(rid)
        if rate is None and elapsed and step:
            rate = step / elapsed
        eta = eta_seconds(step, total, rate) if status == "running" else None
        rows.append([
            rid, run.get("variant", ""), run.get("seed", ""), status, f"{step} / {total}" if total else str(step),
            f"{rate:.2f}" if rate else "", fmt_duration(elapsed), fmt_duration(eta),
            *(fmt_value(cache.last_value(rid, m)) for m in LAST_VALUE_METRICS),
        ])
    return rows


def any_active(runs: Iterable[Mapping[str, Any]]) -> bool:
    return any(r.get("status") in ACTIVE_STATUSES for r in runs)


# ---------------------------------------------------------------- summaries


def area_under_curve(steps: Sequence[float], values: Sequence[float]) -> float | None:
    """Trapezoidal area over steps (lower is better for a divergence); None with fewer than 2 points."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    s, v = s[ok], v[ok]
    if len(s) < 2:
        return None
    return float(np.sum((s[1:] - s[:-1]) * (v[1:] + v[:-1]) / 2.0))


def steps_to_threshold(steps: Sequence[float], values: Sequence[float], threshold: float,
                       *, lower_is_better: bool = True) -> int | None:
    """First logged step at which the metric reaches the threshold (≤ for losses/KL); None if never."""
    s = np.asarray(steps)
    v = np.asarray(values, dtype=np.float64)
    hit = (v <= threshold) if lower_is_better else (v >= threshold)
    idx = np.flatnonzero(hit & np.isfinite(v))
    return int(s[idx[0]]) if idx.size else None


@dataclass
class RunSummary:
    run_id: int
    variant: str
    seed: int
    final: float | None
    best: float | None
    to_threshold: int | None
    auc: float | None


def summarize_run(series: RunSeries, threshold: float | None, *, lower_is_better: bool = True) -> RunSummary:
    ok = np.isfinite(series.values)
    s, v = series.steps[ok], series.values[ok]
    best = (float(v.min()) if lower_is_better else float(v.max())) if v.size else None
    return RunSummary(
        series.run_id, series.variant, series.seed,
        final=float(v[-1]) if v.size else None,
        best=best,
        to_threshold=None if threshold is None else steps_to_threshold(s, v, threshold,
                                                                         lower_is_better=lower_is_better),
        auc=area_under_curve(s, v),
    )


def _mean_std(values: Sequence[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    if len(vals) == 1:
        return fmt_value(vals[0])
    return f"{np.mean(vals):.4g} ± {np.std(vals, ddof=1):.2g}"


SUMMARY_HEADERS = ["variant", "seeds", "final", "best", "steps to threshold", "reached", "AUC"]


def variant_summary_rows(series: Sequence[RunSeries], threshold: float | None,
                         *, lower_is_better: bool = True) -> list[list[Any]]:
    """Per variant, over its seeds: final and best value, steps to threshold, area under the curve.

    Values are mean ± sample std over seeds; 'steps to threshold' averages the seeds that reached it
    and 'reached' says how many did, so a variant that never gets there is not rewarded.
    """
    by_variant: dict[str, list[RunSummary]] = {}
    for s in series:
        by_variant.setdefault(s.variant, []).append(summarize_run(s, threshold, lower_is_better=lower_is_better))
    rows = []
    for variant, sums in by_variant.items():
        reached = [x.to_threshold for x in sums if x.to_threshold is not None]
        rows.append([
            variant, len(sums), _mean_std([x.final for x in sums]), _mean_std([x.best for x in sums]),
            _mean_std(reached) if threshold is not None else "",
            f"{len(reached)}/{len(sums)}" if threshold is not None else "",
            _mean_std([x.auc for x in sums]),
        ])
    return rows


# ---------------------------------------------------------------- configs


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys, so a diff can name 'variant.single' rather than a whole blob."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_MISSING = "—"


def config_diff(configs: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) showing only the settings that differ between the given configs.

    A key absent from one config shows as '—'. With a single config every setting is shown, so the
    same table serves as a config viewer.
    """
    labels = list(configs)
    flat = {label: flatten(cfg) for label, cfg in configs.items()}
    keys = sorted(set().union(*(f.keys() for f in flat.values()))) if flat else []
    rows = []
    for k in keys:
        vals = [flat[label].get(k, _MISSING) for label in labels]
        if len(labels) == 1 or any(_norm(v) != _norm(vals[0]) for v in vals[1:]):
            rows.append([k, *(_show(v) for v in vals)])
    return ["setting", *labels], rows


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _show(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ---------------------------------------------------------------- samples


def samples_side_by_side(samples_by_run: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[str, list[list[str]]]:
    """Latest generations of several runs for the same prompt: (prompt, [[run label, text], ...]).

    Picks the first prompt of the most recent run's samples that the others also generated for;
    when no prompt is shared, shows each run's latest sample as is.
    """
    labelled = {label: list(s) for label, s in samples_by_run.items() if s}
    if not labelled:
        return "", []
    prompts_per_run = [{str(x.get("prompt", "")) for x in s} for s in labelled.values()]
    shared = set.intersection(*prompts_per_run) if prompts_per_run else set()
    first_run = next(iter(labelled.values()))
    prompt = next((str(x.get("prompt", "")) for x in first_run if str(x.get("prompt", "")) in shared), None)
    rows = []
    for label, s in labelled.items():
        if prompt is not None:
            sample = next(x for x in s if str(x.get("prompt", "")) == prompt)
        else:
            sample = s[0]
        text = str(sample.get("response", sample.get("text", sample.get("completion", ""))))
        step = sample.get("step")
        rows.append([label if step is None else f"{label} @ step {step}", text])
    return prompt or "(no prompt shared by all runs; latest sample of each)", rows


# ---------------------------------------------------------------- the Live tab's figure path


def chart_title(metric: str) -> str:
    """Loss terms get a warning: losses of different variants are not comparable numbers."""
    if metric_group(metric) == "loss":
        return f"{metric}  (variant-specific: not comparable across variants)"
    return metric


def build_live_figure(cache: MetricCache, runs: Sequence[Mapping[str, Any]], metric: str, *, x_axis: str,
                      smoothing: float, log_y: bool, show_seeds: bool, band: str = "std", max_points: int = 1000):
    """One Live-tab chart from the page's cache (the path the benchmark measures)."""
    from minillm_dash.plots import build_metric_figure

    series = run_series(cache, runs, metric, x_axis)
    title = chart_title(metric)
    if x_axis != "step" and any(s.x is None for s in series):
        # e.g. tokens seen not logged by some run: one shared axis cannot mix units, so fall back to step
        series = run_series(cache, runs, metric, "step")
        title += f"  ({x_axis.replace('_', ' ')} not logged by every run: x = step)"
        x_axis = "step"
    return build_metric_figure(series, x_axis=x_axis, smoothing=smoothing, log_y=log_y, show_seeds=show_seeds,
                               band=band, title=title, max_points=max_points)
