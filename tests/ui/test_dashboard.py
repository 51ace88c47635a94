"""The dashboard in a real browser: upload, error toasts, launch two variants on tiny models, live
curves growing, cancel, export checked against the database, and the Live-tab screenshot.

Tests run in file order and share one app (session fixture): the launch test creates the experiment
the export test downloads.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "screenshot-live.png"
CHART_POINTS_JS = """(sel) => {
  const d = document.querySelector(sel + ' .js-plotly-plot');
  if (!d || !d.data) return null;
  const size = {f8: 8, f4: 4, i4: 4, u4: 4, i2: 2, u2: 2, i1: 1, u1: 1};
  // Plotly keeps the binary spec {dtype, bdata} in gd.data; count its elements without decoding.
  const len = a => !a ? 0 : (a.length !== undefined ? a.length
                               : (a.bdata ? atob(a.bdata).length / (size[a.dtype] || 8) : 0));
  const drawn = d.querySelectorAll('.scatterlayer .trace path.js-line').length;
  return d.data.map(t => ({name: t.name, n: len(t.x), legend: t.showlegend !== false, drawn: drawn}));
}"""


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def close_toasts(page) -> None:
    """Toasts can cover buttons; close them in one JS pass (no race with one fading out by itself)."""
    page.evaluate("() => document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click())")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=toast-body]').length === 0")


def upload(page, tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    page.locator("#dataset-upload input[type=file]").set_input_files(str(path))


def wait_text(page, container: str, text: str, timeout: float = 20_000) -> None:
    """Wait for visible text inside a component (Gradio tables keep hidden copies of cells); on a
    timeout, say which toasts were showing (the usual reason)."""
    try:
        page.locator(f"{container} >> text={text} >> visible=true").first.wait_for(timeout=timeout)
    except Exception as exc:
        toasts = [t.inner_text() for t in page.locator("[data-testid=toast-body]").all()]
        raise AssertionError(f"{text!r} never appeared in {container}; toasts: {toasts}; "
                             f"{container} shows: {page.locator(container).inner_text()[:500]!r}") from exc


def expect_error_toast(page, text: str) -> None:
    """An error toast (gr.Error) carrying exactly the engine's message appears."""
    page.locator("[data-testid=toast-body].error", has_text=text).first.wait_for(state="visible")


