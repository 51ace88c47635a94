"""Figure builders: EMA against a naive loop, stable min/max downsampling, seed aggregation."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from minillm_dash import plots as P


def naive_debiased_ema(values, alpha):
    """TensorBoard-style: zero start, then divide by 1 - (1-alpha)^t."""
    out, acc = [], 0.0
    for t, v in enumerate(values, start=1):
        acc = (1 - alpha) * acc + alpha * v
        out.append(acc / (1 - (1 - alpha) ** t))
    return np.array(out)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5, 0.9])
def test_ema_matches_naive_debiased_reference(alpha):
    v = np.random.default_rng(1).normal(3.0, 1.0, 500)
    np.testing.assert_allclose(P.ema(v, alpha), naive_debiased_ema(v, alpha), rtol=1e-10, atol=1e-12)


def test_ema_first_point_is_unbiased_and_alpha_one_is_identity():
    v = np.array([5.0, 5.0, 5.0])
    np.testing.assert_allclose(P.ema(v, 0.01), v)  # a zero-started EMA without debiasing would give ~0.05
    np.testing.assert_array_equal(P.ema(v, 1.0), v)
    assert P.ema([], 0.3).size == 0
    with pytest.raises(ValueError):
        P.ema(v, 0.0)


def test_smoothing_slider_is_weight_of_the_past():
    v = np.arange(10.0)
    np.testing.assert_array_equal(P.smooth(v, 0.0), v)
    np.testing.assert_allclose(P.smooth(v, 0.8), naive_debiased_ema(v, 0.2))


def test_bucket_width_is_power_of_two_and_fits():
    for max_step in [0, 1, 499, 500, 999, 1000, 10_000, 123_457]:
        w = P.bucket_width(max_step, 1000)
        assert w & (w - 1) == 0
        assert (max_step // w) + 1 <= 500
        if w > 1:
            assert (max_step // (w // 2)) + 1 > 500  # smallest such width


def test_downsample_keeps_every_bucket_min_and_max_and_spikes():
    rng = np.random.default_rng(0)
    steps = np.arange(1, 20_001)
    values = rng.normal(0, 1, steps.size)
    values[12_345] = 50.0  # a spike must survive
    values[777] = -40.0
    s, v = P.minmax_downsample(steps, values, 400)
    assert len(s) <= 400
    assert 50.0 in v and -40.0 in v
    w = P.bucket_width(int(steps[-1]), 400)
    for b in np.unique(steps // w):
        sel = (steps // w) == b
        kept = (s // w) == b
        assert v[kept].max() == values[sel].max()
        assert v[kept].min() == values[sel].min()
    assert np.all(np.diff(s) > 0)


def test_downsample_is_stable_when_rows_are_appended():
    rng = np.random.default_rng(3)
    steps = np.arange(0, 3000)
    values = rng.normal(0, 1, steps.size)
    w = P.bucket_width(4000, 500)  # same width for both refreshes (no doubling in between)
    s1, v1 = P.minmax_downsample(steps[:2100], values[:2100], width=w)
    s2, v2 = P.minmax_downsample(steps, values, width=w)
    last_open_bucket = 2099 // w
    closed = s1 // w < last_open_bucket
    # Every point of a completed bucket is still there, at the same step with the same value.
    assert set(zip(s1[closed], v1[closed])) <= set(zip(s2, v2))
    assert np.array_equal(s2[s2 // w < last_open_bucket], s1[closed])


def test_downsample_without_width_is_stable_between_doublings():
    values = np.random.default_rng(4).normal(size=900)
    # max_step 700 and 899 both use width 2 for 1000 points -> identical prefix
    s1, _ = P.minmax_downsample(np.arange(700), values[:700], 1000)
    s2, _ = P.minmax_downsample(np.arange(900), values, 1000)
    assert np.array_equal(s2[: len(s1) - 2], s1[:-2])


def test_downsample_drops_non_finite_and_keeps_small_series():
    s, v = P.minmax_downsample([1, 2, 3, 4], [1.0, np.nan, np.inf, 2.0], 1000)
    assert s.tolist() == [1, 4] and v.tolist() == [1.0, 2.0]
    s, v = P.minmax_downsample([], [], 10)
    assert s.size == 0


def test_aggregate_seeds_mean_and_sample_std():
    a = P.RunSeries(1, "rkl", 0, [1, 2, 3], [1.0, 2.0, 3.0])
    b = P.RunSeries(2, "rkl", 1, [1, 2, 3], [3.0, 4.0, 5.0])
    c = P.RunSeries(3, "rkl", 2, [1, 2, 3], [2.0, 3.0, 7.0])
    agg = P.aggregate_seeds([a, b, c])
    np.testing.assert_allclose(agg.mean, [2.0, 3.0, 5.0])
    np.testing.assert_allclose(agg.std, [1.0, 1.0, 2.0])  # ddof=1
    assert agg.n.tolist() == [3, 3, 3]


def test_aggregate_seeds_interpolates_inside_each_range_only():
    a = P.RunSeries(1, "rkl", 0, [0, 10, 20], [0.0, 10.0, 20.0])
    b = P.RunSeries(2, "rkl", 1, [0, 5], [2.0, 7.0])  # behind: stops at step 5
    agg = P.aggregate_seeds([a, b])
    assert agg.steps.tolist() == [0, 5, 10, 20]
    np.testing.assert_allclose(agg.mean, [1.0, 6.0, 10.0, 20.0])  # a interpolated at 5 -> 5.0
    assert agg.n.tolist() == [2, 2, 1, 1]
    np.testing.assert_allclose(agg.std[2:], [0.0, 0.0])


def test_aggregate_seeds_carries_mean_x():
    a = P.RunSeries(1, "rkl", 0, [1, 2], [1.0, 1.0], x=[10.0, 20.0])
    b = P.RunSeries(2, "rkl", 1, [1, 2], [1.0, 1.0], x=[30.0, 40.0])
    np.testing.assert_allclose(P.aggregate_seeds([a, b]).x, [20.0, 30.0])


def test_map_x_interpolates_tokens_seen():
    np.testing.assert_allclose(P.map_x(np.array([5, 10]), np.array([0, 10]), np.array([0.0, 1000.0])),
                               [500.0, 1000.0])
    assert P.map_x(np.array([1]), None, None) is None


def validated(fig: go.Figure) -> go.Figure:
    """The dashboard builds unvalidated dict traces for speed; plotly's validators re-check them here."""
    return go.Figure(fig.to_plotly_json())


