"""What every dashboard tab shares: the engine handles, error reporting, small table helpers.

Why: each tab module only wires widgets to engine calls; the rule "a user-fixable problem becomes
a toast with the engine's own message, anything else is logged with its traceback and shown as a
toast too" lives here once, so no handler swallows an exception.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import gradio as gr
import pandas as pd

from minillm_dash.db import Database
from minillm_dash.errors import UserInputError

log = logging.getLogger("minillm_dash.ui")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class UIContext:
    """The engine objects the Blocks talk to (one per process, shared by every browser session)."""

    db: Database
    runner: Any  # minillm_dash.runner.Runner (duck-typed so tests can pass a stand-in)
    max_upload_bytes: int


def user_errors(fn: F) -> F:
    """Turn engine errors into gr.Error toasts carrying the engine's message (never swallowed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserInputError as exc:
            raise gr.Error(str(exc)) from exc
        except Exception as exc:  # unexpected: keep the traceback in the log, tell the user what broke
            log.exception("dashboard action %s failed", fn.__name__)
            raise gr.Error(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def frame(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """A DataFrame with fixed columns (an empty table still shows its headers)."""
    return pd.DataFrame([list(r) for r in rows], columns=list(headers))


def fmt_time(epoch: float | None) -> str:
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch)))


def run_label(run: dict) -> str:
    return f"#{run['id']} {run.get('variant', '?')} seed {run.get('seed', '?')}"


def experiment_choices(db: Database) -> list[tuple[str, int]]:
    """Newest first: the experiment a researcher just launched is the one they want to watch."""
    return [(f"#{e['id']} {e['name']} ({e.get('n_runs', 0)} runs, {fmt_time(e.get('created_at'))})", int(e["id"]))
            for e in reversed(db.list_experiments())]


def progress_callback(progress: gr.Progress | None, status: list[str]) -> Callable[[str], None]:
    """Engine progress messages -> the Gradio progress bar, and kept for the status textbox."""

    def report(message: str) -> None:
        status.append(message)
        log.info("%s", message)
        if progress is not None:
            progress(None, desc=message)

    return report
