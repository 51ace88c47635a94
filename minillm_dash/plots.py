"""Plotly figure builders for the dashboard: pure functions from metric rows to figures.

Why this module exists on its own: the Live tab rebuilds figures every ~1.5 s for up to a few
dozen runs with tens of thousands of points, so everything here is vectorised numpy, traces are
built from numpy arrays (Plotly 7 ships them as binary), and downsampling is *stable*: bucket
boundaries are fixed in step space (power-of-two widths), so a refresh that appends rows only
changes the last bucket and points never jump. No gradio import here; the UI wires these.

Conventions
- `ema(values, alpha)`: alpha is the weight of the newest value (pandas/EMA convention); the UI's
  "smoothing" slider is TensorBoard's weight of the past, i.e. alpha = 1 - smoothing.
- Smoothing runs over the full series first, then both raw and smoothed lines are downsampled with
  the same step buckets (design.md "Lessons from the tools").
- Seeds of one variant are aggregated as mean ± std (sample std, ddof=1) on the union of their steps,
  each seed linearly interpolated inside its own range only (no extrapolation).
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

X_AXES = ("step", "wall_time", "tokens_seen")
X_TITLES = {"step": "step", "wall_time": "wall time (s since run start)", "tokens_seen": "tokens seen"}

# One colour per preset, in catalogue order, so a variant keeps its colour across charts, tabs and
# sessions; custom variants hash onto the same palette (stable across processes: crc32, not hash()).
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
    "#e6550d", "#31a354", "#756bb1", "#636363",
)
PRESET_ORDER = (
    "minillm", "minillm_wsingle", "rkl", "fkl", "minillm_paper", "minillm_nomix", "single_only",
    "long_only", "jsd", "tvd", "skl", "srkl", "akl", "gkd", "kd", "seqkd", "sft",
)

DEFAULT_MAX_POINTS = 1000
BANDS = ("std", "ci95")
# Student-t 0.975 quantiles for 1..30 degrees of freedom (no scipy in the dashboard's dependencies).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass
class RunSeries:
    """One run's history of one metric. `x` (optional) is the alternative x-axis aligned to `steps`."""

    run_id: int
    variant: str
    seed: int
    steps: np.ndarray
    values: np.ndarray
    x: np.ndarray | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.x is not None:
            self.x = np.asarray(self.x, dtype=np.float64)
        if not self.label:
            self.label = f"{self.variant} s{self.seed} (run {self.run_id})"


@dataclass
class SeedAggregate:
    """Mean ± std of several seeds on a common step grid; `n` seeds cover each grid step."""

    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray
    x: np.ndarray | None = None
    members: list[int] = field(default_factory=list)


def variant_color(variant: str) -> str:
    """A stable colour for a variant name (presets by catalogue position, customs by crc32)."""
    if variant in PRESET_ORDER:
        return PALETTE[PRESET_ORDER.index(variant) % len(PALETTE)]
    return PALETTE[zlib.crc32(variant.encode("utf-8")) % len(PALETTE)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# ---------------------------------------------------------------- smoothing and downsampling


def ema(values: Sequence[float] | np.ndarray, alpha: float) -> np.ndarray:
    """Debiased exponential moving average (zero start divided by 1-(1-alpha)^(t+1)).

    Debiasing keeps the first points honest instead of dragging them towards 0, which is what
    TensorBoard does and what users compare against. alpha=1 returns the input unchanged.
    """
    v = np.asarray(values, dtype=np.float64)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"EMA alpha must lie in (0, 1], got {alpha}")
    if v.size == 0 or alpha == 1.0:
        return v.copy()
    # pandas' adjust=True EMA is exactly the debiased EMA: Σ(1-a)^(t-i) x_i / Σ(1-a)^(t-i).
    return pd.Series(v).ewm(alpha=alpha, adjust=True).mean().to_numpy()