def _series(n_runs=4, steps=2000):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_runs):
        variant = ["minillm", "minillm_wsingle"][i % 2]
        st = np.arange(1, steps + 1)
        out.append(P.RunSeries(i + 1, variant, i // 2, st, np.exp(-st / 500) + rng.normal(0, 0.05, steps)))
    return out


def test_figure_groups_by_variant_with_band_and_stable_colours():
    fig = validated(P.build_metric_figure(_series(), smoothing=0.6, show_seeds=True, title="train/klr"))
    assert isinstance(fig, go.Figure)
    assert all(type(t).__name__ == "Scatter" for t in fig.data)  # SVG, never Scattergl
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == ["minillm (mean of 2 seeds)", "minillm_wsingle (mean of 2 seeds)"]
    fills = [t for t in fig.data if t.fill == "tonexty"]
    assert len(fills) == 2
    colours = {t.legendgroup: t.line.color for t in fig.data if t.showlegend}
    assert colours["minillm"] == P.variant_color("minillm") != colours["minillm_wsingle"]
    assert P.variant_color("my_custom") == P.variant_color("my_custom")
    assert all(len(P.trace_array(t, "x")) <= P.DEFAULT_MAX_POINTS for t in fig.data)


def test_single_run_has_faint_raw_line_only_when_smoothing():
    one = _series(1)
    assert len(P.build_metric_figure(one, smoothing=0.0).data) == 1
    fig = validated(P.build_metric_figure(one, smoothing=0.9))
    assert len(fig.data) == 2 and fig.data[0].opacity < 0.5 and fig.data[1].opacity == 1.0


def test_log_y_is_an_axis_type_not_a_transform():
    one = _series(1)
    lin = validated(P.build_metric_figure(one, log_y=False))
    log = validated(P.build_metric_figure(one, log_y=True))
    assert log.layout.yaxis.type == "log" and lin.layout.yaxis.type == "linear"
    np.testing.assert_array_equal(P.trace_array(lin.data[0], "y"), P.trace_array(log.data[0], "y"))


def test_x_axis_choices_and_empty_figure():
    s = P.RunSeries(1, "rkl", 0, [1, 2, 3], [3.0, 2.0, 1.0], x=[0.5, 1.0, 1.5])
    fig = validated(P.build_metric_figure([s], x_axis="wall_time"))
    assert P.trace_array(fig.data[0], "x").tolist() == [0.5, 1.0, 1.5]
    assert P.trace_array(fig.data[0], "y").tolist() == [3.0, 2.0, 1.0]
    assert "wall time" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError):
        P.build_metric_figure([s], x_axis="epoch")
    assert len(validated(P.build_metric_figure([])).layout.annotations) == 1
    assert '"bdata"' in P.build_metric_figure([s]).to_json()  # numpy arrays travel as binary


def test_band_halfwidth_std_and_ci95():
    std = np.array([1.0, 2.0, 3.0])
    n = np.array([1, 3, 40])
    np.testing.assert_array_equal(P.band_halfwidth(std, n, "std"), std)
    ci = P.band_halfwidth(std, n, "ci95")
    assert ci[0] == 0.0  # a single seed has no interval
    assert ci[1] == pytest.approx(4.303 * 2.0 / np.sqrt(3))  # t(0.975, df=2)
    assert ci[2] == pytest.approx(1.96 * 3.0 / np.sqrt(40))  # large n: normal quantile
    with pytest.raises(ValueError):
        P.band_halfwidth(std, n, "iqr")


def test_ci_band_in_figure_is_narrower_than_std_for_many_seeds():
    rng = np.random.default_rng(5)
    series = [P.RunSeries(i, "rkl", i, np.arange(50), rng.normal(1.0, 0.5, 50)) for i in range(10)]

    def band_width(band):
        fig = validated(P.build_metric_figure(series, band=band))
        up, lo = (P.trace_array(t, "y") for t in fig.data if t.name.startswith("rkl ") and ("+" in t.name
                                                                                           or "−" in t.name))
        return float(np.mean(up - lo))

    assert band_width("ci95") < band_width("std")
