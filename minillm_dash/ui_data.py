"""Data tab: upload a prompt dataset, preview it as the model will see it, store it, list, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from minillm_dash import data
from minillm_dash.ui_common import UIContext, fmt_time, frame, user_errors

PREVIEW_ROWS = 5
DATASET_HEADERS = ["id", "name", "format", "rows", "references", "fields", "sha256", "added"]
PREVIEW_HEADERS = ["line", "prompt as the model sees it", "reference"]


def loaded_teacher_tokenizer(ctx: UIContext) -> tuple[str, Any] | None:
    """A teacher tokenizer already in memory (after 'check models' or a launch), to show the chat
    template in the preview; None before any model was loaded (loading one just for a preview would
    take tens of seconds)."""
    loaded = ctx.runner.teachers.loaded()
    return loaded[0] if loaded else None


def preview_frame(ds: data.PromptDataset, tokenizer: Any | None) -> pd.DataFrame:
    rows = []
    for r in ds.records[:PREVIEW_ROWS]:
        if tokenizer is not None:
            shown = data.format_prompt(tokenizer, r)
        elif r.messages is not None:
            shown = "\n".join(f"{m['role']}: {m['content']}" for m in r.messages)
        else:
            shown = r.prompt or ""
        rows.append([r.source_line, shown, r.reference if r.reference is not None else ""])
    return frame(PREVIEW_HEADERS, rows)


def datasets_frame(ctx: UIContext) -> pd.DataFrame:
    rows = [[d["id"], d["name"], d["detected_format"], d["n_rows"], "yes" if d["has_references"] else "no",
             ", ".join(d.get("fields") or []), d["content_hash"][:12], fmt_time(d.get("created_at"))]
            for d in ctx.db.list_datasets()]
    return frame(DATASET_HEADERS, rows)


def dataset_choices(ctx: UIContext) -> list[tuple[str, int]]:
    return [(f"#{d['id']} {d['name']} ({d['n_rows']} rows{', refs' if d['has_references'] else ''})", int(d["id"]))
            for d in ctx.db.list_datasets()]


def summary_markdown(ds: data.PromptDataset, dataset_id: int, existed: bool, template_from: str | None) -> str:
    lines = [
        f"**{ds.name}**: {len(ds)} rows, format `{ds.detected_format}`, fields: "
        f"{', '.join(f'`{f}`' for f in ds.fields) or '—'}; references: "
        f"{'yes (every row)' if ds.has_references else 'no'}.",
        f"{'Already stored' if existed else 'Stored'} as dataset **#{dataset_id}** (sha256 `{ds.content_hash[:12]}`).",
        "Preview: " + (f"chat template of the loaded teacher `{template_from}`." if template_from else
                       "raw prompts (load a teacher with *check models* on the Launch tab to see its chat template)."),
    ]
    lines += [f"⚠ {w}" for w in ds.warnings]
    return "\n\n".join(lines)


def build_data_tab(ctx: UIContext) -> dict[str, Any]:
    """Widgets and events of the Data tab; returns the components other tabs refresh."""
    max_mb = ctx.max_upload_bytes / (1024 * 1024)
    gr.Markdown(
        "Upload prompts as **JSONL, JSON, CSV/TSV, Parquet or plain text** (one prompt per line). "
        "Recognised fields: `prompt`/`instruction`(+`input`), chat `messages`, and an optional reference "
        f"`response`/`output`/`completion`. Up to {max_mb:g} MB. A rejected file names the line and field."
    )
    with gr.Row():
        # No file_types filter: the engine's reader names what is accepted, with a clearer message.
        upload = gr.File(label="Prompt dataset", file_count="single", type="filepath",
                         elem_id="dataset-upload", scale=1)
        summary = gr.Markdown(elem_id="dataset-summary")
    preview = gr.Dataframe(value=frame(PREVIEW_HEADERS, []), label="Preview (first rows)", interactive=False,
                           wrap=True, elem_id="dataset-preview")
    gr.Markdown("### Stored datasets")
    table = gr.Dataframe(value=lambda: datasets_frame(ctx), label="Datasets", interactive=False,
                         elem_id="dataset-table")
    with gr.Row():
        to_delete = gr.Dropdown(choices=dataset_choices(ctx), label="Dataset", scale=3)
        delete_btn = gr.Button("Delete dataset", variant="stop", scale=1)
        refresh_btn = gr.Button("Refresh list", scale=1)

    # Handlers that can fail write into a State; a .success() step renders. A failure then shows
    # only its toast, instead of Gradio stamping "Error" over the preview and the datasets list.
    result = gr.State(None)

    @user_errors
    def on_upload(path: str | None) -> dict | None:
        if not path:
            return None
        name = Path(path).name
        ds = data.load_dataset_file(path, name=name, max_bytes=ctx.max_upload_bytes)
        existed = ctx.db.find_dataset(ds.content_hash) is not None
        dataset_id = ctx.db.add_dataset(ds)
        teacher = loaded_teacher_tokenizer(ctx)
        template_from, tokenizer = teacher if teacher else (None, None)
        gr.Info(f"{name}: {len(ds)} rows {'already stored' if existed else 'stored'} as dataset #{dataset_id}")
        return {"summary": summary_markdown(ds, dataset_id, existed, template_from),
                "preview": preview_frame(ds, tokenizer), "id": dataset_id}

    def show_upload(res: dict | None):
        if res is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return (res["summary"], res["preview"], datasets_frame(ctx),
                gr.update(choices=dataset_choices(ctx), value=res["id"]))

    @user_errors
    def on_delete(dataset_id: int | None) -> None:
        if dataset_id is None:
            raise gr.Error("choose a dataset to delete")
        if not ctx.db.delete_dataset(int(dataset_id)):
            raise gr.Error(f"dataset #{dataset_id} no longer exists")
        gr.Info(f"dataset #{dataset_id} deleted")

    def on_refresh():
        return datasets_frame(ctx), gr.update(choices=dataset_choices(ctx), value=None)

    upload.upload(on_upload, inputs=upload, outputs=result).success(
        show_upload, inputs=result, outputs=[summary, preview, table, to_delete])
    delete_btn.click(on_delete, inputs=to_delete, outputs=[]).success(on_refresh, outputs=[table, to_delete])
    refresh_btn.click(on_refresh, outputs=[table, to_delete])
    return {"table": table, "choice": to_delete}