def smooth(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Slider semantics (TensorBoard): smoothing in [0, 1) is the weight of the past."""
    if smoothing <= 0:
        return np.asarray(values, dtype=np.float64).copy()
    return ema(values, 1.0 - min(float(smoothing), 0.999))


def bucket_width(max_step: int, max_points: int) -> int:
    """Smallest power-of-two bucket width so that every bucket up to max_step fits in max_points.

    Each bucket emits at most two points (its min and its max); power-of-two widths mean a growing
    run changes width only at doublings, so between those refreshes nothing but the last bucket moves.
    """
    buckets = max(1, max_points // 2)
    span = max(int(max_step), 0) + 1
    width = 1
    while math.ceil(span / width) > buckets:
        width *= 2
    return width


def minmax_indices(steps: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """Indices (sorted) of each step bucket's min and max point; buckets are [k·width, (k+1)·width).

    `steps` must be sorted ascending and `values` finite. Ties resolve to the earliest point, so the
    choice inside a completed bucket never changes when rows are appended later.
    """
    n = len(steps)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if width <= 1:
        return np.arange(n, dtype=np.int64)
    bucket = steps // width
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    counts = np.diff(np.r_[starts, n])
    idx = np.arange(n)
    # Per bucket: the earliest index attaining the min and the earliest attaining the max. A completed
    # bucket's members never change, so its choice never changes when rows are appended.
    first_min = np.minimum.reduceat(np.where(values == np.repeat(np.minimum.reduceat(values, starts), counts),
                                             idx, n), starts)
    first_max = np.minimum.reduceat(np.where(values == np.repeat(np.maximum.reduceat(values, starts), counts),
                                             idx, n), starts)
    keep = np.union1d(first_min, first_max)
    return keep.astype(np.int64)


def minmax_downsample(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    max_points: int = DEFAULT_MAX_POINTS,
    *,
    width: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep each step bucket's min and max (spikes survive); stable and append-safe.

    Non-finite values are dropped (a diverged run logs inf/nan; Plotly cannot draw them anyway).
    Pass `width` to share bucket boundaries between series (e.g. the raw and the smoothed line).
    """
    s = np.asarray(steps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.all():
        s, v = s[ok], v[ok]
    if s.size == 0:
        return s, v
    if width is None:
        width = bucket_width(int(s[-1]), max_points)
    keep = minmax_indices(s, v, width)
    return s[keep], v[keep]


# ---------------------------------------------------------------- x axes and seeds


def map_x(steps: np.ndarray, ref_steps: np.ndarray | None, ref_x: np.ndarray | None) -> np.ndarray | None:
    """Map metric steps onto another x (wall time, tokens seen) logged at ref_steps; None if unknown."""
    if ref_steps is None or ref_x is None or len(ref_steps) == 0:
        return None
    rs = np.asarray(ref_steps, dtype=np.float64)
    rx = np.asarray(ref_x, dtype=np.float64)
    ok = np.isfinite(rx)
    if not ok.any():
        return None
    return np.interp(np.asarray(steps, dtype=np.float64), rs[ok], rx[ok])


def _finite(series: RunSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    ok = np.isfinite(series.values)
    x = series.x[ok] if series.x is not None else None
    return series.steps[ok], series.values[ok], x


def aggregate_seeds(series: Sequence[RunSeries], values: Sequence[np.ndarray] | None = None) -> SeedAggregate:
    """Mean ± sample std over seeds on the union of their steps.

    Each seed is interpolated only inside its own logged range, so a seed that is behind does not
    drag the mean with invented values; `n` says how many seeds cover each step (std is 0 where n=1).
    `values` optionally replaces each series' values (e.g. already smoothed), aligned to its finite steps.
    """
    cleaned = [_finite(s) for s in series]
    if values is not None:
        cleaned = [(st, np.asarray(v, dtype=np.float64), x) for (st, _, x), v in zip(cleaned, values)]
    cleaned = [c for c in cleaned if len(c[0])]
    if not cleaned:
        e = np.empty(0)
        return SeedAggregate(e.astype(np.int64), e, e, e.astype(np.int64))
    first = cleaned[0][0]
    if all(len(c[0]) == len(first) and np.array_equal(c[0], first) for c in cleaned):
        grid = first  # the usual case: seeds log the same steps; skip the union's sort
    else:
        grid = np.unique(np.concatenate([c[0] for c in cleaned]))
    k = len(cleaned)
    vals = np.full((k, grid.size), np.nan)
    xs = np.full((k, grid.size), np.nan)
    has_x = all(c[2] is not None for c in cleaned)
    for i, (st, v, x) in enumerate(cleaned):
        inside = (grid >= st[0]) & (grid <= st[-1])
        vals[i, inside] = np.interp(grid[inside], st, v)
        if has_x:
            xs[i, inside] = np.interp(grid[inside], st, x)
    n = np.sum(~np.isnan(vals), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(vals, axis=0) / n
        sq = np.nansum((vals - mean) ** 2, axis=0)
        std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), 0.0)
        x_mean = np.nansum(xs, axis=0) / n if has_x else None
    return SeedAggregate(grid, mean, std, n, x_mean, [s.run_id for s in series])


def band_halfwidth(std: np.ndarray, n: np.ndarray, band: str) -> np.ndarray:
    """Half-width of the seed band: the sample std, or the 95% confidence interval of the mean
    (t quantile · std / sqrt(n); zero where a single seed covers the step)."""
    if band == "std":
        return std
    if band != "ci95":
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    n = np.asarray(n)
    df = np.clip(n - 1, 1, None)
    t = np.where(df <= len(_T975), np.asarray(_T975)[np.minimum(df, len(_T975)) - 1], 1.96)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1, t * std / np.sqrt(np.maximum(n, 1)), 0.0)


# ---------------------------------------------------------------- figures


def typed_array(a: np.ndarray) -> dict:
    """Plotly's binary array spec (what to_json emits for numpy input), built without validators.

    Why: plotly's per-property validation costs ~1 ms per trace (narwhals checks, copies); the Live
    tab builds ~100 traces per refresh, so traces are plain dicts in the same JSON form instead.
    """
    arr = np.ascontiguousarray(a, dtype=np.float64)
    return {"dtype": "f8", "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


def trace_array(trace: Any, key: str) -> np.ndarray:
    """Read back x or y of a trace built here (typed array spec) or by plotly (array/list)."""
    value = trace[key]
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value.get("dtype", "f8")))
    return np.asarray(value, dtype=np.float64)