def test_upload_valid_dataset_shows_preview(page, dashboard, tmp_path):
    url, db, _ = dashboard
    page.goto(url)
    open_tab(page, "Data")
    rows = [{"prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(7)]
    upload(page, tmp_path, "sums.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    summary = page.locator("#dataset-summary")
    summary.get_by_text("7 rows").wait_for()
    assert "jsonl:prompt/response" in summary.inner_text()
    assert "references: yes" in summary.inner_text()
    preview = page.locator("#dataset-preview")
    wait_text(page, "#dataset-preview", "What is 3 plus 3?")
    assert "It is 6." in preview.inner_text()
    assert any(d["name"] == "sums.jsonl" and d["n_rows"] == 7 for d in db.list_datasets())
    wait_text(page, "#dataset-table", "sums.jsonl")


@pytest.mark.parametrize("name, content, expected", [
    ("broken.jsonl", b'{"prompt": "fine"}\n{"prompt": "oops",\n', "broken.jsonl, line 2: invalid JSON"),
    ("blank.jsonl", b'{"prompt": "fine"}\n{"prompt": ""}\n', "blank.jsonl, line 2, field 'prompt': prompt is empty"),
    ("notes.docx", b"PK\x03\x04 not a dataset", "unsupported file type .docx"),
])
def test_malformed_upload_shows_error_toast_and_stores_nothing(page, dashboard, tmp_path, name, content, expected):
    url, db, _ = dashboard
    before = len(db.list_datasets())
    page.goto(url)
    open_tab(page, "Data")
    upload(page, tmp_path, name, content)
    expect_error_toast(page, expected)
    close_toasts(page)
    assert len(db.list_datasets()) == before
    wait_text(page, "#dataset-table", "builtin")  # the list is intact: a failure shows only its toast


def _type(page, elem_id: str, text: str) -> None:
    """Type into a textbox like a user (input events per key), then check it took."""
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.click()
    box.fill("")
    box.press_sequentially(text)
    box.blur()
    assert box.input_value() == text


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.blur()


def _choose(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    box.press("Enter")
    box.blur()


def _chart(page, idx: int):
    return page.evaluate(CHART_POINTS_JS, f"#live-chart-{idx}")


def _main_lines(traces) -> dict[str, int]:
    return {t["name"]: t["n"] for t in traces or [] if t["legend"]}


def _runs_by_variant(db, experiment_id):
    return {r["variant"]: r for r in db.list_runs(experiment_id)}


def test_launch_two_variants_watch_curves_grow_cancel_one(page, dashboard):
    url, db, runner = dashboard
    page.goto(url)
    open_tab(page, "Launch")
    page.locator("#launch-name input, #launch-name textarea").first.fill("ui-test")
    _choose(page, "launch-teacher", "tiny")
    _choose(page, "launch-student", "pruned:2")
    for elem_id, value in [("hp-steps", 400), ("hp-batch_size", 2), ("hp-max_new_tokens", 8), ("hp-eval_every", 10),
                           ("hp-heldout_size", 4), ("hp-eval_max_new_tokens", 8), ("hp-max_prompt_tokens", 64)]:
        _set_number(page, elem_id, value)
    page.locator("#launch-btn").click()
    # the launch switches to the Live tab with the new experiment selected
    page.locator("#live-chart-0 .js-plotly-plot").wait_for()
    exp = db.list_experiments()[-1]
    assert exp["name"] == "ui-test" and exp["n_runs"] == 2
    deadline = time.time() + 40
    first = {}
    while time.time() < deadline:
        first = _main_lines(_chart(page, 0))
        if len(first) == 2 and min(first.values()) >= 3:
            break
        page.wait_for_timeout(300)
    assert set(first) == {"minillm (seed 0)", "rkl (seed 0)"}, first
    assert _chart(page, 0)[0]["drawn"] >= 2  # the lines are really drawn as SVG paths
    grown = {}
    while time.time() < deadline:
        grown = _main_lines(_chart(page, 0))
        if all(grown.get(k, 0) > v for k, v in first.items()):
            break
        page.wait_for_timeout(300)
    assert all(grown[k] > v for k, v in first.items()), (first, grown)

    # cancel rkl while it runs, through the UI
    rkl = _runs_by_variant(db, exp["id"])["rkl"]
    page.locator("#cancel-choice input").first.click()
    page.get_by_role("option", name=f"#{rkl['id']} rkl seed 0", exact=False).first.click()
    page.locator("#cancel-btn").click()
    wait_text(page, "#runs-table", "cancelled", timeout=30_000)
    assert db.get_run(rkl["id"])["status"] == "cancelled"

    # cancel minillm too (400 steps would take a while); both stop, the timer goes idle
    close_toasts(page)
    mini = _runs_by_variant(db, exp["id"])["minillm"]
    page.locator("#cancel-choice input").first.click()
    page.get_by_role("option", name=f"#{mini['id']} minillm seed 0", exact=False).first.click()
    page.locator("#cancel-btn").click()
    page.locator("#live-status").get_by_text("paused").wait_for(timeout=30_000)
    assert {r["status"] for r in db.list_runs(exp["id"])} == {"cancelled"}
    final = _main_lines(_chart(page, 0))
    steps_logged = db.max_steps([mini["id"]])[mini["id"]]
    assert final["minillm (seed 0)"] >= steps_logged - 1  # every logged step drawn (below the 1000-point cap)
    page.locator("#live-chart-1 .js-plotly-plot").wait_for()
    close_toasts(page)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_export_experiment_csv_matches_database(page, dashboard):
    url, db, _ = dashboard
    exp = next(e for e in reversed(db.list_experiments()) if e["name"] == "ui-test")
    run_ids = [r["id"] for r in db.list_runs(exp["id"])]
    page.goto(url)
    open_tab(page, "History and export")
    page.locator("#history-experiment input").first.click()
    page.get_by_role("option", name=f"#{exp['id']} ui-test", exact=False).first.click()
    page.locator("#export-experiment").click()
    link = page.locator("#export-file a").first
    link.wait_for()
    with page.expect_download() as info:
        link.click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == db.count_metrics(run_ids)
    stored = {(r, s, n): v for r, s, n, v, _ in db.metric_rows(run_ids)}
    for row in rows[:: max(1, len(rows) // 50)]:
        key = (int(row["run_id"]), int(row["step"]), row["name"])
        value = stored[key]
        assert (row["value"] in ("", "nan") and value != value) or float(row["value"]) == pytest.approx(value)


def test_launch_form_helpers_and_config_diff(page, dashboard):
    url, db, _ = dashboard
    page.goto(url)
    open_tab(page, "Launch")
    # the w_t question button fills the one-switch comparison
    page.locator("#wt-question").click()
    page.locator("#launch-seeds input, #launch-seeds textarea").first.wait_for()
    page.wait_for_function("() => { const e = document.querySelector('#launch-seeds textarea, #launch-seeds input');"
                           " return e && e.value === '0, 1, 2'; }")
    checked = page.locator("#preset-variants input[type=checkbox]:checked")
    names = sorted(checked.nth(i).evaluate("e => e.closest('label').innerText") for i in range(checked.count()))
    assert len(names) == 2 and names[0].startswith("minillm:") and names[1].startswith("minillm_wsingle:")
    # the vocabulary check before launch
    _choose(page, "launch-teacher", "tiny")
    _choose(page, "launch-student", "pruned:2")
    page.get_by_role("button", name="Check models (vocabulary)").click()
    page.wait_for_function("() => { const e = document.querySelector('#model-check textarea');"
                           " return e && e.value.startsWith('compatible'); }")
    # custom builder: a valid variant joins the list, an invalid one is refused with the switch named
    page.get_by_text("Custom variant builder").click()
    page.locator("#add-custom").wait_for(state="visible")
    page.wait_for_timeout(300)  # the accordion mounts its children on first open
    _type(page, "custom-name", "minillm_a03")
    _set_number(page, "custom-mix_alpha", 0.3)
    page.locator("#add-custom").click()
    wait_text(page, "#custom-table", "minillm_a03")
    close_toasts(page)
    _type(page, "custom-name", "too_much_mixing")
    _set_number(page, "custom-mix_alpha", 1.5)
    page.locator("#add-custom").click()
    expect_error_toast(page, "mix_alpha: mixing α must lie in [0, 1), got 1.5")
    close_toasts(page)
    # a refused launch: toast, no experiment, still on the Launch tab
    n_experiments = len(db.list_experiments())
    page.locator("#launch-seeds input, #launch-seeds textarea").first.fill("zero")
    page.locator("#launch-btn").click()
    expect_error_toast(page, "seeds: 'zero' is not a whole number")
    close_toasts(page)
    assert len(db.list_experiments()) == n_experiments
    assert page.get_by_role("tab", name="Launch").get_attribute("aria-selected") == "true"
    # config diff of the two runs of the earlier experiment shows what differs, and only that
    exp = next(e for e in reversed(db.list_experiments()) if e["name"] == "ui-test")
    open_tab(page, "History and export")
    page.locator("#history-experiment input").first.click()
    page.get_by_role("option", name=f"#{exp['id']} ui-test", exact=False).first.click()
    page.get_by_role("button", name="Show config diff").click()
    wait_text(page, "#config-diff", "variant.name")
    diff_text = page.locator("#config-diff").inner_text()
    assert "variant.divergence" in diff_text and "train.steps" not in diff_text


def test_preview_uses_the_loaded_teachers_chat_template_and_delete(page, dashboard, tmp_path):
    url, db, _ = dashboard  # the vocabulary check of the previous test loaded the tiny teacher
    page.goto(url)
    open_tab(page, "Data")
    upload(page, tmp_path, "chat.csv", b"prompt\nName a colour.\nName a fruit.\n")
    page.locator("#dataset-summary").get_by_text("chat template of the loaded teacher").wait_for()
    page.locator("#dataset-preview >> visible=true", has_text="<|im_start|>user").first.wait_for()
    stored = next(d for d in db.list_datasets() if d["name"] == "chat.csv")
    assert stored["n_rows"] == 2 and not stored["has_references"]
    close_toasts(page)
    page.get_by_role("button", name="Delete dataset").click()  # the upload selected it in the dropdown
    page.wait_for_function("() => !document.querySelector('#dataset-table').innerText.includes('chat.csv')")
    assert all(d["name"] != "chat.csv" for d in db.list_datasets())


def test_delete_a_run_from_history(page, dashboard):
    url, db, _ = dashboard
    exp = next(e for e in reversed(db.list_experiments()) if e["name"] == "ui-test")
    rkl = _runs_by_variant(db, exp["id"])["rkl"]
    page.goto(url)
    open_tab(page, "History and export")
    page.locator("#history-runs-choice input").first.click()
    page.get_by_role("option", name=f"#{rkl['id']} rkl seed 0", exact=False).first.click()
    page.keyboard.press("Escape")
    page.locator("#delete-runs").click()
    page.wait_for_function(f"() => !document.querySelector('#history-runs').innerText.includes('rkl')")
    assert db.get_run(rkl["id"]) is None and db.count_metrics([rkl["id"]]) == 0
    assert len(db.list_runs(exp["id"])) == 1