def _line(x: np.ndarray, y: np.ndarray, *, name: str, color: str, width: float, opacity: float,
          group: str, showlegend: bool, dash: str | None = None) -> dict:
    line = {"color": color, "width": width}
    if dash:
        line["dash"] = dash
    return {"type": "scatter", "x": typed_array(x), "y": typed_array(y), "mode": "lines", "name": name,
            "legendgroup": group, "showlegend": showlegend, "opacity": opacity, "line": line}


def _pick_x(steps: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    return np.asarray(x if x is not None else steps, dtype=np.float64)


def _downsampled(steps: np.ndarray, raw: np.ndarray, smoothed: np.ndarray, x: np.ndarray | None,
                 width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose indices from the smoothed line's and the raw line's buckets; returns (xs, raw, smooth)."""
    keep = np.union1d(minmax_indices(steps, raw, width), minmax_indices(steps, smoothed, width))
    xs = _pick_x(steps, x)[keep]
    return xs, raw[keep], smoothed[keep]


def _single_run_traces(s: RunSeries, *, smoothing: float, width: int, color: str, group: str,
                       showlegend: bool, name: str) -> list[dict]:
    steps, raw, x = _finite(s)
    if steps.size == 0:
        return []
    sm = smooth(raw, smoothing)
    xs, raw_d, sm_d = _downsampled(steps, raw, sm, x, width)
    traces = []
    if smoothing > 0:
        traces.append(_line(xs, raw_d, name=f"{name} (raw)", color=color, width=1, opacity=0.25,
                            group=group, showlegend=False))
    traces.append(_line(xs, sm_d, name=name, color=color, width=2, opacity=1.0, group=group,
                        showlegend=showlegend))
    return traces


def _variant_traces(variant: str, members: list[RunSeries], *, smoothing: float, width: int,
                    show_seeds: bool, band: str = "std") -> list[dict]:
    """One variant: a single run as a line; several seeds as mean line + std band (+ faint seeds)."""
    color = variant_color(variant)
    if len(members) == 1:
        s = members[0]
        return _single_run_traces(s, smoothing=smoothing, width=width, color=color, group=variant,
                                  showlegend=True, name=f"{variant} (seed {s.seed})")
    traces: list[dict] = []
    smoothed = [smooth(_finite(s)[1], smoothing) for s in members]
    if show_seeds:
        for s, sm in zip(members, smoothed):
            steps, _, x = _finite(s)
            if steps.size:
                keep = minmax_indices(steps, sm, width)
                traces.append(_line(_pick_x(steps, x)[keep], sm[keep], name=f"{variant} seed {s.seed}",
                                    color=color, width=1, opacity=0.35, group=variant, showlegend=False))
    agg = aggregate_seeds(members, smoothed)
    if agg.steps.size == 0:
        return traces
    keep = minmax_indices(agg.steps, agg.mean, width)
    xs = _pick_x(agg.steps, agg.x)[keep]
    mean, std = agg.mean[keep], band_halfwidth(agg.std[keep], agg.n[keep], band)
    band = _rgba(color, 0.18)
    if smoothing > 0:  # the unsmoothed mean, faint, so smoothing never hides what was measured
        raw = aggregate_seeds(members)
        rkeep = minmax_indices(raw.steps, raw.mean, width)
        traces.append(_line(_pick_x(raw.steps, raw.x)[rkeep], raw.mean[rkeep], name=f"{variant} mean (raw)",
                            color=color, width=1, opacity=0.25, group=variant, showlegend=False))
    upper = _line(xs, mean + std, name=f"{variant} +{band}", color=band, width=0, opacity=1.0, group=variant,
                  showlegend=False)
    lower = _line(xs, mean - std, name=f"{variant} −{band}", color=band, width=0, opacity=1.0, group=variant,
                  showlegend=False)
    upper["hoverinfo"] = lower["hoverinfo"] = "skip"
    lower.update(fill="tonexty", fillcolor=band)
    traces += [upper, lower]
    traces.append(_line(xs, mean, name=f"{variant} (mean of {len(members)} seeds)", color=color, width=2.5,
                        opacity=1.0, group=variant, showlegend=True))
    return traces


def group_by_variant(series: Iterable[RunSeries]) -> dict[str, list[RunSeries]]:
    """Variants in first-seen order, seeds sorted, so trace order (and legend) is stable."""
    groups: dict[str, list[RunSeries]] = {}
    for s in series:
        groups.setdefault(s.variant, []).append(s)
    return {v: sorted(m, key=lambda s: (s.seed, s.run_id)) for v, m in groups.items()}


_GRID = "#e5e7eb"


def _layout(*, title: str, height: int, x_axis: str, log_y: bool) -> dict:
    return dict(
        title=dict(text=title, x=0.01, font=dict(size=14)) if title else None,
        height=height,
        margin=dict(l=55, r=10, t=40 if title else 15, b=40),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0, font=dict(size=11)),
        hovermode="x unified",
        paper_bgcolor="white",
        plot_bgcolor="white",
        # Keep the user's zoom/pan across timer refreshes of the same chart.
        uirevision=f"{title}|{x_axis}|{log_y}",
        xaxis=dict(title=dict(text=X_TITLES[x_axis]), gridcolor=_GRID, zeroline=False),
        yaxis=dict(type="log" if log_y else "linear", gridcolor=_GRID, zeroline=False),
    )


def build_metric_figure(
    series: Sequence[RunSeries],
    *,
    x_axis: str = "step",
    smoothing: float = 0.0,
    log_y: bool = False,
    show_seeds: bool = False,
    band: str = "std",
    title: str = "",
    max_points: int = DEFAULT_MAX_POINTS,
    height: int = 340,
) -> go.Figure:
    """All runs of one metric overlaid, coloured by variant; seeds of a variant as a mean line with a
    band (sample std, or the 95% CI of the mean with band="ci95").

    Downsampling uses one bucket width for the whole figure (chosen from the longest run), so all
    runs share boundaries and a refresh that appends rows moves only the last bucket of each line.
    Log-y sets the axis type; the data are never transformed.
    """
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {X_AXES}, got {x_axis!r}")
    max_step = max((int(s.steps[-1]) for s in series if len(s.steps)), default=0)
    width = bucket_width(max_step, max_points)
    traces: list[dict] = []
    for variant, members in group_by_variant(series).items():
        traces.extend(_variant_traces(variant, members, smoothing=smoothing, width=width, show_seeds=show_seeds,
                                      band=band))
    # Plain dicts, no validators and no named template (a template deep-copies ~20 ms per figure);
    # tests re-validate these figures with plotly to catch a misspelt property.
    fig = go.Figure(data=traces, layout=_layout(title=title, height=height, x_axis=x_axis, log_y=log_y),
                    _validate=False)
    if not traces:
        fig.add_annotation(text="no data yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def empty_figure(message: str = "no data yet", height: int = 340) -> go.Figure:
    """A placeholder chart (nothing selected / nothing logged)."""
    fig = go.Figure(layout=dict(height=height, paper_bgcolor="white", plot_bgcolor="white",
                                margin=dict(l=40, r=10, t=15, b=30)))
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig
